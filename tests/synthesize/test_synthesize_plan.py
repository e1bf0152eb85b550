"""The attribute mix and the plan of a synthetic data set: options parsed with one-line refusals, explicit mixes
drawn at their weights, `--like` drawing the joint distribution of a train split, slice i the same wherever
it is planned."""

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from dallebrain.data.grid import prepared_grid
from dallebrain.data.prompts import parse_prompt
from dallebrain.synthesize.mix import parse_mix
from dallebrain.synthesize.options import SynthesisOptions
from dallebrain.synthesize.plan import LikeSampler, MixSampler, brain_levels, plan_slice

GRID = prepared_grid(64)


@pytest.mark.parametrize("kwargs, message", [
    ({"ages": "90-20"}, "--ages"),
    ({"ages": "20-130"}, "--ages"),
    ({"contrasts": "T1w,DWI"}, "unknown contrast 'DWI'"),
    ({"contrasts": "T1w,t1"}, "listed twice"),
    ({"sexes": "F=-1,M"}, "positive"),
    ({"sexes": "F=x"}, "not a number"),
    ({"planes": ""}, "empty"),
    ({"levels": "40:-20"}, "runs downwards"),
    ({"levels": "pons"}, "--levels"),
    ({"field_strengths": "50"}, "0.1-12 T"),
])
def test_bad_mix_options_are_refused_in_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_mix(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "--n must be"),
    ({"batch_size": 65}, "--batch-size"),
    ({"precision": "fp8"}, "--precision"),
    ({"reject_off_prompt": True}, "needs a judge"),
    ({"like": Path("/no/such")}, "either as --like"),
    ({"mix": None, "like": Path("/no/such")}, "--like: not a prepared data set"),
    ({"seed": -1}, r"seed.*must be between 0"),
    ({"steps": 0}, "--steps"),
])
def test_bad_settings_are_refused_before_anything_runs(kwargs, message, tmp_path):
    options = SynthesisOptions(**({"n": 4, "out": tmp_path / "x", "mix": parse_mix()} | kwargs))
    with pytest.raises(ValueError, match=message):
        options.check()
    assert not (tmp_path / "x").exists()


def test_explicit_mix_is_drawn_at_its_weights_and_the_prompt_says_it():
    mix = parse_mix(contrasts="T1w=3,FLAIR=1", planes="axial", levels="-10:20", ages="30-40", sexes="F")
    sampler = MixSampler(mix, GRID)
    planned = [plan_slice(sampler, 11, i) for i in range(400)]
    contrasts = Counter(p.facts.modality for p in planned)
    assert set(contrasts) == {"T1w", "FLAIR"} and abs(contrasts["T1w"] / 400 - 0.75) < 0.08
    lattice = {level for _, level, _ in brain_levels(GRID, "axial")}
    for p in planned:
        f = p.facts
        assert f.orientation == "axial" and -10 <= f.slice_mm <= 20 and f.slice_mm in lattice
        assert 30 <= f.age <= 40 and f.sex == "F" and f.field_strength in (1.5, 3.0)
        asked = parse_prompt(p.prompt)
        assert (asked.modality, asked.orientation, asked.age, asked.sex) == (f.modality, "axial", f.age, "F")
        assert asked.slice_mm == pytest.approx(f.slice_mm)
    assert [p.seed for p in planned] == list(range(11, 411))
    splits = Counter(p.split for p in planned)
    assert abs(splits["train"] / 400 - 0.8) < 0.08 and splits["val"] and splits["test"]


def test_slice_i_is_the_same_whenever_and_wherever_it_is_planned():
    sampler = MixSampler(parse_mix(), GRID)
    first = [plan_slice(sampler, 7, i) for i in (0, 1, 500, 99_999)]
    again = [plan_slice(MixSampler(parse_mix(), GRID), 7, i) for i in (99_999, 500, 1, 0)][::-1]
    assert first == again
    assert len({p.prompt for p in first}) > 1  # and slices differ from each other
    assert plan_slice(sampler, 8, 0) != first[0]


def test_like_draws_the_joint_distribution_of_the_train_split_only(tiny_prepared):
    table = pd.read_parquet(tiny_prepared / "metadata.parquet")
    train, held = table[table["split"] == "train"], table[table["split"] != "train"]
    keys = ["modality", "orientation", "slice_mm", "age", "sex", "field_strength"]
    train_rows = set(map(tuple, train[keys].itertuples(index=False)))
    sampler = LikeSampler(tiny_prepared, GRID)
    planned = [plan_slice(sampler, 3, i) for i in range(300)]
    for p in planned:
        f = p.facts
        assert (f.modality, f.orientation, f.slice_mm, f.age, f.sex, f.field_strength) in train_rows
    held_ages = set(held["age"]) - set(train["age"])
    assert held_ages and not held_ages & {p.facts.age for p in planned}
    share = Counter(p.facts.orientation for p in planned)
    expected = train["orientation"].value_counts(normalize=True)
    for orientation, fraction in expected.items():
        assert abs(share[orientation] / 300 - fraction) < 0.1
