"""The web page's handlers, called in-process on the tiny pipeline and the tiny prepared data set (no browser)."""

import json
import sqlite3
import zipfile
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import binomtest

from dallebrain.app import handlers as h
from dallebrain.app.study import CONTRAST_NAMES, EXPORT_COLUMNS, Study
from dallebrain.data.prompts import parse_prompt, with_age

PROMPT = "axial T2-weighted slice of a healthy 70-year-old woman at the level of the lateral ventricles"


@pytest.fixture
def opts(tiny_pipeline, tmp_path):
    return {"model": tiny_pipeline, "work_dir": tmp_path / "work", "device": "cpu"}


def test_generate_returns_n_images_and_their_files(opts):
    result = h.generate(PROMPT, seed=3, steps=2, n=2, **opts)
    assert [caption for _, caption in result.images] == ["seed 3", "seed 4"]
    assert all(Path(png).is_file() for png, _ in result.images)
    names = sorted(f"seed-{s:06d}{ext}" for s in (3, 4) for ext in (".png", ".nii.gz", ".json"))
    assert Path(result.files[0]).name == "slices-seed-000003.zip"
    assert sorted(Path(f).name for f in result.files[1:]) == names
    with zipfile.ZipFile(result.files[0]) as z:
        assert sorted(z.namelist()) == names
    assert result.folder.parent == opts["work_dir"]
    sidecar = json.loads((result.folder / "seed-000004.json").read_text())
    assert sidecar["seed"] == 4 and sidecar["steps"] == 2 and sidecar["synthetic"] is True
    assert "field strength" in result.message  # the prompt is silent on it: the page says so
    # one load per process: the second request re-uses the pipeline, and each request gets its own folder
    assert h.get_pipeline(opts["model"], device="cpu") is h.get_pipeline(opts["model"], device="cpu")
    again = h.generate(PROMPT, seed=3, steps=2, n=1, **opts)
    assert again.folder != result.folder
    np.testing.assert_array_equal(np.asarray(Image.open(again.images[0][0])),
                                  np.asarray(Image.open(result.images[0][0])))


@pytest.mark.parametrize(("change", "message"), [
    ({"n": 17}, "number of images must be between 1 and 16"),
    ({"n": 0}, "number of images must be between 1 and 16"),
    ({"steps": 101}, "steps must be between 1 and 100"),
    ({"prompt": "axial T1 " * 40}, "prompt too long: 359 characters, at most 300"),
    ({"prompt": ""}, "empty prompt"),
    ({"prompt": "   "}, "empty prompt"),
    ({"prompt": None}, "empty prompt"),
    ({"seed": -1}, "seed must be between 0"),
    ({"seed": 1.5}, "seed must be a whole number"),
    ({"guidance": float("nan")}, "guidance must be between 0 and 20"),
    ({"sampler": "plms"}, "unknown sampler 'plms'"),
    ({"route": "gan"}, "unknown route 'gan'"),
    ({"lora": "/no/such/adapter"}, "LoRA adapters are off on this server"),
    ({"lora_scale": 9}, "LoRA scale must be between 0 and 4"),
])
def test_bad_requests_get_one_clear_line(opts, change, message):
    args = {"prompt": PROMPT, "seed": 0, "steps": 2, "guidance": 4.0, "sampler": "dpm", "route": "ldm",
            "lora": None, "lora_scale": 1.0, "n": 1, **change}
    with pytest.raises(h.RequestError, match=message) as caught:
        h.generate(**args, **opts)
    assert "\n" not in str(caught.value)
    assert not opts["work_dir"].exists() or not any(opts["work_dir"].iterdir())  # refused before any work


def test_missing_model_is_a_message(tmp_path):
    with pytest.raises(h.RequestError, match="no model at"):
        h.generate(PROMPT, steps=2, model=tmp_path / "nothing", work_dir=tmp_path)


@pytest.mark.parametrize(("prompt", "age", "expected"), [
    (PROMPT, 80, PROMPT.replace("70-year-old", "80-year-old")),
    ("Brain, axial slice, T1, 3 T, healthy man aged 63", 20, "Brain, axial slice, T1, 3 T, healthy man aged 20"),
    ("Age: 40; coronal T1", 90, "Age: 90; coronal T1"),
    ("A 25 year old man, axial T1", 80, "An 80 year old man, axial T1"),
    ("coronal FLAIR slice of a healthy man.", 30, "coronal FLAIR slice of a healthy man, age 30"),
])
def test_with_age_rewrites_or_appends_the_age(prompt, age, expected):
    assert with_age(prompt, age) == expected
    assert parse_prompt(expected).age == age


