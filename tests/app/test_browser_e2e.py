"""End to end in headless Chromium: the page on the tiny pipeline, driven as a user would.

Needs Debian's chromium and Playwright's Python package (the system browser, never `playwright install`):
    apt-get install -y chromium && pip install playwright
Run: pytest -m browser tests/app/test_browser_e2e.py  (screenshots of each tab go to $APP_SHOTS or /tmp/app-shots/)
"""

import os
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from dallebrain.app.study import Study

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# As root, on a machine with no outside network: no sandbox, and no background connections Chromium would retry.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROMPT = "axial T2-weighted slice of a healthy 70-year-old woman at the level of the lateral ventricles"
TIMEOUT_MS = 120_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_pipeline, tiny_prepared, tiny_ageing_model, tmp_path_factory):
    pytest.importorskip("gradio")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from dallebrain.app.ui import ServeConfig, launch

    root = tmp_path_factory.mktemp("serve")
    cfg = ServeConfig(model=tiny_pipeline, data=tiny_prepared, study_dir=root / "study", study_items=6,
                      study_steps=2, device="cpu", work_dir=root / "work", ageing_model=tiny_ageing_model)
    demo, url = launch(cfg, "127.0.0.1", _free_port(), block=False)
    yield url, cfg
    demo.close()


@pytest.fixture(scope="module")
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, user_agent=None)
        context.set_default_timeout(TIMEOUT_MS)
        yield context.new_page()
        browser.close()


def _set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.blur()


def _text_input(page, elem_id: str):
    return page.locator(f"#{elem_id}").locator("textarea, input").first


def test_generate_then_answer_three_study_items(server, page):
    from playwright.sync_api import expect

    url, cfg = server
    expect.set_options(timeout=TIMEOUT_MS)
    shots = Path(os.environ.get("APP_SHOTS", "/tmp/app-shots"))
    shots.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    page.goto(url)

    # Generate: a refused request shows its message in the page, then a real one shows images
    prompt = _text_input(page, "prompt")
    prompt.fill("axial T1 " * 40)
    page.locator("#generate-button").click()
    expect(page.locator("#generate-message")).to_contain_text("prompt too long: 359 characters, at most 300")
    assert "Traceback" not in page.content()
    prompt.fill(PROMPT)
    _set_number(page, "generate-steps", 2)
    _set_number(page, "generate-n", 4)
    page.locator("#generate-button").click()
    expect(page.locator("#gallery img")).to_have_count(4)
    expect(page.locator("#downloads a[href$='seed-000003.nii.gz']")).to_have_count(1)
    page.screenshot(path=shots / "1-generate.png", full_page=True)

    # Ageing: one brain from the prompt aged by the network; then the user's own slice, refused without its age
    page.locator("#generate-mode").get_by_label("ageing sequence", exact=True).check()
    page.locator("#generate-button").click()
    expect(page.locator("#ageing-strip img")).to_be_visible()
    expect(page.locator("#gallery")).to_contain_text("age 90")
    expect(page.locator("#generate-message")).to_contain_text("aged by the ageing network")
    expect(page.locator("#downloads a[href$='ageing.gif']")).to_have_count(1)
    page.screenshot(path=shots / "2-ageing.png", full_page=True)
    own_slice = next((cfg.study_dir / "images").glob("*.png"))
    page.locator("#ageing-upload input[type=file]").set_input_files(str(own_slice))
    page.locator("#generate-button").click()
    expect(page.locator("#generate-message")).to_contain_text("is unknown: give the source age")
    assert "Traceback" not in page.content()
    _set_number(page, "ageing-source-age", 45)
    page.locator("#generate-button").click()
    expect(page.locator("#generate-message")).to_contain_text(f"source: {own_slice.name} at 45 years")
    page.screenshot(path=shots / "2b-ageing-own-slice.png", full_page=True)

    # Variations: the tiny LDM folder has no unCLIP stages, which the page says in one line
    page.get_by_role("tab", name="Variations").click()
    slice_png = next((cfg.study_dir / "images").glob("*.png"))
    page.locator("#variation-upload input[type=file]").set_input_files(str(slice_png))
    page.locator("#variations-button").click()
    expect(page.locator("#variations-message")).to_contain_text("unCLIP route needs")
    page.screenshot(path=shots / "3-variations.png", full_page=True)

    # Reader study: a named reader answers three items
    page.get_by_role("tab", name="Reader study").click()
    _text_input(page, "reader-name").fill("Dr Browser")
    page.locator("#study-start").click()
    expect(page.locator("#study-progress")).to_contain_text("item 1 of 6")
    expect(page.locator("#study-image img")).to_be_visible()
    expect(page.locator("#stated-contrast")).to_contain_text("Stated contrast:")
    page.screenshot(path=shots / "4-reader-study.png", full_page=True)
    for number, (answer, plausibility, contrast) in enumerate(
            [("real", "4", "yes"), ("synthetic", "2", "no"), ("real", "5 - fully plausible", "yes")], start=1):
        page.locator("#answer-real").get_by_label(answer, exact=True).check()
        page.locator("#answer-plausibility").get_by_label(plausibility, exact=True).check()
        page.locator("#answer-contrast").get_by_label(contrast, exact=True).check()
        page.locator("#study-submit").click()
        expect(page.locator("#study-progress")).to_contain_text(f"item {number + 1} of 6")
        expect(page.locator("#study-message")).to_contain_text("Answer saved.")
    text = page.content()
    assert "simulated-" not in text and "slices/" not in text  # nothing names a real subject or its file
    page.get_by_text("Study organiser: summary and CSV export").click()
    _text_input(page, "organiser-code").fill(Study(cfg.study_dir).organiser_code)
    page.get_by_role("button", name="Summary", exact=True).click()
    expect(page.locator("#study-summary")).to_contain_text("Dr Browser")
    page.screenshot(path=shots / "5-study-summary.png", full_page=True)
    elapsed = time.perf_counter() - started
    print(f"browser flow: {elapsed:.1f} s")

    with sqlite3.connect(cfg.study_dir / "study.sqlite") as con:
        rows = con.execute("SELECT r.name, a.answer, a.plausibility, a.contrast_ok, a.seconds, a.answered_at "
                           "FROM answers a JOIN readers r ON r.id = a.reader_id ORDER BY a.id").fetchall()
    assert [r[:4] for r in rows] == [("Dr Browser", "real", 4, 1), ("Dr Browser", "synthetic", 2, 0),
                                     ("Dr Browser", "real", 5, 1)]
    assert all(r[4] is not None and r[4] > 0 and r[5] for r in rows)
