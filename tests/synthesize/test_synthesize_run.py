"""`synthesize` end to end on the tiny pipeline: the prepared-data format, byte-for-byte reproducibility,
resuming a killed run, and refusing a folder it must not touch."""

import hashlib
import json
import re

import numpy as np
import pandas as pd
import pytest

from dallebrain.synthesize.mix import parse_mix
from dallebrain.synthesize.options import SynthesisOptions
from dallebrain.synthesize.run import synthesize


def options(tiny_pipeline, out, **kw):
    base = {"n": 10, "out": out, "mix": parse_mix(), "seed": 5, "steps": 2, "model": tiny_pipeline,
            "batch_size": 4, "precision": "fp32"}
    return SynthesisOptions(**(base | kw))


def digests(folder):
    """sha256 of every file under folder, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def made(tiny_pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "set"
    result = synthesize(options(tiny_pipeline, out, nifti=True), progress=False)
    return out, result


def test_prepared_format_readable_by_pandas_and_datasets(made, tiny_prepared):
    import datasets

    from dallebrain.data.slicing import load_png

    out, result = made
    assert result.merged and result.generated == 10 and result.kept == 10
    table = pd.read_parquet(out / "metadata.parquet")
    prepared = pd.read_parquet(tiny_prepared / "metadata.parquet")
    # every column `prepare` writes, but a source's own measures (source_*: OASIS eTIV, ...)
    assert {c for c in prepared.columns if not c.startswith("source_")} <= set(table.columns)
    assert {"seed", "prompt", "model_hash", "synthetic"} <= set(table.columns)
    assert table["synthetic"].all() and table["seed"].tolist() == list(range(5, 15))
    assert (table["caption"] == table["prompt"]).all() and table["captions"].map(len).eq(5).all()
    assert set(table["split"]) <= {"train", "val", "test"} and table["subject_id"].is_unique
    loaded = datasets.load_dataset("parquet", data_files=str(out / "metadata.parquet"), split="train")
    assert loaded.num_rows == 10 and loaded[0]["prompt"] == table["prompt"][0]
    from PIL import Image

    with Image.open(out / table["image_path"][0]) as im:
        assert im.mode.startswith("I;16") and im.size == (64, 64)
    assert 0 <= load_png(out / table["image_path"][0]).min() and load_png(out / table["image_path"][0]).max() <= 1
    card = (out / "README.md").read_text()
    assert "not from any person" in card and "data_files: metadata.parquet" in card and "Ages" in card
    assert json.loads((out / "prepare.json").read_text())["grid"]["shape"] == [64, 64, 64]


def test_nifti_placed_where_the_prompt_asked(made):
    import nibabel as nib

    from dallebrain.data.grid import NORMAL_AXIS
    from dallebrain.data.prompts import parse_prompt

    out, _ = made
    table = pd.read_parquet(out / "metadata.parquet")
    for row in table.itertuples():
        img = nib.load(out / row.nifti_path)
        centre = img.affine @ np.array([31.5, 31.5, 0, 1])
        asked = parse_prompt(row.prompt)
        assert asked.orientation == row.orientation and asked.modality == row.modality
        assert centre[NORMAL_AXIS[row.orientation]] == pytest.approx(row.slice_mm)


def test_same_arguments_same_bytes_and_a_killed_run_resumes_to_them(made, tiny_pipeline, tmp_path):
    out, _ = made
    again = tmp_path / "again"
    synthesize(options(tiny_pipeline, again, nifti=True), progress=False)
    assert digests(again) == digests(out)

    # a run killed in its second batch: that batch's part missing, one slice half-written, no merged table
    killed = tmp_path / "killed"
    synthesize(options(tiny_pipeline, killed, nifti=True), progress=False)
    (killed / "parts" / "batch-0000001.parquet").unlink()
    (killed / "metadata.parquet").unlink()
    first = pd.read_parquet(out / "metadata.parquet")["image_path"][4]
    (killed / first).unlink()
    (killed / first).with_name(f".tmp-0123abcd-{(killed / first).name}").write_bytes(b"half")
    result = synthesize(options(tiny_pipeline, killed, nifti=True), progress=False)
    assert result.resumed and result.generated == 4  # only the unfinished batch
    assert digests(killed) == digests(out)


def test_refuses_other_settings_in_the_same_folder_and_foreign_folders(made, tiny_pipeline, tmp_path):
    out, _ = made
    before = digests(out)
    with pytest.raises(ValueError, match="other settings.*steps"):
        synthesize(options(tiny_pipeline, out, nifti=True, steps=3), progress=False)
    assert digests(out) == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="other files"):
        synthesize(options(tiny_pipeline, foreign), progress=False)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_bad_levels_fail_before_anything_is_written(tiny_pipeline, tmp_path):
    with pytest.raises(ValueError, match="no axial slice"):
        synthesize(options(tiny_pipeline, tmp_path / "x", mix=parse_mix(planes="axial", levels="300:400")),
                   progress=False)
    assert not (tmp_path / "x").exists()


def test_judge_verdicts_recorded_and_off_prompt_slices_set_aside_not_lost(tiny_pipeline, tiny_prepared, tmp_path):
    out = tmp_path / "judged"
    result = synthesize(options(tiny_pipeline, out, judge=tiny_prepared, judge_steps=20, reject_off_prompt=True,
                                precision="auto"), progress=False)
    # "auto" is recorded as what it resolved to, so a rerun elsewhere cannot silently switch precision
    assert json.loads((out / "synthesize.json").read_text())["identity"]["precision"] in ("fp32", "bf16")
    kept, rejected = pd.read_parquet(out / "metadata.parquet"), pd.read_parquet(out / "rejected.parquet")
    assert (result.kept, result.rejected) == (len(kept), len(rejected)) and len(kept) + len(rejected) == 10
    assert len(rejected) and kept["on_prompt"].all() and not rejected["on_prompt"].any()
    both = pd.concat([kept, rejected])
    agrees = (both["judged_modality"] == both["modality"]) & (both["judged_orientation"] == both["orientation"])
    assert (agrees == both["on_prompt"]).all()
    assert all((out / p).is_file() for p in rejected["image_path"])  # set aside, not deleted
    heldout = json.loads((out / "judge" / "heldout.json").read_text())
    assert heldout["n"] > 0 and 0 <= heldout["contrast"]["accuracy"] <= 1 and "chance" in heldout["orientation"]
    card = (out / "README.md").read_text()
    assert f"{len(rejected)} more judged off-prompt" in card
    assert re.search(rf"off prompt \| #+ {len(rejected)}\n", card)  # the verdicts count the slices set aside