def _frames(result) -> np.ndarray:
    return np.stack([np.asarray(nib.load(Path(png).with_name(Path(png).stem + ".nii.gz")).dataobj)[..., 0]
                     for png, _ in result.images])


def test_ageing_sequence_is_one_brain_aged_by_the_network(opts, tiny_ageing_model):
    from dallebrain.ageing.network import load_ageing_net
    from dallebrain.ageing.predict import age_sequence
    from dallebrain.ageing.sequence import GIF, STRIP, SUMMARY
    from dallebrain.data.slicing import load_png

    result = h.ageing_sequence(PROMPT, seed=1, steps=1, ageing_model=tiny_ageing_model, **opts)
    other = h.ageing_sequence(PROMPT, seed=2, steps=1, ageing_model=tiny_ageing_model, **opts)
    assert [caption.split(",")[0] for _, caption in result.images] == [f"age {a}" for a in h.AGES]
    assert all("ventricles" in caption for _, caption in result.images)
    # the source is generated once, at the prompt's own age, and every frame is the network's from it
    source = sorted((result.folder / "source").glob("*.json"))
    assert [p.name for p in source] == ["seed-000001.json"]
    assert json.loads(source[0].read_text())["parsed_prompt"]["age"] == 70
    frames, others = _frames(result), _frames(other)
    expected = age_sequence(load_ageing_net(tiny_ageing_model), load_png(source[0].with_suffix(".png")), 70.0,
                            [float(a) for a in h.AGES])
    np.testing.assert_allclose(frames, expected, atol=1e-4)
    # same identity: consecutive ages far more alike than two seeds' brains at the same age, yet not a copy
    step = np.abs(np.diff(frames, axis=0)).mean()
    between_seeds = np.abs(frames - others).mean()
    assert 0 < step < between_seeds / 5, (step, between_seeds)
    sidecar = json.loads(Path(result.images[-1][0]).with_suffix(".json").read_text())
    assert sidecar["mode"] == "ageing" and sidecar["age"] == 90 and sidecar["source_age"] == 70
    assert result.strip == str(result.folder / STRIP) and Image.open(result.strip).size[0] > 9 * 64
    with Image.open(result.folder / GIF) as gif:
        assert gif.n_frames == len(h.AGES)
    assert [Path(f).name for f in result.files] == ["ageing-sequence.zip", GIF, STRIP, SUMMARY]
    with zipfile.ZipFile(result.files[0]) as z:
        names = z.namelist()
    assert len(names) == 3 * len(h.AGES) + 3 + 3 and "source/seed-000001.nii.gz" in names and GIF in names
    shown = result.message.replace("\\", "")  # the page's markdown escapes punctuation
    assert "one brain (the source) aged by the ageing network trained on simulated longitudinal data" in shown
    assert "source: the prompt, seed 1 at 70 years" in shown


