"""The evaluation's anatomy: the judges' numbers on constructed inputs (paired tissue fractions, ventricles vs age,
head size by sex, the age judge's MAE beside chance), judges that are absent or unusable, and `evaluate` end to end
with judges whose output is known exactly (every brain pixel white matter; a constant age) and without labels."""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from dallebrain.evaluation import anatomy as AN
from dallebrain.evaluation.features import EncoderConfig

TINY_ENCODER = EncoderConfig(input_size=32, widths=(8, 16), feature_dim=16, steps=3, batch_size=16)
CONSTANT_AGE = 50.0


# --- numbers on constructed inputs ---------------------------------------------------------------------------------


def test_paired_fractions_give_the_known_difference_and_correlation_per_contrast():
    real = {"ventricles": np.array([0.10, 0.20, 0.30, 0.40, 0.05, 0.06, 0.07])}
    synthetic = {"ventricles": np.array([0.15, 0.25, 0.35, 0.45, 0.07, 0.05, np.nan])}
    modality = ["T1w"] * 4 + ["T2w"] * 3
    out = AN.compare_fractions(real, synthetic, modality)
    assert list(out) == ["all", "T1w", "T2w"]
    t1 = out["T1w"]["ventricles"]
    assert t1["mae"] == pytest.approx(0.05) and t1["pearson_r"] == pytest.approx(1.0) and t1["n"] == 4
    t2 = out["T2w"]["ventricles"]  # the NaN pair is left out: two pairs, a difference but no correlation
    assert t2["mae"] == pytest.approx(0.015) and t2["n"] == 2 and t2["pearson_r"] is None
    assert out["all"]["ventricles"]["n"] == 6
    assert out["all"]["ventricles"]["mae"] == pytest.approx((4 * 0.05 + 0.02 + 0.01) / 6)


def test_pearson_needs_three_finite_varying_pairs():
    assert AN.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(np.corrcoef([1, 2, 3], [2, 4, 7])[0, 1])
    assert AN.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert AN.pearson([1, 2, np.nan], [1, 2, 3]) is None
    assert AN.pearson([1, 1, 1], [1, 2, 3]) is None


def test_the_ventricle_band_and_the_correlation_inside_it():
    orientation = ["axial", "axial", "axial", "axial", "coronal", "axial"]
    level = [17.0, 29.0, 23.0, 30.0, 20.0, 16.9]
    band = AN.in_ventricle_band(orientation, level)
    assert band.tolist() == [True, True, True, False, False, False]
    ventricles = np.array([0.02, 0.08, 0.05, 0.9, 0.9, 0.9])  # outside the band: would spoil the correlation
    ages = np.array([20.0, 80.0, 50.0, 20.0, 20.0, 20.0])
    assert AN.ventricles_vs_age(ventricles, ages, band) == {"pearson_r": pytest.approx(1.0), "n": 3}


def test_head_size_ratio_men_over_women_and_its_distance_from_real():
    trend = SimpleNamespace(cohort=np.array([1.10, 1.06, 0.98, 0.96, np.nan]),
                            relative={"real": np.array([1.05, 0.95, 1.15, 1.0]),
                                      "ldm": np.array([1.0, 1.0, 1.0, 1.0])})
    sexes = {"real": np.array(["M", "F", "M", None], dtype=object), "ldm": np.array(["M", "F", "M", "F"], dtype=object)}
    out = AN.head_size(trend, np.array(["M", "M", "F", "F", "M"], dtype=object), sexes)
    assert out["cohort_train"] == {"ratio": pytest.approx(1.08 / 0.97), "men": 2, "women": 2}
    assert out["real"] == {"ratio": pytest.approx(1.10 / 0.95), "men": 2, "women": 1}
    assert out["ldm"]["ratio"] == pytest.approx(1.0)
    assert out["ldm"]["vs_real_percent"] == pytest.approx(100 * (0.95 / 1.10 - 1))
    assert out["ldm"]["vs_cohort_percent"] == pytest.approx(100 * (0.97 / 1.08 - 1))
    assert AN.sex_ratio([1.0, 1.1], ["M", "M"])["ratio"] is None  # no women: no ratio


