"""`dallebrain age`: one slice per age from a PNG, a NIfTI or a prompt, with strip, GIF and ageing.json; plane and
level carried from the source; bad input is one line and exit 2, and nothing written before is replaced."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from dallebrain.ageing.sequence import GIF, STRIP, SUMMARY, frame_stem
from dallebrain.cli import app
from testing_constants import make_ageing_model


@pytest.fixture(scope="module")
def ageing_model(tmp_path_factory):
    """A 32-pixel network whose output is not its input (random output convolution)."""
    return make_ageing_model(tmp_path_factory.mktemp("ageing"), 32, 0.02)


@pytest.fixture(scope="module")
def axial_slice(tiny_long_prepared):
    table = pd.read_parquet(tiny_long_prepared / "metadata.parquet")
    row = table[(table["orientation"] == "axial") & (table["session_id"] == "ses-01")].iloc[len(table) // 60]
    return tiny_long_prepared / row["image_path"], row


def _age(*args):
    return CliRunner().invoke(app, ["age", *map(str, args)])


def test_from_a_png_with_its_age(ageing_model, axial_slice, tmp_path):
    path, row = axial_slice
    done = _age(path, "--ages", "30,60,90", "--from-age", 45, "--ageing-model", ageing_model, "--out", tmp_path / "o")
    assert done.exit_code == 0, done.output
    out = tmp_path / "o"
    for age in (30, 60, 90):
        for suffix in (".png", ".nii.gz", ".json"):
            assert (out / f"{frame_stem(age)}{suffix}").is_file()
        sidecar = json.loads((out / f"{frame_stem(age)}.json").read_text())
        assert sidecar["age"] == age and sidecar["source_age"] == 45 and sidecar["synthetic"] is True
        assert set(sidecar["tissue_fractions"]) == {"csf", "ventricles", "gm", "wm"}
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["ages"] == [30, 60, 90] and summary["source"]["source_image"] == path.name
    frames = [np.asarray(nib.load(out / f"{frame_stem(a)}.nii.gz").dataobj)[..., 0] for a in (30, 60, 90)]
    assert not np.allclose(frames[0], frames[2])  # the ages differ
    from PIL import Image

    with Image.open(out / GIF) as gif:
        assert gif.n_frames == 3
    assert (out / STRIP).stat().st_size > 0
    assert "60" in done.output and "ventricles" in done.output


def test_a_nifti_keeps_its_plane_and_level(ageing_model, axial_slice, tmp_path):
    from dallebrain.data.grid import prepared_grid
    from dallebrain.data.slicing import load_png
    from dallebrain.pipelines.output import save_outputs

    path, row = axial_slice
    save_outputs(tmp_path, "src", load_png(path), {"prompt": ""}, prepared_grid(32),
                 f"axial slice at z = {row['slice_mm']:g} mm")
    done = _age(tmp_path / "src.nii.gz", "--ages", "70", "--from-age", 50, "--ageing-model", ageing_model,
                "--out", tmp_path / "o")
    assert done.exit_code == 0, done.output
    img = nib.load(tmp_path / "o" / f"{frame_stem(70)}.nii.gz")
    assert int(img.header["sform_code"]) == 4
    assert (img.affine @ np.array([0, 0, 0, 1]))[2] == pytest.approx(row["slice_mm"])
    assert json.loads((tmp_path / "o" / SUMMARY).read_text())["source"]["level_mm"] == pytest.approx(row["slice_mm"])


def test_from_a_prompt(tiny_pipeline, ageing_model, tmp_path):
    done = _age("axial T1-weighted slice of a healthy woman at the level of the lateral ventricles", "--ages",
                "40,80", "--model", tiny_pipeline, "--ageing-model", ageing_model, "--steps", 2, "--out", tmp_path)
    assert done.exit_code == 0, done.output
    source = json.loads((tmp_path / "source" / "seed-000000.json").read_text())
    assert source["parsed_prompt"]["age"] == 40  # no age in the prompt: generated at the first of --ages
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert summary["source"]["age"] == 40 and summary["source"]["orientation"] == "axial"


@pytest.mark.parametrize("args, message", [
    (["--ages", "30,abc"], "--ages must be comma-separated"),
    (["--ages", "30,200"], "between 0 and 110"),
    (["--ages", "30,30"], "repeats"),
    (["--ages", "30"], "age of"),  # a PNG with no sidecar and no --from-age
    (["--ages", "30", "--from-age", "-4"], "--from-age"),
])
def test_bad_input_is_one_line(ageing_model, axial_slice, tmp_path, args, message):
    done = _age(axial_slice[0], *args, "--ageing-model", ageing_model, "--out", tmp_path / "o")
    assert done.exit_code == 2
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


def test_existing_outputs_are_kept(ageing_model, axial_slice, tmp_path):
    (tmp_path / f"{frame_stem(60)}.png").write_bytes(b"mine")
    done = _age(axial_slice[0], "--ages", "60", "--from-age", 40, "--ageing-model", ageing_model, "--out", tmp_path)
    assert done.exit_code == 2 and "--overwrite" in done.output
    assert (tmp_path / f"{frame_stem(60)}.png").read_bytes() == b"mine"
    assert not (tmp_path / SUMMARY).exists()
