"""`dallebrain evaluate-anomaly` and `dallebrain anomaly` end to end on the tiny cohort (pasted lesions) and the
tiny pipeline: the report, the normal model, the per-slice files, and one-line refusals."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from dallebrain.anomaly.normal_model import NormalModel
from dallebrain.cli import app
from dallebrain.data.grid import prepared_grid, slice_affine

METHODS = "intensity_z,vae_error,latent_z,diffusion"


@pytest.fixture(scope="module")
def report(tiny_pipeline, tiny_prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("anomaly") / "report"
    result = CliRunner().invoke(app, ["evaluate-anomaly", "--data", str(tiny_prepared), "--out", str(out), "--model",
                                      str(tiny_pipeline), "--methods", METHODS, "--n-per-type", "3", "--n-healthy",
                                      "6", "--n-val", "6", "--max-fit", "200", "--steps", "2",
                                      "--modalities", "T2w,FLAIR"])
    assert result.exit_code == 0, result.output
    return out


def test_the_benchmark_scores_every_method_per_type_size_and_contrast(report):
    metrics = json.loads((report / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert metrics["settings"]["lesion_source_used"] == "pasted"
    assert set(metrics["methods"]) == set(METHODS.split(","))
    for m in metrics["methods"].values():
        assert set(m["by_type"]) == {"wmh", "ms", "infarct", "tumour"}
        assert set(m["by_contrast"]) <= {"T2w", "FLAIR"} and m["by_size"]
        for key in ("dice", "dice_best", "auprc", "auroc", "slice_auroc"):
            assert 0.0 <= m["overall"][key] <= 1.0
        assert m["healthy"]["n_slices"] == 6
    # no model at all: pasted tumours are far brighter than healthy tissue at their position on T2 and FLAIR
    assert metrics["methods"]["intensity_z"]["by_type"]["tumour"]["auroc"] > 0.8
    summary = (report / "summary.md").read_text()
    assert "## Targets" in summary and all(m in summary for m in METHODS.split(","))
    html = (report / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4  # one overlay figure per lesion type
    assert sorted(p.name for p in (report / "figures").iterdir()) == ["infarct.png", "ms.png", "tumour.png", "wmh.png"]


def test_the_normal_model_keeps_each_methods_thresholds_at_the_stated_rate(report):
    normal = NormalModel.load(report / "normal")
    assert set(normal.thresholds) == set(METHODS.split(","))
    for per_contrast in normal.thresholds.values():
        assert {"all"} <= set(per_contrast) <= {"all", "T2w", "FLAIR"}
        assert all(t["pixel"] >= 0 and t["n_slices"] >= 1 for t in per_contrast.values())
    assert normal.settings["diffusion"]["diffusion"]["steps"] == 2


def _a_prepared_slice(tiny_prepared, normal: NormalModel | None = None) -> tuple:
    """A T2w axial slice of the tiny cohort (at a position the normal model covers, when one is given)."""
    table = pd.read_parquet(tiny_prepared / "metadata.parquet")
    rows = table[(table["modality"] == "T2w") & (table["orientation"] == "axial")]
    if normal is not None:
        covered = {float(k.split("/")[2]) for k in normal.counts if k.startswith("T2w/axial/")}
        rows = rows[rows["slice_mm"].round(1).isin(covered)]
    row = rows.iloc[len(rows) // 2]
    return tiny_prepared / row["image_path"], row


def test_anomaly_writes_maps_on_the_inputs_grid_with_its_affine(report, tiny_pipeline, tiny_prepared, tmp_path):
    path, row = _a_prepared_slice(tiny_prepared, NormalModel.load(report / "normal"))
    out = tmp_path / "found"
    result = CliRunner().invoke(app, ["anomaly", str(path), "--out", str(out), "--normal", str(report / "normal"),
                                      "--model", str(tiny_pipeline), "--method", "diffusion"])
    assert result.exit_code == 0, result.output
    stem = path.name[:-4]
    record = json.loads((out / f"{stem}_anomaly.json").read_text())
    assert record["attributes"]["modality"] == "T2w" and record["method"] == "diffusion"
    assert record["setting"]["steps"] == 2  # the setting the thresholds were chosen with
    assert record["anomalous"] == (record["slice_score"] > record["threshold"]["slice"])
    mask = nib.load(out / f"{stem}_anomaly_mask.nii.gz")
    heat = nib.load(out / f"{stem}_anomaly_map.nii.gz")
    grid = prepared_grid(64)
    expected = slice_affine(grid, "axial", grid.index_of("axial", float(row["slice_mm"])))
    assert np.allclose(heat.affine, expected) and heat.shape == (64, 64, 1)
    values = np.asarray(heat.dataobj)[..., 0]
    assert np.array_equal(np.asarray(mask.dataobj)[..., 0] > 0, values > record["threshold"]["pixel"])
    assert record["anomalous_pixels"] == int((values > record["threshold"]["pixel"]).sum())
    with Image.open(out / f"{stem}_anomaly_overlay.png") as im:
        assert im.mode == "RGB" and im.size == (64, 64)
    assert (out / f"{stem}_pseudo_healthy.nii.gz").is_file()
    again = CliRunner().invoke(app, ["anomaly", str(path), "--out", str(out), "--normal", str(report / "normal"),
                                     "--model", str(tiny_pipeline), "--method", "diffusion"])
    assert again.exit_code == 2 and "exists" in again.output and "--overwrite" in again.output


def test_anomaly_fits_a_normal_model_from_a_prepared_data_set(tiny_pipeline, tiny_prepared, tmp_path):
    path, _ = _a_prepared_slice(tiny_prepared)
    result = CliRunner().invoke(app, ["anomaly", str(path), "--out", str(tmp_path / "o"), "--data",
                                      str(tiny_prepared), "--model", str(tiny_pipeline), "--method", "intensity_z"])
    assert result.exit_code == 0, result.output
    normal = NormalModel.load(tmp_path / "o" / "normal")
    assert set(normal.thresholds) == {"intensity_z"}
    assert not (tmp_path / "o" / f"{path.name[:-4]}_pseudo_healthy.png").exists()  # no reconstruction made


def test_bad_requests_get_one_line_and_exit_2(report, tiny_pipeline, tiny_prepared, tmp_path):
    path, _ = _a_prepared_slice(tiny_prepared)
    normal, data = str(report / "normal"), str(tiny_prepared)
    unnamed = tmp_path / "unnamed.png"
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(unnamed)
    earlier = tmp_path / "earlier"  # a folder holding a normal model fitted before: --data would replace it
    (earlier / "normal").mkdir(parents=True)
    cases = [
        (["anomaly", str(path), "--out", str(earlier), "--data", data, "--model", str(tiny_pipeline)],
         "a normal model fitted before"),
        (["anomaly", str(tmp_path / "none.png"), "--out", "o", "--normal", normal], "not found"),
        (["anomaly", str(path), "--out", "o"], "--normal"),
        (["anomaly", str(path), "--out", "o", "--normal", normal, "--data", str(tiny_prepared)], "one of the two"),
        (["anomaly", str(path), "--out", "o", "--normal", normal, "--method", "gan"], "unknown method"),
        (["anomaly", str(path), "--out", "o", "--normal", normal, "--method", "diffusion_patch"], "no thresholds"),
        (["anomaly", str(unnamed), "--out", "o", "--normal", normal, "--model", str(tiny_pipeline)], "--prompt"),
        (["anomaly", str(path), "--out", "o", "--normal", str(tmp_path)], "not a normal model"),
        (["evaluate-anomaly", "--data", str(tmp_path), "--out", "o"], "not a prepared data set"),
        (["evaluate-anomaly", "--data", data, "--out", "o", "--methods", "gan"], "unknown method"),
        (["evaluate-anomaly", "--data", data, "--out", "o", "--lesion-types", "glioma"], "unknown lesion"),
        (["evaluate-anomaly", "--data", data, "--out", "o", "--lesions", "prepared"], "no lesion masks"),
        (["evaluate-anomaly", "--data", data, "--out", "o", "--modalities", "T2"], "unknown ['T2']"),
    ]
    runner = CliRunner()
    for args, message in cases:
        result = runner.invoke(app, [*args[:3], *[str(tmp_path / a) if a == "o" else a for a in args[3:]]])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2, (args, result.output)
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, result.output)
    assert not (tmp_path / "o").exists()