def test_age_judge_scores_beside_chance_on_the_same_slices():
    class FixedAgeJudge:  # the judge's answer per slice, whatever the fractions
        def predict_from_fractions(self, shares, orientation, slice_mm):
            return shares["answer"]

    heldout = pd.DataFrame({"orientation": ["axial", "axial", "coronal", "axial"],
                            "slice_mm": [20.0, 26.0, 20.0, 50.0]})
    fractions = {"real": {"answer": np.array([30.0, 70.0, 40.0, np.nan])},
                 "ldm": {"answer": np.array([50.0, 50.0, 50.0, 50.0])}}
    ages = {"real": np.array([25.0, 80.0, 40.0, 60.0]), "ldm": np.array([25.0, 80.0, 40.0, 60.0])}
    band = AN.in_ventricle_band(heldout["orientation"], heldout["slice_mm"])
    out = AN.age_judge_scores(FixedAgeJudge(), fractions, heldout, ages, band, train_mean_age=55.0)
    assert out["all"]["real"] == {"mae": pytest.approx(5.0), "n": 3}  # the NaN prediction is left out
    assert out["all"]["ldm"] == {"mae": pytest.approx((25 + 30 + 10 + 10) / 4), "n": 4}
    assert out["all"]["chance"] == {"mae": pytest.approx((30 + 25 + 15 + 5) / 4), "n": 4}
    assert out["ventricle_band"]["real"] == {"mae": pytest.approx(7.5), "n": 2}
    assert out["ventricle_band"]["chance"] == {"mae": pytest.approx(27.5), "n": 2}


def test_level_judge_scores_against_truth_prompt_and_chance(monkeypatch):
    import dallebrain.judges.level as level_module

    def estimate(images, orientations, judge):  # the judge reads the level off the constructed image
        assert orientations == ["axial", "sagittal", "axial"]
        return images[:, 0, 0] * 100

    monkeypatch.setattr(level_module, "estimate_levels", estimate)
    heldout = pd.DataFrame({"modality": ["T1w"] * 3, "orientation": ["axial", "sagittal", "axial"],
                            "slice_mm": [20.0, -30.0, 40.0]})
    images = {"real": np.stack([np.full((16, 16), v) for v in (0.22, 0.30, 0.40)]),
              "ldm": np.stack([np.full((16, 16), v) for v in (0.10, 0.30, 0.50)])}
    prompts = SimpleNamespace(level_mm=np.array([20.0, 30.0, np.nan]))  # the third prompt names no level
    train = heldout.assign(slice_mm=[0.0, 10.0, 30.0])  # mean level |x| for sagittal: (0 + 10 + 30) / 3
    out = AN.level_judge_scores(None, images, heldout, prompts, train)
    # sagittal truth is |x| = 30; errors +2, 0, 0: one slice 2 mm off, none far
    # (each slice alone in its plane and band: nothing left once each group's own mean error is removed)
    assert out["real"] == {"mae": pytest.approx(2 / 3), "n": 3, "bias_mm": pytest.approx(2 / 3),
                           "within_near": pytest.approx(2 / 3), "beyond_far": 0.0, "far_share_of_error": 0.0,
                           "scatter_mae": 0.0}
    # errors -10 and 0: a bias of -5 mm, all of it the one slice landing 10 mm off
    assert out["ldm"] == {"mae": pytest.approx(5.0), "n": 2, "bias_mm": pytest.approx(-5.0), "within_near": 0.5,
                          "beyond_far": 0.5, "far_share_of_error": 1.0, "scatter_mae": 0.0}
    assert out["chance"] == {"mae": pytest.approx((20 / 3 + 50 / 3 + 80 / 3) / 3), "n": 3}


def test_a_level_error_is_taken_apart_into_bias_and_far_slices():
    """Slices all 3 mm high are pure bias; one slice 20 mm off among exact ones is pure scatter."""
    axial = ["axial"] * 4
    biased = AN.level_error_profile([23.0, 33.0, 43.0, 53.0], [20.0, 30.0, 40.0, 50.0], axial)
    assert biased == {"mae": 3.0, "n": 4, "bias_mm": 3.0, "within_near": 0.0, "beyond_far": 0.0,
                      "far_share_of_error": 0.0, "scatter_mae": 0.0}  # a correction per level removes all of it
    # 24 and 26 asked (one 12 mm band), drawn 4 mm high and 4 mm low: no bias to remove, all scatter
    scattered = AN.level_error_profile([28.0, 22.0, 60.0, 50.0, np.nan], [24.0, 26.0, 40.0, 50.0, 10.0],
                                       ["axial", "axial", "coronal", "sagittal", "axial"])
    assert scattered == {"mae": 7.0, "n": 4, "bias_mm": 5.0, "within_near": 0.25, "beyond_far": 0.25,
                         "far_share_of_error": pytest.approx(20 / 28), "scatter_mae": 2.0}
    assert AN.level_error_profile([28.0, 22.0], [24.0, 26.0])["scatter_mae"] is None  # planes not given
    exact = AN.level_error_profile([1.5, -3.0], [1.5, -3.0], ["axial", "coronal"])
    assert exact["mae"] == 0.0 and exact["far_share_of_error"] == 0.0 and exact["within_near"] == 1.0


