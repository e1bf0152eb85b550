"""`evaluate` end to end on the tiny pipeline and data set (both routes side by side), the evaluation encoder
and its cache, the seed policy of the pipelines' batched `sample`, the CLI's refusals, a failed rerun that
keeps the earlier report, and an evaluate command that does not import torch until it runs."""

import base64
import json
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from dallebrain.evaluation.features import EncoderConfig
from dallebrain.pipelines import defaults as D

TINY_ENCODER = EncoderConfig(input_size=32, widths=(8, 16), feature_dim=16, steps=12, batch_size=16)


@pytest.fixture(scope="module")
def report(tiny_unclip_pipeline, tiny_prepared, tmp_path_factory):
    from dallebrain.evaluation import EvaluationOptions, evaluate

    out = tmp_path_factory.mktemp("eval") / "report"
    metrics = evaluate(EvaluationOptions(tiny_unclip_pipeline, tiny_prepared, out, "test", 8, "both", steps=2, seed=3,
                                         progress=False, encoder=TINY_ENCODER, diversity_prompts=2,
                                         diversity_samples=2, draws=2))
    return out, metrics


def test_report_writes_every_output_with_the_metrics_of_both_routes(report):
    out, metrics = report
    for name in ("report.html", "metrics.json", "summary.md", "samples_ldm.npz", "samples_unclip.npz",
                 "encoder/model.safetensors", "figures/latent.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["columns"]) == {"real", "ldm", "unclip", "reconstruction"}  # the VAE's ceiling beside the routes
    assert saved["settings"]["n"] == 8 and saved["settings"]["routes"] == ["ldm", "unclip"]
    assert saved["settings"]["prior_guidance"] == D.PRIOR_GUIDANCE  # the unCLIP route's prior, recorded
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
    # --draws 2: each route's distances over two draws, draw 0 the column's own; the real and VAE columns have none
    assert "spread" not in saved["columns"]["real"] and "spread" not in saved["columns"]["reconstruction"]
    for route in ("ldm", "unclip"):
        spread = saved["columns"][route]["spread"]
        assert {"encoder_frechet", "brain_clip_frechet", "glcm_frechet"} <= set(spread)
        encoder = spread["encoder_frechet"]
        assert len(encoder["draws"]) == 2 and encoder["draws"][0] == saved["columns"][route]["realism"]["encoder"][
            "frechet"]
        assert encoder["draws"][1] != encoder["draws"][0] and encoder["min"] <= encoder["max"]
        grey = saved["columns"][route]["grey_levels"]["all"]  # the slices' own histograms, draw 0 the column's
        assert spread["grey_wasserstein1"]["draws"][0] == grey["wasserstein1"]
        assert spread["grey_jensen_shannon"]["draws"][0] == grey["jensen_shannon"]
    issue = {t["target"]: t for t in saved["issue_targets"]}  # issues 11 and 12, per route, from these columns
    encoder = issue["ldm: Frechet distance (evaluation encoder) <= 10x the floor"]
    assert encoder["value"] == pytest.approx(saved["columns"]["ldm"]["realism"]["encoder"]["frechet"]
                                             / saved["columns"]["real"]["realism"]["encoder"]["frechet"])
    assert encoder["met"] == (encoder["value"] <= 10) and encoder["detail"].endswith("of 2 draws")
    assert "unclip: Frechet distance (Brain-CLIP) no worse than the ldm route's" in issue
    assert {t["issue"] for t in saved["issue_targets"]} == {11, 12}
    summary = (out / "summary.md").read_text()
    assert "## Targets of issues 11 and 12 (" in summary and "| 12 | ldm: GLCM texture Frechet distance" in summary
    assert saved["settings"]["draws"] == 2 and "draw j > 0 uses seed 3 + j * 1000000 + i" in saved["settings"]["seeds"]
    samples = np.load(out / "samples_ldm.npz")
    assert samples["images"].shape == (8, 64, 64) and list(samples["seeds"]) == list(range(3, 11))
    assert saved == json.loads(json.dumps(metrics))  # the file holds what evaluate returned


def test_every_metric_is_in_its_range_and_untrained_routes_score_below_the_real_reference(report):
    columns = report[1]["columns"]
    for name, column in columns.items():
        for space in ("encoder", "brain_clip"):
            block = column["realism"][space]
            assert block["frechet"] >= 0 and np.isfinite(block["kid"]), (name, space)
            assert all(0 <= block[k] <= 1 for k in ("precision", "recall", "coverage", "one_nn_accuracy")), name
        for group in column["grey_levels"].values():
            assert 0 <= group["wasserstein1"] <= 1 and 0 <= group["jensen_shannon"] <= 1, name
        assert all(0 <= v <= 1 for v in column["texture"]["ks"].values()), name
        attributes = column["adherence"]["attributes"]
        assert attributes["contrast"]["n"] == 8 and 0 <= attributes["contrast"]["accuracy"] <= 1, name
        assert attributes["age"]["mae"] >= 0 and attributes["level_mm"]["mae"] >= 0, name
        assert 0 < column["diversity"]["ms_ssim"] <= 1, name
        assert 0 <= column["privacy"]["pixel"]["memorisation_rate"] <= 1, name
    real = columns["real"]
    assert real["privacy"]["pixel"]["near_copies"] == 0  # held-out subjects were never trained on
    assert real["age_trend"]["n"] > 8 and real["age_trend"]["heldout"]["n"] == 8  # cohort and held-out trends
    for route in ("ldm", "unclip"):  # untrained generators make noise: unlike real slices in every respect
        synthetic = columns[route]
        assert synthetic["texture"]["frechet"] > real["texture"]["frechet"], route
        assert synthetic["texture"]["ks_mean"] > real["texture"]["ks_mean"], route
        assert synthetic["grey_levels"]["all"]["jensen_shannon"] > real["grey_levels"]["all"]["jensen_shannon"]
        assert synthetic["diversity"]["ms_ssim"] < real["diversity"]["ms_ssim"], route  # noise is unalike
        assert synthetic["privacy"]["pixel"]["nearest_similarity"]["median"] < \
            real["privacy"]["pixel"]["nearest_similarity"]["median"], route


def test_html_is_self_contained_and_summary_has_every_column(report):
    out, _ = report
    page = (out / "report.html").read_text()
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page, flags=re.I)
    assert links and all(link.startswith("data:image/png;base64,") for link in links)
    assert "<link" not in page and "<script" not in page and "@import" not in page and "url(" not in page
    assert page.count("<img") == 7
    for figure in ("pairs", "diversity", "histograms", "glcm", "latent", "nearest", "age"):  # each figure is shown
        png = (out / "figures" / f"{figure}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and base64.b64encode(png).decode() in page, figure
    summary = (out / "summary.md").read_text()
    assert "| section | metric | better | real (test) | ldm | unclip |" in summary
    assert "Frechet distance" in summary and "near-copies (pixels)" in summary
    assert "## How much the distances move with the synthetic draw" in summary
    assert "How much the distances move with the synthetic draw</h2>" in page


def test_pipelines_sample_gives_each_slice_its_own_seed(tiny_unclip_pipeline):
    from dallebrain.api import load_pipeline

    prompts = ["axial T1-weighted slice of a healthy 30-year-old man", "coronal FLAIR slice of an 80-year-old woman",
               "sagittal T2-weighted slice of a healthy 50-year-old woman"]
    seeds = [5, 9, 5]
    for route in ("ldm", "unclip"):
        pipe = load_pipeline(tiny_unclip_pipeline, route=route, device="cpu")
        batched = pipe.sample(prompts, seeds, steps=2, batch_size=2)  # two batches, the second a single prompt
        alone = [pipe(p, n=1, seed=s, steps=2).images[0] for p, s in zip(prompts, seeds, strict=True)]
        np.testing.assert_array_equal(batched, np.stack(alone))  # one image per pass: the same bits
        with pytest.raises(ValueError, match="one seed per prompt"):
            pipe.sample(prompts, seeds[:2], steps=2)


def test_unclip_sample_uses_the_prior_guidance_it_is_given(tiny_unclip_pipeline):
    """evaluate --prior-guidance sets the pipeline's: its batched slices are generate's at that prior guidance."""
    from dallebrain.api import load_pipeline

    pipe = load_pipeline(tiny_unclip_pipeline, route="unclip", device="cpu")
    prompt = "axial T1-weighted slice of a healthy 30-year-old man"
    assert pipe.prior_guidance == D.PRIOR_GUIDANCE
    default = pipe.sample([prompt], [4], steps=2)
    pipe.prior_guidance = 1.0
    plain = pipe.sample([prompt], [4], steps=2)
    assert np.abs(plain - default).max() > 1e-4  # the scale reaches the slices
    np.testing.assert_array_equal(plain[0], pipe(prompt, n=1, seed=4, steps=2, prior_guidance=1.0).images[0])


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


def test_train_split_features_are_cached_and_reused_only_for_the_same_data_and_brain_clip(
        tiny_unclip_pipeline, tiny_pipeline, tiny_prepared, tmp_path):
    from dallebrain.evaluation import EvaluationOptions
    from dallebrain.evaluation.reference import load_real_slices

    def load(model):
        warnings = []
        options = EvaluationOptions(model, tiny_prepared, tmp_path / "report", n=4, progress=False,
                                    encoder=TINY_ENCODER, cache=tmp_path / "cache")
        return load_real_slices(options, warnings), warnings

    first, warnings = load(tiny_unclip_pipeline)
    assert warnings == [] and first.train_clip.shape == (len(first.train), 16)
    assert first.train_work.shape == (len(first.train), 32, 32) and first.train_work.dtype == np.float16
    cache = tmp_path / "cache" / "train_split"
    assert sorted(p.name for p in cache.iterdir()) == ["clip.npy", "key.json", "work.npy"]
    assert not (tmp_path / "report").exists()  # the cache folder was named: nothing written beside the report
    again, warnings = load(tiny_unclip_pipeline)
    assert warnings == [f"reused the cached train-split features in {cache}"]
    assert np.array_equal(again.train_work, first.train_work) and np.array_equal(again.train_clip, first.train_clip)
    np.testing.assert_array_equal(again.real, first.real)  # the held-out slices are always read

    without_clip, warnings = load(tiny_pipeline)  # another model's Brain-CLIP (here none): read again
    assert warnings == [] and without_clip.train_clip is None
    assert np.array_equal(without_clip.train_work, first.train_work)
    assert not (cache / "clip.npy").exists()  # the cache now holds what this run computed

    (cache / "work.npy").write_bytes(b"truncated")  # a damaged cache is read again, not trusted
    repaired, warnings = load(tiny_pipeline)
    assert warnings == [] and np.array_equal(repaired.train_work, first.train_work)
    assert np.array_equal(np.load(cache / "work.npy"), first.train_work)

    from dallebrain.evaluation.reference import train_split_key

    key = train_split_key(tiny_prepared, 10, 32, None)
    keys = []
    for size in (32, 64):  # the same table, prepared with other settings: another key
        resliced = tmp_path / f"resliced{size}"
        resliced.mkdir()
        (resliced / "metadata.parquet").write_bytes((tiny_prepared / "metadata.parquet").read_bytes())
        (resliced / "prepare.json").write_text(f'{{"size": {size}}}')
        keys.append(train_split_key(resliced, 10, 32, None))
    assert keys[0] != keys[1] and key not in keys
    assert train_split_key(tiny_prepared, 10, 32, tiny_unclip_pipeline) != key  # with a Brain-CLIP
    assert train_split_key(tiny_prepared, 11, 32, None) != key and train_split_key(tiny_prepared, 10, 16, None) != key


def test_cli_keeps_the_encoder_and_train_split_in_the_cache_folder(tiny_pipeline, tiny_prepared, tmp_path):
    args = ["evaluate", "--model", str(tiny_pipeline), "--data", str(tiny_prepared), "--n", "4", "--steps", "1",
            "--encoder-steps", "3", "--cache", str(tmp_path / "cache")]
    first = CliRunner().invoke(_app(), [*args, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    assert {p.name for p in (tmp_path / "cache").iterdir()} == {"encoder", "train_split"}
    assert not (tmp_path / "a" / "encoder").exists() and not (tmp_path / "a" / "train_split").exists()
    second = CliRunner().invoke(_app(), [*args, "--out", str(tmp_path / "b")])  # another report, the same cache
    assert second.exit_code == 0, second.output
    assert "warning: reused the cached train-split features in" in second.output
    assert "warning: reused the cached evaluation encoder in" in second.output
    a, b = (json.loads((tmp_path / r / "metrics.json").read_text())["columns"] for r in "ab")
    assert a["ldm"]["privacy"] == b["ldm"]["privacy"] and a["real"]["realism"] == b["real"]["realism"]


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
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    no_split = tmp_path / "no_split"  # a hand-made table: was a KeyError traceback
    no_split.mkdir()
    table = pd.read_parquet(pathlib.Path(data) / "metadata.parquet")
    table.drop(columns="split").to_parquet(no_split / "metadata.parquet")
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
        (["--model", model, "--data", data, "--sampler", "pndm"], "--sampler takes one of auto, dpm"),
        (["--model", model, "--data", data, "--prior-guidance", "-1"], "--prior-guidance must be a non-negative"),
        (["--model", model, "--data", data, "--guidance", "inf"], "--guidance must be a non-negative number"),
        (["--model", model, "--data", str(no_split)], "metadata.parquet lacks the column(s) split"),
        (["--model", model, "--data", data, "--draws", "0"], "--draws must be between 1 and 8, got 0"),
        (["--model", model, "--data", data, "--draws", "9"], "--draws must be between 1 and 8, got 9"),
        # the last draw's seeds are checked before any work (draw 1 starts 1,000,000 after draw 0)
        (["--model", model, "--data", data, "--draws", "2", "--seed", str(2**63 - 1_000_010)], "seed (for 64 image"),
        (["--model", model, "--data", data, "--cache", str(a_file)], "--cache exists and is not a folder"),
    ]
    runner = CliRunner()
    for args, message in cases:
        result = runner.invoke(_app(), ["evaluate", *args, "--out", out])
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, result.output)
    assert not (tmp_path / "r").exists()  # nothing written for a refused request


@pytest.fixture(scope="module")
def ldm_report(tiny_pipeline, tiny_prepared, tmp_path_factory):
    """`dallebrain evaluate` of an LDM folder without clip/: (report folder, CLI result)."""
    out = tmp_path_factory.mktemp("eval-ldm") / "report"
    args = ["evaluate", "--model", str(tiny_pipeline), "--data", str(tiny_prepared), "--n", "4", "--steps", "1",
            "--encoder-steps", "3", "--out", str(out)]
    return out, CliRunner().invoke(_app(), args), args


def test_cli_builds_a_report_for_an_ldm_folder_without_brain_clip(ldm_report):
    out, result, _ = ldm_report
    assert result.exit_code == 0, result.output
    assert "report: " in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    met = sum(t["met"] is True for t in metrics["issue_targets"])  # the count the user reads, and where the list is
    assert f"{met} of {len(metrics['issue_targets'])} targets of issues 11 and 12 met" in result.output
    assert metrics["settings"]["feature_spaces"] == ["encoder"]
    assert set(metrics["columns"]) == {"real", "ldm", "reconstruction"}
    assert "brain_clip" not in metrics["columns"]["ldm"]["realism"]
    assert "clip_score" not in metrics["columns"]["ldm"]["adherence"]
    assert "Brain-CLIP" not in (out / "summary.md").read_text()
    assert metrics["settings"]["draws"] == 1 and "spread" not in metrics["columns"]["ldm"]
    assert "One synthetic draw per route" in (out / "summary.md").read_text()  # and how to get the spread


def test_a_rerun_that_fails_while_writing_keeps_the_earlier_report(ldm_report, tmp_path, monkeypatch):
    out = tmp_path / "report"
    shutil.copytree(ldm_report[0], out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".npz"}
    assert {pathlib.Path("metrics.json"), pathlib.Path("report.html"), pathlib.Path("figures/age.png")} <= set(before)

    def half_then_full_disk(original):
        def write(self, data, *args, **kwargs):
            if out in self.parents:  # a full disk part-way through every file of the report
                original(self, data[:len(data) // 2], *args, **kwargs)
                raise OSError(28, "No space left on device")
            return original(self, data, *args, **kwargs)
        return write

    monkeypatch.setattr(pathlib.Path, "write_text", half_then_full_disk(pathlib.Path.write_text))
    monkeypatch.setattr(pathlib.Path, "write_bytes", half_then_full_disk(pathlib.Path.write_bytes))
    args = [a if a != str(ldm_report[0]) else str(out) for a in ldm_report[2]]
    result = CliRunner().invoke(_app(), args)
    last = result.output.strip().splitlines()[-1].split("\r")[-1]  # after the progress bars
    assert result.exit_code == 2 and last.startswith("error: ") and "No space left" in last, result.output
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".npz"}
    assert after.keys() == before.keys()  # no temporary file left behind
    assert all(after[name] == before[name] for name in before), [str(n) for n in before if after[n] != before[n]]


def test_importing_the_evaluate_command_does_not_import_torch():
    # `dallebrain --help` imports the command's module: torch would add seconds to every start
    code = "import sys, dallebrain.evaluation.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", result.stderr


def test_settings_record_the_models_early_attribute_guidance(tmp_path):
    """metrics.json says which contrasts the LDM route sampled with an early attribute guidance, and with what."""
    from dallebrain.evaluation.options import EvaluationOptions
    from dallebrain.evaluation.run import _early_guidance_record

    def record(sampling, routes=("ldm",)):
        (tmp_path / "dallebrain.json").write_text(json.dumps({"sampling": sampling}))
        return _early_guidance_record(EvaluationOptions(tmp_path, tmp_path, tmp_path / "out", "test", 8, "ldm"),
                                      list(routes))

    entry = {"FLAIR": {"scale": 8, "from_timestep": 500}}
    assert record({"attribute_guidance_early": entry}) == {
        "attribute_guidance_early": {"FLAIR": {"scale": 8.0, "from_timestep": 500}}}
    assert record({"attribute_guidance_early": entry}, routes=("unclip",)) == {}
    assert record({}) == {}


def test_settings_record_the_unguided_low_noise_steps(tmp_path):
    """metrics.json says below which timestep each route's steps ran without guidance, where its model says so."""
    from dallebrain.evaluation.options import EvaluationOptions
    from dallebrain.evaluation.run import _unguided_record

    def record(info, routes=("ldm", "unclip")):
        (tmp_path / "dallebrain.json").write_text(json.dumps(info))
        return _unguided_record(EvaluationOptions(tmp_path, tmp_path, tmp_path / "out", "test", 8, "both"),
                                list(routes))

    ldm = {"sampling": {"unguided_below_timestep": {"PDw": 400}}}
    assert record(ldm) == {"unguided_below_timestep": {"ldm": {"PDw": 400}}}
    assert record({**ldm, "unclip": {"sampling": {"unguided_below_timestep": {"T1w": 300}}}}) == {
        "unguided_below_timestep": {"ldm": {"PDw": 400}, "unclip": {"T1w": 300}}}
    assert record(ldm, routes=("unclip",)) == {}
    assert record({"sampling": {}}) == {}


def test_settings_record_the_sampler_asked(tmp_path):
    """A sampler named for the evaluation is what every route sampled with (no per-contrast table applies);
    "auto" records the model's per-contrast choices and the fallback; an unknown one is refused in one line."""
    from dallebrain.evaluation.options import EvaluationOptions
    from dallebrain.evaluation.report import _sampling_words
    from dallebrain.evaluation.run import _sampler_record
    from dallebrain.vocab import AUTO_FALLBACK

    (tmp_path / "dallebrain.json").write_text(json.dumps(
        {"sampling": {"sampler_by_contrast": {"FLAIR": {"sampler": "dpm-sde", "step_factor": 2}}}}))

    def options(sampler):
        return EvaluationOptions(tmp_path, tmp_path, tmp_path / "out", "test", 8, "ldm", steps=12, sampler=sampler)

    assert _sampler_record(options("unipc"), ["ldm"]) == {"requested": "unipc",
                                                           "default": {"sampler": "unipc", "steps": 12}}
    auto = _sampler_record(options("auto"), ["ldm"])
    assert auto["default"] == {"sampler": AUTO_FALLBACK, "steps": 12}
    assert auto["ldm_by_contrast"] == {"FLAIR": {"sampler": "dpm-sde", "steps": 24}}
    assert _sampling_words({"steps": 12, "sampler": {"requested": "unipc"}}) == "unipc, 12 steps"
    assert _sampling_words({"steps": 12, "sampler": {"requested": "auto"}}) == "12 steps"
    with pytest.raises(ValueError, match="unknown sampler 'pndm'"):
        options("pndm").routes()
