"""`evaluate` end to end on the tiny pipeline and data set (both routes side by side), the evaluation encoder
and its cache, the seed policy of the batched generation, and the CLI's refusals."""

import json
import re
import shutil

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from dallebrain.evaluation.features import EncoderConfig

TINY_ENCODER = EncoderConfig(input_size=32, widths=(8, 16), feature_dim=16, steps=12, batch_size=16)


@pytest.fixture(scope="module")
def report(tiny_unclip_pipeline, tiny_prepared, tmp_path_factory):
    from dallebrain.evaluation import evaluate

    out = tmp_path_factory.mktemp("eval") / "report"
    metrics = evaluate(tiny_unclip_pipeline, tiny_prepared, "test", 8, "both", steps=2, seed=3, out=out,
                       progress=False, encoder=TINY_ENCODER, diversity_prompts=2, diversity_samples=2)
    return out, metrics


def test_report_writes_every_output_with_the_metrics_of_both_routes(report):
    out, metrics = report
    for name in ("report.html", "metrics.json", "summary.md", "samples_ldm.npz", "samples_unclip.npz",
                 "encoder/model.safetensors", "figures/latent.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["columns"]) == {"real", "ldm", "unclip"}
    assert saved["settings"]["n"] == 8 and saved["settings"]["routes"] == ["ldm", "unclip"]
    assert saved["settings"]["feature_spaces"] == ["encoder", "brain_clip"]
    for column in saved["columns"].values():
        assert {"realism", "grey_levels", "texture", "adherence", "diversity", "privacy", "age_trend"} <= set(column)
        for space in ("encoder", "brain_clip"):
            assert {"frechet", "kid", "precision", "recall", "density", "coverage", "one_nn_accuracy"} <= \
                set(column["realism"][space])
        assert {"wasserstein1", "jensen_shannon"} <= set(column["grey_levels"]["all"])
        assert len(column["texture"]["ks"]) == 18 and column["texture"]["frechet"] >= 0
        assert {"contrast", "orientation", "level_mm", "age", "sex"} == set(column["adherence"]["attributes"])
        assert -1 <= column["adherence"]["clip_score"] <= 1
        assert {"near_copies", "memorisation_rate", "nearest_similarity"} <= set(column["privacy"]["pixel"])
        assert column["diversity"]["ms_ssim"] is not None
    # untrained generators are far from real, and further than real train is from real test (the floor)
    real, ldm = saved["columns"]["real"], saved["columns"]["ldm"]
    assert ldm["realism"]["encoder"]["frechet"] > real["realism"]["encoder"]["frechet"]
    assert ldm["grey_levels"]["all"]["wasserstein1"] > real["grey_levels"]["all"]["wasserstein1"]
    assert saved["chance"]["contrast"]["accuracy"] is not None
    samples = np.load(out / "samples_ldm.npz")
    assert samples["images"].shape == (8, 64, 64) and list(samples["seeds"]) == list(range(3, 11))


def test_html_is_self_contained_and_summary_has_every_column(report):
    out, _ = report
    page = (out / "report.html").read_text()
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page, flags=re.I)
    assert links and all(link.startswith("data:image/png;base64,") for link in links)
    assert "<link" not in page and "<script" not in page and "@import" not in page and "url(" not in page
    assert page.count("<img") == 7
    summary = (out / "summary.md").read_text()
    assert "| section | metric | better | real (test) | ldm | unclip |" in summary
    assert "Frechet distance" in summary and "near-copies (pixels)" in summary


def test_batched_generation_gives_each_slice_its_own_seed(tiny_unclip_pipeline):
    from dallebrain.api import load_pipeline
    from dallebrain.evaluation.run import generate_slices

    prompts = ["axial T1-weighted slice of a healthy 30-year-old man", "coronal FLAIR slice of an 80-year-old woman"]
    for route in ("ldm", "unclip"):
        pipe = load_pipeline(tiny_unclip_pipeline, route=route, device="cpu")
        batched = generate_slices(pipe, route, prompts, [5, 9], steps=2)
        alone = [pipe(p, n=1, seed=s, steps=2).images[0] for p, s in zip(prompts, [5, 9], strict=True)]
        np.testing.assert_allclose(batched, np.stack(alone), atol=1e-4)