def test_attribute_table_puts_ceiling_synthetic_and_chance_side_by_side():
    def column(accuracy, mae):
        attributes = {k: {"accuracy": accuracy, "n": 4} for k in ("contrast", "orientation", "sex")}
        attributes.update({k: {"mae": mae, "n": 4} for k in ("level_mm", "age")})
        return {"adherence": {"attributes": attributes}}

    columns = {"real": column(1.0, 5.0), "ldm": column(0.5, 9.0)}
    chance = {**{k: {"accuracy": 0.25} for k in ("contrast", "orientation", "sex")},
              **{k: {"mae": 15.0} for k in ("level_mm", "age")}}
    anatomy = {"age_judge": {"ventricle_band": {"real": {"mae": 6.0, "n": 3}, "ldm": {"mae": 8.0, "n": 3},
                                                "chance": {"mae": 14.0, "n": 3}}}}
    rows = AN.attribute_table(columns, chance, anatomy)
    contrast = rows[0]
    assert (contrast["attribute"], contrast["real"], contrast["synthetic"], contrast["chance"]) == \
        ("contrast", 1.0, {"ldm": 0.5}, 0.25)
    judged = rows[-1]
    assert (judged["judge"], judged["slices"], judged["real"], judged["synthetic"], judged["chance"], judged["n"]) == \
        ("age judge", "axial z 17-29 mm", 6.0, {"ldm": 8.0}, 14.0, 3)
    assert len(rows) == 6  # no "all slices" age-judge row without its scores


def test_label_fractions_from_the_label_pngs_and_none_without_labels(tmp_path):
    label = np.zeros((20, 20), np.uint8)
    label[:10, :] = 3  # WM: 200 px
    label[10:15, :] = 2  # GM: 100 px
    label[15:17, :] = 1  # CSF: 40 px
    label[17:18, :10] = 5  # ventricles: 10 px
    label[18:, :5] = 4  # a lesion: not one of the four tissues
    Image.fromarray(label).save(tmp_path / "a.png")
    heldout = pd.DataFrame({"label_path": ["a.png", None]})
    out = AN.label_fractions_of(tmp_path, heldout)
    assert out["wm"][0] == pytest.approx(200 / 350) and out["ventricles"][0] == pytest.approx(10 / 350)
    assert out["gm"][0] == pytest.approx(100 / 350) and out["csf"][0] == pytest.approx(40 / 350)
    assert np.isnan(out["wm"][1])
    assert AN.label_fractions_of(tmp_path, pd.DataFrame({"label_path": [None, None]})) is None
    assert AN.label_fractions_of(tmp_path, pd.DataFrame({"image_path": ["x.png"]})) is None


def test_a_cohort_without_demographics_labels_or_ventricle_band_is_measured_with_notes(tmp_path, monkeypatch):
    import dallebrain.judges.level as level_module

    monkeypatch.setattr(level_module, "estimate_levels", lambda images, orientations, judge: np.zeros(len(images)))

    class HalfWhiteMatter:  # judged fractions known exactly: half GM, half WM
        def fractions(self, images):
            n = len(images)
            return {"csf": np.zeros(n), "ventricles": np.zeros(n), "gm": np.full(n, 0.5), "wm": np.full(n, 0.5)}

    class NeverCalled:
        def predict_from_fractions(self, *args):
            raise AssertionError("no ages: the age judge has nothing to be scored against")

    heldout = pd.DataFrame({"modality": ["T1w", "T2w", "T1w"], "orientation": ["coronal"] * 3,
                            "slice_mm": [0.0, 3.0, 6.0], "split": ["test"] * 3, "image_path": ["a", "b", "c"]})
    reference = SimpleNamespace(heldout=heldout, train=heldout.assign(split="train"), table=heldout,
                                real=np.zeros((3, 16, 16), np.float32))
    trend = SimpleNamespace(cohort=np.ones(3), relative={"real": np.ones(3), "ldm": np.ones(3)})
    prompts = SimpleNamespace(sex=np.array([-1, -1, -1]), age=np.full(3, np.nan), level_mm=np.full(3, np.nan))
    judges = AN.Judges(HalfWhiteMatter(), NeverCalled())
    out = AN.measure_anatomy(judges, reference, {"ldm": np.ones((3, 16, 16), np.float32)}, trend, prompts, tmp_path)
    assert out["head_size"]["real"] == {"ratio": None, "men": 0, "women": 0}
    assert out["tissue"]["paired_with_real"]["ldm"]["all"]["gm"] == {"mae": 0.0, "n": 3, "pearson_r": None}
    assert out["ventricles_vs_age"]["heldout_split"] == {"pearson_r": None, "n": 0}
    assert "age_judge" not in out and "judge_on_real_vs_labels" not in out["tissue"]
    assert out["level_judge"]["real"]["n"] == 3 and out["level_judge"]["ldm"]["n"] == 0
    assert {k for k, v in out["level_judge"]["ldm"].items() if v is not None} == {"n"}
    assert len(out["notes"]) == 3 and all("\n" not in note for note in out["notes"])  # labels, band, ages


