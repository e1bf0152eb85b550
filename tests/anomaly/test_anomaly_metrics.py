"""Detection scores against hand-computed values."""

import numpy as np
import pytest

from dallebrain.anomaly.maps import brain_mask, finish, slice_score
from dallebrain.anomaly.metrics import (
    auprc,
    auroc,
    best_dice,
    dice,
    healthy_false_positives,
    pixel_metrics,
    slice_auroc,
    threshold_at_fpr,
)


def test_dice_counts_overlap_and_treats_two_empty_masks_as_perfect():
    a = np.array([1, 1, 0, 0], bool)
    b = np.array([1, 0, 1, 0], bool)
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(np.zeros(4, bool), np.zeros(4, bool)) == 1.0
    assert dice(a, np.zeros(4, bool)) == 0.0


def test_best_dice_finds_the_threshold_that_separates_a_perfectly_ranked_lesion():
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    truth = np.array([0, 0, 0, 1, 1], bool)
    best, at = best_dice(scores, truth)
    assert best == pytest.approx(1.0)
    assert 0.3 < at <= 0.8
    # one lesion pixel scored below every healthy one: the best is to take all 5 (Dice 2*2/(5+2)) or the
    # top one only (2*1/(1+2)); the former wins
    best, _ = best_dice(np.array([0.5, 0.6, 0.7, 0.9, 0.1]), truth)
    assert best == pytest.approx(max(4 / 7, 2 / 3))


def test_auprc_and_auroc_match_their_definitions():
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    truth = np.array([1, 0, 1, 0], bool)
    # precision at each true positive: 1/1 and 2/3 -> average precision (1 + 2/3) / 2
    assert auprc(scores, truth) == pytest.approx((1 + 2 / 3) / 2)
    # pairs (positive, negative) ranked right: (0.9>0.8, 0.9>0.1, 0.7<0.8, 0.7>0.1) -> 3/4
    assert auroc(scores, truth) == pytest.approx(0.75)
    assert np.isnan(auroc(scores, np.ones(4, bool)))


def test_pixel_metrics_use_each_slices_own_threshold_and_only_brain_pixels():
    maps = np.zeros((2, 4, 4), np.float32)
    masks = np.zeros((2, 4, 4), bool)
    maps[0, 0, 0], masks[0, 0, 0] = 0.5, True  # found only with slice 0's low threshold
    maps[1, 1, 1], masks[1, 1, 1] = 0.5, True  # missed: slice 1's threshold is higher
    maps[1, 3, 3] = 9.0  # outside the brain: ignored
    brains = np.ones((2, 4, 4), bool)
    brains[1, 3, 3] = False
    m = pixel_metrics(maps, masks, brains, [0.4, 0.6])
    assert m["dice"] == pytest.approx(2 * 1 / (1 + 2))
    assert m["dice_best"] == pytest.approx(1.0)
    assert m["lesion_px"] == 2 and m["brain_px"] == 31


def test_healthy_false_positives_and_threshold_at_a_stated_rate():
    rng = np.random.default_rng(0)
    healthy = rng.normal(size=100_000)
    t = threshold_at_fpr(healthy, 0.05)
    assert t == pytest.approx(1.645, abs=0.02)  # the normal 95th percentile
    maps = np.zeros((3, 10, 10), np.float32)
    maps[0, :3, :3] = 2.0  # 9 px above: a detection
    maps[1, 0, 0] = 2.0  # 1 px: below the minimum size of a detection
    fp = healthy_false_positives(maps, np.ones_like(maps, bool), 1.0)
    assert fp["pixel_fpr"] == pytest.approx(10 / 300)
    assert fp["slices_flagged"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="false-positive rate"):
        threshold_at_fpr(healthy, 0.0)


def test_slice_auroc_ranks_lesion_slices_against_healthy_ones():
    assert slice_auroc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert slice_auroc([1.0], [2.0]) == 0.0


def test_maps_are_smoothed_kept_inside_the_shrunk_brain_and_scored_by_their_top_pixels():
    image = np.zeros((32, 32), np.float32)
    image[4:28, 4:28] = 0.8
    raw = np.zeros_like(image)
    raw[16, 16] = -10.0  # a signed difference counts by its size
    raw[4, 4] = 10.0  # on the brain's edge: inside the 2-pixel margin, dropped
    out = finish(raw, image)
    assert out[16, 16] > 0 and out[4, 4] == 0 and out[0, 0] == 0
    assert brain_mask(image).sum() == 24 * 24
    assert brain_mask(image, 2).sum() == 20 * 20
    flat = np.arange(100, dtype=np.float32).reshape(10, 10)
    assert slice_score(flat, top=3) == pytest.approx((97 + 98 + 99) / 3)
