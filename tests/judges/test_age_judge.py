"""The age judge: features by plane and level, a fit that finds age where the phantom's ventricles carry it,
its file, its refusals and its command."""

import json

import numpy as np
import pytest

from dallebrain.judges.age import features, load_age_judge
from dallebrain.judges.age_fit import fit_age
from dallebrain.judges.network import load_tissue_net, save_tissue_net
from dallebrain.judges.tissue import FRACTIONS


@pytest.fixture(scope="module")
def age_judge_dir(phantom_set, trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("age")
    fit_age(phantom_set, out, tissue_folder=trained)
    return out


def _shares(n, value=0.25):
    return {k: np.full(n, value) for k in FRACTIONS}


def test_features_keep_planes_apart_and_vary_with_level():
    design = features(_shares(3), ["axial", "coronal", "axial"], [20.0, 20.0, -40.0])
    block = design.shape[1] // 3
    assert (design[0, block:] == 0).all() and (design[1, :block] == 0).all() and design[1, block:2 * block].any()
    assert not np.allclose(design[0], design[2])  # same plane, another level: other coefficients weigh


@pytest.mark.parametrize("orientation, slice_mm, words", [
    ("oblique", 0.0, "orientation must be one of"),
    ("axial", [1.0, 2.0], "one per image"),
    ("axial", np.nan, "finite"),
    ("axial", "high", "numbers"),
])
def test_bad_positions_are_one_line_errors(orientation, slice_mm, words):
    with pytest.raises(ValueError, match=r"^[^\n]+$") as caught:
        features(_shares(3), orientation, slice_mm)
    assert words in str(caught.value)


def test_fit_finds_age_where_the_ventricles_carry_it(age_judge_dir, trained, make_phantom):
    judge = load_age_judge(age_judge_dir, tissue_folder=trained)
    rng = np.random.default_rng(5)  # unseen phantoms
    ages = np.linspace(25, 80, 12)
    images = np.stack([make_phantom(rng, a)[0] for a in ages])
    predicted = judge.predict(images, "axial", 20.0)
    assert predicted.shape == (12,)
    chance = np.abs(ages - judge.model["training"]["train_mean_age"]).mean()
    assert np.abs(predicted - ages).mean() < 0.5 * chance


def test_answers_stay_within_the_ages_it_was_fitted_on(age_judge_dir, trained):
    """Fractions unlike any training slice (all ventricles, at a level with little training data) made the
    linear model answer thousands of years; it now answers at most the oldest training age."""
    judge = load_age_judge(age_judge_dir, tissue_folder=trained)
    low, high = judge.model["age_range"]
    assert low < high
    odd = {k: np.full(4, v) for k, v in zip(FRACTIONS, (0.0, 1.0, 0.0, 0.0), strict=False)}
    years = judge.predict_from_fractions(odd, ["axial", "coronal", "sagittal", "axial"], [90.0, -90.0, 70.0, 20.0])
    assert ((years >= low) & (years <= high)).all()
    unclipped = dict(judge.model)
    del unclipped["age_range"]
    from dallebrain.judges.age import AgeJudge

    raw = AgeJudge(judge.tissue, unclipped).predict_from_fractions(odd, ["axial"] * 4, [90.0, -90.0, 70.0, 20.0])
    assert np.allclose(np.clip(raw, low, high), judge.predict_from_fractions(odd, ["axial"] * 4,
                                                                             [90.0, -90.0, 70.0, 20.0]))


def test_age_judge_files_are_checked(age_judge_dir, trained, tmp_path):
    with pytest.raises(ValueError, match="not an age judge folder"):
        load_age_judge(tmp_path, tissue_folder=trained)
    (tmp_path / "age.json").write_text(json.dumps({"coef": []}))
    with pytest.raises(ValueError, match="no intercept, mean, scale"):
        load_age_judge(tmp_path, tissue_folder=trained)
    other = load_tissue_net(trained)
    other.head.bias.data += 1.0
    save_tissue_net(other, tmp_path / "other")
    with pytest.raises(ValueError, match="another tissue judge"):  # coefficients read one segmenter's fractions
        load_age_judge(age_judge_dir, tissue_folder=tmp_path / "other")
    with pytest.raises(ValueError, match="--overwrite"):
        fit_age(age_judge_dir, age_judge_dir, tissue_folder=trained)


def test_judge_age_command(age_judge_dir, trained, phantom_set):
    slices = [str(phantom_set / "slices" / f"s{i}.png") for i in (5, 23)]
    from typer.testing import CliRunner

    from dallebrain.cli import app

    cli = ["judge", "age", *slices, "--weights", str(age_judge_dir), "--tissue", str(trained), "--slice-mm", "20"]
    done = CliRunner().invoke(app, [*cli, "--orientation", "axial", "--json"])
    assert done.exit_code == 0, done.stderr
    results = json.loads(done.stdout)
    assert [r["image"] for r in results] == slices and results[0]["age"] < results[1]["age"]
    bad = CliRunner().invoke(app, [*cli, "--orientation", "oblique"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: orientation") and bad.stderr.count("\n") == 1


def test_shipped_age_judge_reads_the_shipped_tissue_judge(tiny_prepared):
    import pandas as pd

    from dallebrain.data.slicing import load_png

    judge = load_age_judge()  # refuses coefficients fitted on another segmenter than the shipped one
    assert judge.model["training"]["subjects"] >= 20 and judge.model["alpha"] > 0
    table = pd.read_parquet(tiny_prepared / "metadata.parquet")
    rows = table[(table.modality == "T1w") & (table.orientation == "axial") & table.slice_mm.between(0, 30)]
    years = judge.predict(np.stack([load_png(tiny_prepared / p) for p in rows.image_path]), "axial",
                          rows.slice_mm.to_numpy())
    assert years.shape == (len(rows),) and np.isfinite(years).all() and (5 < years).all() and (years < 110).all()