# --- judges: known outputs, absent, unusable ---------------------------------------------------------------------


def white_matter_judge(folder, channels=(8, 16, 16)):
    """A tissue judge whose every pixel is white matter: its fractions are known exactly (wm 1, the rest 0)."""
    import torch

    from dallebrain.judges.network import CLASSES, TissueNet, TissueNetConfig, save_tissue_net

    net = TissueNet(TissueNetConfig(channels=channels, image_size=64))
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([float(c == "wm") for c in CLASSES]))
    save_tissue_net(net, folder)
    return folder


def constant_age_judge(folder, tissue_folder):
    """An age judge that answers CONSTANT_AGE for every slice (zero coefficients), fitted on `tissue_folder`."""
    from dallebrain.data.io import write_json_atomic
    from dallebrain.judges.age import MODEL_FILE, features, tissue_fingerprint

    size = features({k: np.zeros(1) for k in ("csf", "ventricles", "gm", "wm")}, "axial", 0.0).shape[1]
    folder.mkdir(parents=True)
    write_json_atomic(folder / MODEL_FILE, {"coef": [0.0] * size, "mean": [0.0] * size, "scale": [1.0] * size,
                                            "intercept": CONSTANT_AGE,
                                            "tissue_sha256": tissue_fingerprint(tissue_folder)})
    return folder


@pytest.fixture(scope="module")
def judge_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("judges")
    tissue = white_matter_judge(root / "tissue")
    return tissue, constant_age_judge(root / "age", tissue)


def test_judges_not_installed_are_skipped_with_a_note(tmp_path, monkeypatch, judge_folders):
    import dallebrain.judges.age as age_module
    import dallebrain.judges.tissue as tissue_module

    monkeypatch.setattr(tissue_module, "SHIPPED", tmp_path / "no-tissue")
    monkeypatch.setattr(age_module, "SHIPPED", tmp_path / "no-age")
    judges = AN.load_judges()
    assert judges.tissue is None and judges.age is None and "no tissue judge" in judges.notes[0]
    judges = AN.load_judges(judge_folders[0])
    assert judges.tissue is not None and judges.age is None and "no age judge" in judges.notes[0]
    # an installed age judge fitted on another tissue judge than the one given: skipped, not misread
    monkeypatch.setattr(age_module, "SHIPPED", judge_folders[1])
    judges = AN.load_judges(white_matter_judge(tmp_path / "other-tissue", channels=(8, 16, 24)))
    assert judges.age is None and "another tissue judge" in judges.notes[0]


def test_judge_folders_given_that_cannot_serve_are_one_line_errors(tmp_path, judge_folders):
    with pytest.raises(ValueError, match=r"^[^\n]*not a tissue judge folder[^\n]*$"):
        AN.load_judges(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"^[^\n]*not an age judge folder[^\n]*$"):
        AN.load_judges(judge_folders[0], tmp_path / "missing")


def test_cli_refuses_a_missing_judge_folder_before_any_work(tiny_pipeline, tiny_prepared, tmp_path):
    from dallebrain.evaluation.cli import evaluate_cmd

    app = typer.Typer()
    app.command("evaluate")(evaluate_cmd)
    app.command("noop")(lambda: None)
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["evaluate", "--model", str(tiny_pipeline), "--data", str(tiny_prepared),
                                      "--out", str(out), "--tissue-judge", str(tmp_path / "nope")])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "nope" in lines[0]
    assert not (out / "metrics.json").exists()


# --- evaluate end to end -------------------------------------------------------------------------------------------


def _evaluate(model, data, out, judges):
    from dallebrain.evaluation import EvaluationOptions, evaluate

    return evaluate(EvaluationOptions(model, data, out, "test", 8, "ldm", steps=1, seed=1, progress=False,
                                      encoder=TINY_ENCODER, diversity_samples=0, tissue_judge=judges[0],
                                      age_judge=judges[1]))


