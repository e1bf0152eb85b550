"""`evaluate`'s reconstruction column (real held-out slices through the model's VAE) in every metric it prints,
the sharpness of every column, and issue 12's targets on both with met / missed, on the tiny pipeline."""

import json

import numpy as np
import pytest

from dallebrain.evaluation.features import EncoderConfig

TINY_ENCODER = EncoderConfig(input_size=32, widths=(8, 16), feature_dim=16, steps=6, batch_size=16)


@pytest.fixture(scope="module")
def report(tiny_unclip_pipeline, tiny_prepared, tmp_path_factory):
    """The LDM route of a folder with clip/ (so both feature spaces are measured)."""
    from dallebrain.evaluation import EvaluationOptions, evaluate

    out = tmp_path_factory.mktemp("eval-recon") / "report"
    metrics = evaluate(EvaluationOptions(tiny_unclip_pipeline, tiny_prepared, out, "test", 8, "ldm", steps=1, seed=1,
                                         progress=False, encoder=TINY_ENCODER, diversity_prompts=2,
                                         diversity_samples=2))
    return out, metrics


def _paths(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out |= _paths(value, path + ".") if isinstance(value, dict) else {path}
    return out


def test_reconstruction_is_a_column_with_every_metric_of_the_real_one(report):
    out, metrics = report
    saved = json.loads((out / "metrics.json").read_text())
    columns = saved["columns"]
    assert list(columns) == ["real", "ldm", "reconstruction"]
    assert "VAE" in saved["columns_meaning"]["reconstruction"]
    recon_paths = _paths(columns["reconstruction"])
    for section in ("realism", "grey_levels", "texture", "sharpness", "adherence", "diversity", "privacy"):
        assert _paths(columns["ldm"][section], section + ".") <= recon_paths, section
    for space in ("encoder", "brain_clip"):
        assert columns["reconstruction"]["realism"][space]["frechet"] >= 0, space
    assert set(columns["reconstruction"]["grey_levels"]) == set(columns["real"]["grey_levels"])  # each contrast
    assert columns["reconstruction"]["diversity"]["ms_ssim"] is not None  # the real diversity slices, reconstructed
    summary = (out / "summary.md").read_text()
    assert "| section | metric | better | real (test) | ldm | reconstruction |" in summary
    for line in summary.splitlines():  # each summary row with a route's value has a reconstruction value too
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0] not in ("section", "---") and cells[4] != "n/a":
            assert cells[5] != "n/a", line
    page = (out / "report.html").read_text()
    assert page.count("<th>reconstruction</th>") >= 3  # summary, grey levels per contrast, GLCM KS tables


def test_reconstruction_is_the_models_vae_on_the_heldout_slices(report, tiny_unclip_pipeline, tiny_prepared):
    """Checked against diffusers' AutoencoderKL called directly: posterior mean, decoded, in [0, 1]."""
    import pandas as pd
    import torch
    from diffusers import AutoencoderKL

    from dallebrain.evaluation.features import load_slices
    from dallebrain.evaluation.reference import sample_heldout

    out, _ = report
    heldout = sample_heldout(pd.read_parquet(tiny_prepared / "metadata.parquet"), "test", 8, 1, [])
    real = load_slices(tiny_prepared, heldout["image_path"])
    vae = AutoencoderKL.from_pretrained(tiny_unclip_pipeline / "vae").eval()
    with torch.no_grad():
        x = torch.from_numpy(real)[:, None] * 2 - 1
        expected = ((vae.decode(vae.encode(x).latent_dist.mode()).sample + 1) / 2).clamp(0, 1)[:, 0].numpy()
    saved = np.load(out / "samples_reconstruction.npz")
    assert saved["images"].shape == real.shape
    np.testing.assert_allclose(saved["images"].astype(np.float32), expected, atol=2e-3)  # float16 storage
    assert list(saved["prompts"]) == heldout["caption"].tolist()
    assert np.abs(expected - real).mean() > 1e-3  # a 3-step VAE changes the slices: not the real ones again


def test_sharpness_and_the_issue_12_targets_are_reported_with_met_or_missed(report):
    out, metrics = report
    for name, column in metrics["columns"].items():
        block = column["sharpness"]
        assert set(block["by_contrast"]) == set(column["grey_levels"]) - {"all"}, name
        assert block["all"]["ratio"] > 0 and block["all"]["n"] > 0, name
    real = metrics["columns"]["real"]["sharpness"]["all"]
    assert np.isclose(real["ratio"], real["value"] / real["real"])
    targets = {t["target"]: t for t in metrics["targets"]}
    assert set(targets) == {"sharpness ldm / real >= 0.8 at every contrast",
                            "reconstruction Frechet distance (evaluation encoder) <= 3x the floor",
                            "reconstruction Frechet distance (Brain-CLIP) <= 3x the floor",
                            "sharpness reconstruction / real >= 0.9 at every contrast"}
    columns = metrics["columns"]
    frechet = targets["reconstruction Frechet distance (evaluation encoder) <= 3x the floor"]
    assert np.isclose(frechet["value"], columns["reconstruction"]["realism"]["encoder"]["frechet"]
                      / columns["real"]["realism"]["encoder"]["frechet"])
    worst = min(b["ratio"] for b in columns["ldm"]["sharpness"]["by_contrast"].values())
    assert np.isclose(targets["sharpness ldm / real >= 0.8 at every contrast"]["value"], worst)
    summary = (out / "summary.md").read_text()
    for t in metrics["targets"]:
        assert t["met"] == (t["value"] >= t["threshold"] if "sharpness" in t["target"] else
                            t["value"] <= t["threshold"])
        verdict = "met" if t["met"] else "missed"
        assert any(line.startswith(f"| {t['target']} |") and f"| {verdict} |" in line
                   for line in summary.splitlines()), t["target"]
    assert "| slices | real sharpness | real train / real | ldm / real | reconstruction / real |" in summary