def test_ageing_sequence_of_an_uploaded_slice(tiny_prepared, tiny_ageing_model, tmp_path):
    from dallebrain.ageing.sequence import SUMMARY

    table = pd.read_parquet(tiny_prepared / "metadata.parquet")
    upload = tmp_path / "my-scan.png"  # as gradio stores an upload: the file alone, no sidecar beside it
    upload.write_bytes((tiny_prepared / table["image_path"].iloc[len(table) // 2]).read_bytes())
    work = tmp_path / "work"
    opts = {"ageing_model": tiny_ageing_model, "work_dir": work, "device": "cpu"}
    result = h.ageing_sequence(None, upload=str(upload), source_age=45, model=tmp_path / "no-model", **opts)
    assert len(result.images) == len(h.AGES) and Path(result.strip).is_file()
    summary = json.loads((result.folder / SUMMARY).read_text())
    assert summary["source"]["age"] == 45 and summary["source"]["source_image"] == "my-scan.png"
    assert "source: my-scan.png at 45 years" in result.message.replace("\\", "")
    before = sorted(work.iterdir())
    refusals = [({}, "the age of my-scan.png is unknown: give the source age"),
                ({"source_age": 130}, "source age must be between 0 and 110"),
                ({"source_age": "", "max_upload_mb": 1e-4}, "uploads are limited to"),
                ({"source_age": 45, "ageing_model": tmp_path / "none"}, "no ageing network on this server")]
    for change, says in refusals:
        with pytest.raises(h.RequestError, match=says) as caught:
            h.ageing_sequence(None, upload=str(upload), **{**opts, **change})
        assert "\n" not in str(caught.value) and str(tmp_path) not in str(caught.value)  # no server path
    (tmp_path / "scan.jpg").write_bytes(b"x")
    with pytest.raises(h.RequestError, match="upload a PNG"):
        h.ageing_sequence(None, upload=str(tmp_path / "scan.jpg"), source_age=45, **opts)
    assert sorted(work.iterdir()) == before  # refused before any folder was made


def test_variations_of_an_uploaded_slice(tiny_unclip, tiny_prepared, tiny_pipeline, tmp_path):
    table = pd.read_parquet(tiny_prepared / "metadata.parquet")
    upload = tiny_prepared / table["image_path"].iloc[0]
    result = h.variations(str(upload), n=2, seed=4, steps=2, model=tiny_unclip, work_dir=tmp_path, device="cpu")
    assert len(result.images) == 2 and len(result.files) == 7
    with pytest.raises(h.RequestError, match="upload a slice"):
        h.variations(None, model=tiny_unclip, work_dir=tmp_path)
    (tmp_path / "scan.jpg").write_bytes(b"x")
    with pytest.raises(h.RequestError, match="upload a PNG"):
        h.variations(str(tmp_path / "scan.jpg"), model=tiny_unclip, work_dir=tmp_path)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(h.RequestError, match="cannot read image"):
        h.variations(str(tmp_path / "bad.png"), n=1, steps=1, model=tiny_unclip, work_dir=tmp_path, device="cpu")
    with pytest.raises(h.RequestError, match="unCLIP route needs"):  # an LDM-only folder
        h.variations(str(upload), model=tiny_pipeline, work_dir=tmp_path, device="cpu")


# --- reader study -----------------------------------------------------------------------------------------


def _identifying_strings(prepared: Path) -> list[str]:
    table = pd.read_parquet(prepared / "metadata.parquet")
    return ([str(prepared), "slices/", *table["subject_id"].unique(), *table["image_path"]]
            + [c for cs in table["captions"] for c in cs])


def test_a_reader_answers_three_items_and_they_are_stored(tiny_prepared, tiny_pipeline, tmp_path):
    study = Study.create(tmp_path / "study", tiny_prepared, n_items=6, seed=1)
    assert study.pending_synthetic() == 3
    with pytest.raises(h.RequestError, match="reader name"):
        h.study_start(study, "  ", model=tiny_pipeline, device="cpu", steps=2)
    view = h.study_start(study, " Dr   Ada ", model=tiny_pipeline, device="cpu", steps=2)
    assert study.pending_synthetic() == 0  # generated once, at the first start
    assert view.state["reader"] == "Dr Ada" and view.progress == "**Dr Ada**: item 1 of 6"
    forbidden = _identifying_strings(tiny_prepared)
    shown_items = []
    for answer, plausibility, contrast in [("real", 4, "yes"), ("synthetic", 2, "no"), ("real", 5, "yes")]:
        shown = " | ".join(str(v) for v in (view.image, view.stated_contrast, view.progress, view.message))
        assert not any(s in shown for s in forbidden), shown
        assert Path(view.image).name.startswith("item-") and view.stated_contrast in (
            "T1-weighted", "T2-weighted", "PD-weighted", "FLAIR")
        shown_items.append(view.state["item_id"])
        view = h.study_submit(study, view.state, answer, plausibility, contrast, now=view.state["shown_at"] + 1.5)
        assert view.message == "Answer saved."
    assert view.progress == "**Dr Ada**: item 4 of 6"

    with sqlite3.connect(study.db) as con:
        rows = con.execute("SELECT r.name, a.item_id, a.answer, a.plausibility, a.contrast_ok, a.seconds, "
                           "a.answered_at FROM answers a JOIN readers r ON r.id = a.reader_id ORDER BY a.id").fetchall()
    assert [r[:6] for r in rows] == [("Dr Ada", shown_items[0], "real", 4, 1, 1.5),
                                     ("Dr Ada", shown_items[1], "synthetic", 2, 0, 1.5),
                                     ("Dr Ada", shown_items[2], "real", 5, 1, 1.5)]
    assert all(datetime.fromisoformat(r[6]).tzinfo is not None for r in rows)

    # real and synthetic items look alike as files: 8-bit PNGs of one size, random names
    images = [np.asarray(Image.open(p)) for p in sorted((study.folder / "images").glob("*.png"))]
    assert len(images) == 6 and {(i.dtype, i.shape) for i in images} == {(np.dtype("uint8"), (64, 64))}

    # a second answer to the same item, and incomplete answers, are refused with a message
    old_state = {"reader": "Dr Ada", "item_id": shown_items[0], "shown_at": 0.0}
    with pytest.raises(h.RequestError, match="already answered"):
        h.study_submit(study, old_state, "real", 3, "yes")
    for args, message in [((None, 3, "yes"), "real or synthetic"), (("real", None, "yes"), "plausibility"),
                          (("real", 3, None), "contrast"), (("real", 6, "yes"), "between 1 and 5")]:
        with pytest.raises(h.RequestError, match=message):
            h.study_submit(study, view.state, *args)
    with pytest.raises(h.RequestError, match="press Start"):
        h.study_submit(study, {}, "real", 3, "yes")
    # resuming shows the next unanswered item
    assert h.study_start(study, "Dr Ada", model=tiny_pipeline).progress == "**Dr Ada**: item 4 of 6"


def test_summary_and_csv_on_planted_answers(tiny_prepared, tmp_path):
    study = Study.create(tmp_path / "study", tiny_prepared, n_items=20, seed=2)
    with sqlite3.connect(study.db) as con:
        items = con.execute("SELECT id, truth, contrast, orientation FROM items ORDER BY id").fetchall()
    assert sorted(t for _, t, _, _ in items).count("real") == 10
    for item_id, truth, _, _ in items:
        study.submit("expert", item_id, truth, 5, True, seconds=2.0)  # always right
        study.submit("guesser", item_id, "real", 3, False)  # always says real: right half the time
    summary = study.summary().set_index(["group", "value"])
    assert summary.loc[("reader", "expert"), "accuracy"] == 1.0
    assert summary.loc[("reader", "expert"), "p_value"] == pytest.approx(2 * 0.5**20)
    assert summary.loc[("reader", "guesser"), "accuracy"] == 0.5
    assert summary.loc[("reader", "guesser"), "p_value"] == pytest.approx(1.0)
    assert summary.loc[("all", "all"), ["answers", "correct"]].tolist() == [40, 30]
    assert summary.loc[("all", "all"), "p_value"] == pytest.approx(binomtest(30, 40, 0.5).pvalue)
    assert summary.loc[("all", "all"), "contrast_confirmed"] == 0.5
    assert summary.loc[("all", "all"), "plausibility_real"] == 4.0
    items = [(i, t, CONTRAST_NAMES[c], o) for i, t, c, o in items]
    for group, column in (("contrast", 2), ("orientation", 3)):
        part = summary.loc[group]
        expected = pd.Series([i[column] for i in items]).value_counts() * 2
        assert part["answers"].to_dict() == expected.to_dict()
        for value, row in part.iterrows():  # the expert is right on all, the guesser on the real ones
            real = sum(1 for i in items if i[column] == value and i[1] == "real")
            assert row["correct"] == expected[value] / 2 + real

    with pytest.raises(h.RequestError, match="wrong organiser code"):
        h.study_summary(study, "guess")
    with pytest.raises(h.RequestError, match="wrong organiser code"):
        h.study_export(study, None)
    code = study.organiser_code
    csv_path = Path(h.study_export(study, code, tmp_path / "work"))
    table = pd.read_csv(csv_path)
    assert list(table.columns) == EXPORT_COLUMNS and len(table) == 40
    assert table["correct"].sum() == 30 and set(table["reader"]) == {"expert", "guesser"}
    text = csv_path.read_text()
    assert not any(s in text for s in _identifying_strings(tiny_prepared))
    assert h.study_summary(study, code).loc[0, "accuracy"] == 0.75


def test_no_study_is_a_message():
    for call in (lambda: h.study_start(None, "A"), lambda: h.study_submit(None, {}, "real", 1, "yes"),
                 lambda: h.study_summary(None, "x"), lambda: h.study_export(None, "x")):
        with pytest.raises(h.RequestError, match="--data PREPARED"):
            call()


def test_study_creation_refusals(tiny_prepared, tmp_path):
    Study.create(tmp_path / "s", tiny_prepared, n_items=2)
    with pytest.raises(ValueError, match="already exists"):
        Study.create(tmp_path / "s", tiny_prepared, n_items=2)
    assert Study.open_or_create(tmp_path / "s", None).meta()["split"] == "test"
    with pytest.raises(ValueError, match="--data"):
        Study.open_or_create(tmp_path / "new", None)
    with pytest.raises(ValueError, match="between 2 and 1000"):
        Study.create(tmp_path / "t", tiny_prepared, n_items=1)