@pytest.fixture(scope="module")
def judged(tiny_pipeline, tiny_prepared, judge_folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-judged") / "report"
    return out, _evaluate(tiny_pipeline, tiny_prepared, out, judge_folders)


def test_evaluate_reports_what_the_judges_see(judged, tiny_prepared, judge_folders):
    from dallebrain.evaluation.reference import sample_heldout

    out, metrics = judged
    assert metrics == json.loads((out / "metrics.json").read_text())
    anatomy = metrics["anatomy"]
    heldout = sample_heldout(pd.read_parquet(tiny_prepared / "metadata.parquet"), "test", 8, 1, [])
    assert heldout["caption"].tolist() == np.load(out / "samples_ldm.npz")["prompts"].tolist()
    # every brain pixel is white matter to this judge, real or synthetic: paired differences vanish ...
    tissue = anatomy["tissue"]
    assert tissue["mean_fraction"]["real"] == {"csf": 0.0, "ventricles": 0.0, "gm": 0.0, "wm": 1.0}
    assert tissue["paired_with_real"]["ldm"]["all"]["wm"] == {"mae": 0.0, "n": 8, "pearson_r": None}
    # ... and its error on real slices is exactly the share of the labels that is not white matter
    truth = AN.label_fractions_of(tiny_prepared, heldout)
    assert tissue["judge_on_real_vs_labels"]["all"]["wm"]["mae"] == pytest.approx(np.mean(1 - truth["wm"]))
    # the constant age judge: its MAE is the distance of each slice's age from that constant, beside chance
    judged_age = anatomy["age_judge"]["all"]
    assert judged_age["real"]["mae"] == pytest.approx(np.mean(np.abs(CONSTANT_AGE - heldout["age"].to_numpy())))
    assert judged_age["chance"]["n"] == 8 and judged_age["ldm"]["n"] == 8
    rows = {(r["judge"], r["attribute"], r["slices"]): r for r in metrics["attributes"]}
    assert rows[("age judge", "age", "all slices")]["real"] == judged_age["real"]["mae"]
    assert rows[("level judge", "level_mm", "all slices")]["real"] == anatomy["level_judge"]["real"]["mae"]
    assert anatomy["level_judge"]["ldm"]["n"] == 8
    assert rows[("evaluation encoder", "contrast", "all slices")]["chance"] == metrics["chance"]["contrast"]["accuracy"]
    assert {"cohort_train", "real", "ldm"} <= set(anatomy["head_size"])
    assert anatomy["judges"] == {"tissue": str(judge_folders[0]), "age": str(judge_folders[1])}
    summary = (out / "summary.md").read_text()
    html = (out / "report.html").read_text()
    for text in ("Attributes: real ceiling, synthetic, chance", "Head size by sex", "Tissue fractions",
                 "Slice level error: bias and scatter",
                 "Ventricles against age"):
        assert text in summary and text in html, text


def test_a_cohort_without_labels_still_evaluates_with_a_note(tiny_pipeline, tiny_prepared, judge_folders, tmp_path):
    data = tmp_path / "no-labels"
    shutil.copytree(tiny_prepared, data)
    table = pd.read_parquet(data / "metadata.parquet")
    table["label_path"] = None
    table.to_parquet(data / "metadata.parquet")
    metrics = _evaluate(tiny_pipeline, data, tmp_path / "report", judge_folders)
    anatomy = metrics["anatomy"]
    assert "judge_on_real_vs_labels" not in anatomy["tissue"]
    assert any("no tissue label" in note for note in anatomy["notes"])
    assert anatomy["tissue"]["paired_with_real"]["ldm"]["all"]["wm"]["n"] == 8  # the rest is measured
    assert "no tissue label" in (tmp_path / "report" / "summary.md").read_text()


def test_without_judges_evaluate_reports_head_size_and_says_what_it_skipped(tiny_pipeline, tiny_prepared, tmp_path,
                                                                             monkeypatch):
    import dallebrain.judges.tissue as tissue_module

    monkeypatch.setattr(tissue_module, "SHIPPED", tmp_path / "none")
    metrics = _evaluate(tiny_pipeline, tiny_prepared, tmp_path / "report", (None, None))
    anatomy = metrics["anatomy"]
    assert "tissue" not in anatomy and "age_judge" not in anatomy and "no tissue judge" in anatomy["notes"][0]
    assert anatomy["head_size"]["real"]["men"] + anatomy["head_size"]["real"]["women"] == 8
    assert [r["judge"] for r in metrics["attributes"]] == ["evaluation encoder"] * 5 and "level_judge" not in anatomy
