import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dallebrain.data.landmarks import landmark
from dallebrain.data.prepare import PrepareOptions, prepare
from dallebrain.data.prompts import parse_prompt
from dallebrain.data.slicing import load_png

REQUIRED = ["image_path", "subject_id", "split", "source", "modality", "field_strength", "orientation",
            "slice_mm", "age", "sex", "caption", "captions", "icv_ml", "gm_ml", "wm_ml", "csf_ml",
            "lateral_ventricles_ml", "nwbv"]


def test_metadata_columns_and_files(tiny_prepared):
    table = pd.read_parquet(tiny_prepared / "metadata.parquet")
    assert set(REQUIRED) <= set(table.columns)
    assert table["subject_id"].nunique() == 4
    assert set(table["modality"]) == {"T1w", "T2w", "PDw", "FLAIR"}
    assert set(table["orientation"]) == {"axial", "coronal", "sagittal"}
    for path in table["image_path"].sample(20, random_state=0):
        with Image.open(tiny_prepared / path) as im:
            assert im.size == (64, 64) and im.mode.startswith("I")  # 16-bit grey
    assert (tiny_prepared / "README.md").read_text().count("subjects: 4") == 1
    assert pd.read_csv(tiny_prepared / "failures.csv").empty


def test_subject_level_split_is_disjoint(tiny_prepared):
    table = pd.read_parquet(tiny_prepared / "metadata.parquet")
    per_subject = table.groupby("subject_id")["split"].nunique()
    assert (per_subject == 1).all()
    assert set(table["split"]) == {"train", "val", "test"}


def test_captions_describe_their_slice(tiny_prepared):
    table = pd.read_parquet(tiny_prepared / "metadata.parquet")
    for row in table.sample(40, random_state=1).itertuples():
        assert row.caption == row.captions[0] and len(set(row.captions)) == 5
        assert row.landmark == landmark(row.orientation, row.slice_mm)
        fields = parse_prompt(row.caption)
        assert (fields.orientation, fields.modality, fields.sex) == (row.orientation, row.modality, row.sex)
        assert fields.age == round(row.age)


def test_slices_are_normalised_with_zero_background(tiny_prepared):
    table = pd.read_parquet(tiny_prepared / "metadata.parquet")
    row = table[(table.orientation == "axial") & (table.slice_mm == 18.0)].iloc[0]
    image = load_png(tiny_prepared / row.image_path)
    assert image.max() <= 1.0 and image[0, 0] == 0.0 and image[32, 32] > 0.05
    assert row.brain_fraction > 0.3


def test_readable_by_datasets(tiny_prepared):
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("parquet", data_files=str(tiny_prepared / "metadata.parquet"),
                               cache_dir=str(tiny_prepared / ".hf_cache"))["train"]
    assert ds.num_rows == len(pd.read_parquet(tiny_prepared / "metadata.parquet"))
    assert isinstance(ds[0]["captions"], list)


def test_rerun_skips_finished_subjects(tiny_cohort, tiny_prepared, tmp_path):
    out = tmp_path / "copy"
    opts = PrepareOptions("simulated", tiny_cohort, out, size=64, slice_step_mm=6.0)
    prepare(opts, progress=False)
    done = sorted((out / "subjects").glob("*.parquet"))
    stamps = [p.stat().st_mtime_ns for p in done]
    done[0].unlink()
    result = prepare(opts, progress=False)
    assert result.n_subjects == 4
    assert [p.stat().st_mtime_ns for p in done[1:]] == stamps[1:]  # untouched
    a = pd.read_parquet(out / "metadata.parquet")
    b = pd.read_parquet(tiny_prepared / "metadata.parquet")
    pd.testing.assert_frame_equal(a.drop(columns="image_path"), b.drop(columns="image_path"))


def test_kill_9_leaves_no_half_written_file(tiny_cohort, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "dallebrain.cli", "data", "prepare", "--source", "simulated", "--input",
           str(tiny_cohort), "--out", str(out), "--size", "64", "--slice-step-mm", "6", "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "slices").rglob("*.png"))) < 30:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "metadata.parquet").exists()
    for png in (out / "slices").rglob("*.png"):  # every visible file is whole
        if not png.name.startswith(".tmp-"):
            load_png(png)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    table = pd.read_parquet(out / "metadata.parquet")
    assert table["subject_id"].nunique() == 4
    assert all((out / p).exists() for p in table["image_path"])


def test_bad_subject_goes_to_failures_table(tiny_cohort, tmp_path):
    import shutil

    cohort = tmp_path / "cohort"
    shutil.copytree(tiny_cohort, cohort)
    t1 = cohort / "sub-0003" / "anat" / "sub-0003_T1w.nii.gz"
    t1.write_bytes(t1.read_bytes()[:2000])  # truncated download
    result = prepare(PrepareOptions("simulated", cohort, tmp_path / "out", size=64, slice_step_mm=6.0),
                     progress=False)
    assert result.n_subjects == 3
    failures = pd.read_csv(tmp_path / "out" / "failures.csv")
    assert list(failures["subject_id"].astype(str).str.zfill(4)) == ["0003"]
    assert failures["reason"].iloc[0]
    assert "0003" not in "".join(pd.read_parquet(tmp_path / "out" / "metadata.parquet")["subject_id"])


def test_prepared_volume_sits_in_mni_space(tiny_prepared):
    """The known native<-MNI transform puts each subject's ventricles where the atlas has them."""
    table = pd.read_parquet(tiny_prepared / "metadata.parquet")
    rows = table[(table.modality == "T2w") & (table.orientation == "coronal") & (table.slice_mm == 12.0)]
    for row in rows.itertuples():
        image = load_png(tiny_prepared / row.image_path)
        # frontal horns: bright CSF just either side of the midline, above the centre of the image
        centre = image[20:32, 26:38]
        assert centre.max() > 0.6, row.subject_id
    assert np.isfinite(table["nwbv"]).all()
