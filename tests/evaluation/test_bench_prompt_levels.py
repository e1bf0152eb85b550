"""benchmarks/bench_prompt_levels.py: every prompt names the plane and level it is scored against, and the
scores are the share inside a landmark's range and the mean error in mm."""

import numpy as np
import pytest

from dallebrain.data.prompts import parse_prompt


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_prompt_levels")


def test_each_prompt_parses_to_the_plane_and_level_it_is_scored_against(bench):
    rows = bench.prompts()
    assert {r["plane"] for r in rows} == {"axial", "coronal", "sagittal"}
    for r in rows:
        fields = parse_prompt(r["prompt"])
        assert fields.orientation == r["plane"], r["prompt"]
        level = abs(fields.slice_mm) if r["plane"] == "sagittal" else fields.slice_mm
        if r["kind"] == "mm":
            assert level == r["target"], r["prompt"]
        else:  # the parser's centre of a landmark lies in the landmark's range
            assert r["low"] <= level < r["high"], r["prompt"]


def test_scores_are_range_shares_and_mm_errors(bench):
    rows = [{"plane": p, "kind": "landmark", "low": 10.0, "high": 20.0} for p in bench.AXIS] + \
           [{"plane": p, "kind": "mm", "target": 5.0} for p in bench.AXIS]
    # two seeds per prompt: landmark slices at 15 (in) and 25 (out); explicit ones 2 mm and 4 mm off
    levels = np.array([[15.0, 25.0]] * 3 + [[7.0, 1.0]] * 3)
    scores = bench.score(rows, levels.ravel(), seeds=2)
    for plane in bench.AXIS:
        assert scores[f"{plane} landmark in range"] == pytest.approx(0.5)
        assert scores[f"{plane} mm error"] == pytest.approx(3.0)


def test_sweep_prompts_parse_to_their_level(bench):
    for mm in bench.SWEEP_MM:
        fields = parse_prompt(bench.sweep_prompt("T1-weighted", mm))
        assert (fields.orientation, fields.slice_mm, fields.modality) == ("axial", mm, "T1w")


def test_the_staircase_counts_steps_the_judged_level_did_not_follow(bench):
    levels = [18.0, 21.0, 24.0, 27.0]  # 12 mm bands: 18 -> 21 inside one, 21 -> 24 across an edge, 24 -> 27 inside
    judged = np.array([[16.5, 16.5], [16.5, 16.5], [22.5, 22.5], [27.0, 27.0]])  # stuck once, then followed
    out = bench.staircase(levels, judged, band_mm=12.0)
    assert out["judged_mean"] == [16.5, 16.5, 22.5, 27.0]
    assert out["stuck_inside_band"] == pytest.approx(0.5) and out["stuck_across_bands"] == 0.0
    assert out["mae_mm"] == pytest.approx((1.5 + 4.5 + 1.5 + 0.0) / 4)
    assert bench.staircase([18.0, 21.0], judged[:2], band_mm=12.0)["stuck_across_bands"] is None
