"""evaluate-ageing on the tiny longitudinal set (6 people at 0, 5 and 10 years; val and test hold one each).

The untrained ageing network's output convolution is zero, so it predicts the baseline exactly (at its own
grid size: image_size=32 here, no resampling) = the copy baseline; a network with a random output convolution
predicts something else."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dallebrain.ageing.evaluate import AgeingEvalOptions, evaluate_ageing, evaluate_chunk, held_out_pairs
from dallebrain.ageing.evaluate_metrics import identity_hits
from dallebrain.ageing.network import AgeingNet, AgeingNetConfig, save_ageing_net

TINY_NET = AgeingNetConfig(channels=(8, 16), image_size=32)
SCORES = ["ssim", "psnr", "ventricles_pred", "gm_pred", "wm_pred", "identity_hit"]


@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ageing_net")
    save_ageing_net(AgeingNet(TINY_NET), folder)
    return folder


@pytest.fixture(scope="module")
def axial_t1(tiny_long_prepared, untrained_model, tmp_path_factory):
    """(context, held-out T1w axial chunk, its per-method rows) with the untrained network, val + test people."""
    from dallebrain.ageing.evaluate import _context
    from dallebrain.ageing.pairs import longitudinal_table

    options = AgeingEvalOptions(tiny_long_prepared, tmp_path_factory.mktemp("unused"), untrained_model,
                                ("val", "test"))
    table = longitudinal_table(tiny_long_prepared)
    pairs = held_out_pairs(table, options)
    context = _context(options, table, pairs)
    chunk = pairs[(pairs["modality"] == "T1w") & (pairs["orientation"] == "axial")]
    rows = {r["method"].iloc[0]: r.reset_index(drop=True) for r in evaluate_chunk(chunk, context)}
    return context, chunk, rows


def test_copy_ssim_is_skimage_ssim_of_baseline_and_follow_up(tiny_long_prepared, axial_t1):
    from skimage.metrics import structural_similarity

    from dallebrain.data.slicing import load_png

    _, chunk, rows = axial_t1
    direct = [structural_similarity(load_png(tiny_long_prepared / t), load_png(tiny_long_prepared / s),
                                    data_range=1.0)
              for s, t in zip(chunk["source_image_path"], chunk["target_image_path"], strict=True)]
    np.testing.assert_allclose(rows["copy"]["ssim"], direct, rtol=1e-6)
    assert np.mean(direct) < 0.999  # the follow-ups differ from the baselines: the check can fail
    assert set(rows) == {"network", "copy", "cohort-mean"}
    assert rows["copy"]["gap"].isin([5, 10]).all()


def test_untrained_network_scores_as_copy_and_a_changing_one_does_not(axial_t1):
    from torch import nn

    context, chunk, rows = axial_t1
    pd.testing.assert_frame_equal(rows["network"][SCORES], rows["copy"][SCORES])
    net = AgeingNet(TINY_NET)
    nn.init.normal_(net.unet.conv_out.weight, std=0.05)
    changed = {r["method"].iloc[0]: r.reset_index(drop=True)
               for r in evaluate_chunk(chunk, {**context, "net": net.eval()})}
    assert not np.allclose(changed["network"]["ssim"], rows["copy"]["ssim"])
    assert not np.allclose(changed["network"]["psnr"], rows["copy"]["psnr"])
    pd.testing.assert_frame_equal(changed["copy"][SCORES], rows["copy"][SCORES])  # the baseline is untouched


def test_cohort_mean_reads_only_train_people(tiny_long_prepared, axial_t1, monkeypatch):
    from dallebrain.ageing import evaluate_methods
    from dallebrain.ageing.evaluate_methods import COHORT_KEY, cohort_changes
    from dallebrain.ageing.pairs import load_images, longitudinal_table

    context, chunk, _ = axial_t1
    read = []

    def recording(data, paths):
        read.extend(paths)
        return load_images(data, paths)

    monkeypatch.setattr(evaluate_methods, "load_images", recording)
    wanted = set(zip(*(chunk[c] for c in COHORT_KEY), strict=True))
    changes = cohort_changes(tiny_long_prepared, context["train_pairs"], wanted)
    table = longitudinal_table(tiny_long_prepared)
    split_of = dict(zip(table["image_path"], table["split"], strict=True))
    assert read and {split_of[p] for p in read} == {"train"}
    assert not set(chunk["subject_id"]) & set(table.loc[table["image_path"].isin(read), "subject_id"])
    assert set(changes) == wanted  # every held-out position and gap has train people's change
    key = next(iter(sorted(wanted)))
    train = context["train_pairs"]
    at = train[[tuple(r) == key for r in train[COHORT_KEY].itertuples(index=False)]]
    images, index = load_images(tiny_long_prepared, [*at["source_image_path"], *at["target_image_path"]])
    expected = np.mean([images[index[t]] - images[index[s]]
                        for s, t in zip(at["source_image_path"], at["target_image_path"], strict=True)], axis=0)
    np.testing.assert_allclose(changes[key], expected, atol=1e-6)


def test_identity_retrieval_on_constructed_cases():
    rng = np.random.default_rng(0)
    truths = rng.random((6, 16, 16)).astype(np.float32)
    groups = ["a", "a", "a", "b", "b", "c"]  # c holds one person only: nothing to tell apart
    people = ["p1", "p2", "p3", "p1", "p2", "p1"]
    exact = identity_hits(truths, truths, groups, people)
    np.testing.assert_array_equal(exact[:5], 1.0)
    assert np.isnan(exact[5])
    shuffled = truths[[1, 2, 0, 4, 3, 5]]  # each prediction is another person's follow-up of its group
    swapped = identity_hits(shuffled, truths, groups, people)
    np.testing.assert_array_equal(swapped[:5], 0.0)
    near = truths + 0.05 * rng.standard_normal(truths.shape).astype(np.float32)  # own follow-up, a little off
    assert np.nanmean(identity_hits(near, truths, groups, people)) == 1.0


def test_evaluate_ageing_writes_every_output_and_refuses_to_overwrite(tiny_long_prepared, untrained_model, tmp_path):
    out = tmp_path / "report"
    options = AgeingEvalOptions(tiny_long_prepared, out, untrained_model, ("val", "test"), slice_stride=4)
    report = evaluate_ageing(options)
    saved = json.loads((out / "ageing_report.json").read_text())
    assert saved["held_out"]["people"] == 2 and saved["settings"]["slice_stride"] == 4
    assert set(saved["metrics"]) == {"network", "copy", "cohort-mean"}
    assert set(saved["metrics"]["network"]) == {"all", "5", "10"}
    assert saved["metrics"]["network"]["10"]["ssim"] == pytest.approx(saved["metrics"]["copy"]["10"]["ssim"])
    per_pair = pd.read_csv(out / "ageing_pairs.csv")
    assert len(per_pair) == 3 * report["held_out"]["pairs"]
    positions = per_pair.groupby("orientation")["slice_index"].nunique()
    assert (positions < pd.read_parquet(tiny_long_prepared / "metadata.parquet")
            .groupby("orientation")["slice_index"].nunique()[positions.index]).all()  # the stride kept fewer
    markdown = (out / "ageing_report.md").read_text()
    assert "## 10 years" in markdown and "identity retrieval (10 y)" in markdown
    assert (out / "ageing_examples.png").stat().st_size > 1000
    assert saved["sequences"]["people"] >= 1
    before = (out / "ageing_report.json").read_bytes()
    with pytest.raises(ValueError, match="--overwrite"):
        evaluate_ageing(options)
    assert (out / "ageing_report.json").read_bytes() == before


def _one_line_error(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_cli_refuses_data_that_is_not_longitudinal(tiny_long_prepared, tmp_path):
    from typer.testing import CliRunner

    from dallebrain.cli import app

    flat = tmp_path / "flat"
    flat.mkdir()
    pd.read_parquet(tiny_long_prepared / "metadata.parquet").drop(columns="session_id").to_parquet(
        flat / "metadata.parquet")
    result = CliRunner().invoke(app, ["evaluate-ageing", "--data", str(flat), "--out", str(tmp_path / "o")])
    assert "not longitudinal" in _one_line_error(result)
    result = CliRunner().invoke(app, ["evaluate-ageing", "--data", str(tmp_path / "none"), "--out",
                                      str(tmp_path / "o")])
    assert "not a prepared data set" in _one_line_error(result)
    result = CliRunner().invoke(app, ["evaluate-ageing", "--data", str(tiny_long_prepared), "--out",
                                      str(tmp_path / "o"), "--split", "train"])
    assert "--split" in _one_line_error(result)
    assert not (tmp_path / "o").exists()


def test_cli_keeps_an_existing_report(tiny_long_prepared, untrained_model, tmp_path):
    from typer.testing import CliRunner

    from dallebrain.cli import app

    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "ageing_report.json").write_text('{"earlier": true}')
    result = CliRunner().invoke(app, ["evaluate-ageing", "--data", str(tiny_long_prepared), "--model",
                                      str(untrained_model), "--out", str(tmp_path / "o")])
    assert "--overwrite" in _one_line_error(result)
    assert (tmp_path / "o" / "ageing_report.json").read_text() == '{"earlier": true}'
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["ageing_report.json"]


def test_sdedit_runs_on_its_sample_under_the_follow_up_prompt(axial_t1, tiny_pipeline):
    """sdedit through the tiny LDM on 3 pairs: its rows only for those, a prompt naming the follow-up's age,
    contrast, plane and sex, and a prediction that is not the baseline."""
    from dallebrain.ageing.evaluate_methods import follow_up_prompt
    from dallebrain.api import load_pipeline
    from dallebrain.data.prompts import parse_prompt

    context, chunk, rows = axial_t1
    row = chunk.iloc[-1]
    fields = parse_prompt(follow_up_prompt(row))
    assert (fields.age, fields.sex, fields.modality, fields.orientation) == (
        pytest.approx(row["target_age"], abs=0.5), row["sex"], "T1w", "axial")
    sample = set(chunk.index[[0, 5, 9]])
    pipe = load_pipeline(tiny_pipeline, device="cpu")
    out = {r["method"].iloc[0]: r.reset_index(drop=True)  # the sample's pairs only: the other methods cost time
           for r in evaluate_chunk(chunk.loc[sorted(sample)], {**context, "pipe": pipe, "sdedit_pairs": sample})}
    sdedit = out["sdedit"]
    assert sorted(sdedit["pair"]) == sorted(sample) and sdedit["identity_hit"].isna().all()
    copy = rows["copy"].set_index("pair").loc[sdedit["pair"]]
    assert np.isfinite(sdedit["ssim"]).all() and not np.allclose(sdedit["ssim"], copy["ssim"])


def test_sequence_ages_and_monotone_rule():
    from dallebrain.ageing.evaluate_metrics import is_monotone, sequence_ages

    assert sequence_ages(30.0) == [30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0]
    assert sequence_ages(90.0) == [90.0, 95.0, 100.0, 105.0]  # capped, duplicates dropped
    assert is_monotone([1000, 998, 1010])  # a 0.2 % dip: the judge's noise
    assert not is_monotone([1000, 990, 1010])  # a 1 % dip: shrinkage