def test_encoder_is_trained_on_real_slices_cached_and_reused(tiny_prepared, tmp_path):
    from dallebrain.data.dataset import SliceDataset
    from dallebrain.evaluation.features import Targets, TrainedEncoder, load_or_train_encoder, load_slices

    table = SliceDataset(tiny_prepared, "train").table.sample(48, random_state=0)
    images, targets = load_slices(tiny_prepared, table["image_path"]), Targets.from_table(table)
    assert set(targets.contrast) <= {0, 1, 2, 3} and np.isfinite(targets.level_mm).all()
    assert (targets.level_mm[table["orientation"].to_numpy() == "sagittal"] >= 0).all()  # |x| for sagittal
    encoder, reused = load_or_train_encoder(tmp_path / "enc", images, targets, TINY_ENCODER, "key-a")
    assert not reused
    features, predictions = encoder.run(images)
    assert features.shape == (48, TINY_ENCODER.feature_dim)
    assert set(predictions) == {"contrast", "orientation", "level_mm", "age", "sex"}
    again, reused = load_or_train_encoder(tmp_path / "enc", images, targets, TINY_ENCODER, "key-a")
    assert reused
    np.testing.assert_allclose(again.run(images)[0], features, atol=1e-5)
    _, reused = load_or_train_encoder(tmp_path / "enc", images, targets, TINY_ENCODER, "key-b")
    assert not reused  # other data or settings: retrained
    assert TrainedEncoder.load(tmp_path / "enc").record["key"] == "key-b"


def test_prompt_targets_come_from_parse_prompt():
    from dallebrain.evaluation.attributes import score_attributes
    from dallebrain.evaluation.features import Targets

    targets = Targets.from_prompts(["Sagittal T2-weighted brain MRI of a healthy 70-year-old woman (x = -30 mm)",
                                    "a brain slice"])
    assert list(targets.contrast) == [1, -1] and list(targets.orientation) == [2, -1]
    assert targets.level_mm[0] == 30.0 and targets.age[0] == 70.0 and np.isnan(targets.age[1])
    predictions = {"contrast": np.array(["T2w", "T1w"]), "orientation": np.array(["axial", "axial"]),
                   "level_mm": np.array([40.0, 0.0]), "age": np.array([60.0, 20.0]), "sex": np.array(["F", "M"])}
    scores = score_attributes(predictions, targets)
    assert scores["contrast"] == {"accuracy": 1.0, "n": 1}  # the silent prompt is left out
    assert scores["orientation"]["accuracy"] == 0.0 and scores["level_mm"]["mae"] == 10.0
    assert scores["age"] == {"mae": 10.0, "n": 1} and scores["sex"]["accuracy"] == 1.0


def _app():
    from dallebrain.evaluation.cli import evaluate_cmd

    app = typer.Typer()
    app.command("evaluate")(evaluate_cmd)
    app.command("noop")(lambda: None)  # two commands, so the app takes the command name as dallebrain's does
    return app


def test_cli_rejects_bad_inputs_with_one_line(tiny_pipeline, tiny_prepared, tmp_path):
    model, data, out = str(tiny_pipeline), str(tiny_prepared), str(tmp_path / "r")
    no_unclip = tmp_path / "ldm-only"
    shutil.copytree(tiny_pipeline, no_unclip, ignore=shutil.ignore_patterns("checkpoints", "cache"))
    cases = [
        (["--model", str(tmp_path / "missing"), "--data", data], "model folder not found"),
        (["--model", model, "--data", str(tmp_path)], "not a prepared data set"),
        (["--model", model, "--data", data, "--n", "1"], "n must be at least 2"),
        (["--model", model, "--data", data, "--route", "gan"], "unknown route 'gan'"),
        (["--model", model, "--data", data, "--split", "holdout"], "unknown split 'holdout'"),
        (["--model", model, "--data", data, "--split", "train"], "unknown split 'train'"),
        (["--model", str(no_unclip), "--data", data, "--route", "unclip"], "route unclip: incomplete model folder"),
        (["--model", str(no_unclip), "--data", data, "--route", "both"], "needs clip/, prior/ and decoder/"),
        (["--model", model, "--data", data, "--steps", "0"], "--steps must be between 1 and 1000"),
    ]
    runner = CliRunner()
    for args, message in cases:
        result = runner.invoke(_app(), ["evaluate", *args, "--out", out])
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, result.output)
    assert not (tmp_path / "r").exists()  # nothing written for a refused request


def test_cli_builds_a_report_for_an_ldm_folder_without_brain_clip(tiny_pipeline, tiny_prepared, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(_app(), ["evaluate", "--model", str(tiny_pipeline), "--data", str(tiny_prepared),
                                         "--n", "4", "--steps", "1", "--encoder-steps", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "report: " in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["feature_spaces"] == ["encoder"] and set(metrics["columns"]) == {"real", "ldm"}
    assert "brain_clip" not in metrics["columns"]["ldm"]["realism"]
    assert "clip_score" not in metrics["columns"]["ldm"]["adherence"]
    assert "Brain-CLIP" not in (out / "summary.md").read_text()
