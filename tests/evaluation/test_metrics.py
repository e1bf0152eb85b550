"""Every evaluation metric on known cases: identical sets give about zero, perturbed sets give more, and more
for a stronger perturbation; the privacy check finds planted copies and passes a clean set."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from dallebrain.evaluation import metrics as M


def phantoms(n: int, size: int = 48, seed: int = 0) -> np.ndarray:
    """Brain-like test slices: an ellipse of smooth random texture on a zero background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    out = np.zeros((n, size, size), dtype=np.float32)
    for i in range(n):
        a, b = rng.uniform(0.3, 0.42, 2)
        inside = (xx / a) ** 2 + (yy / b) ** 2 < 1
        texture = gaussian_filter(rng.normal(size=(size, size)), 1.5)
        texture = 0.55 + 0.25 * texture / texture.std()
        out[i] = np.where(inside, np.clip(texture, 0.06, 1), 0)
    return out


def gaussian_features(n=300, d=8, shift=0.0, scale=1.0, seed=0):
    return np.random.default_rng(seed).normal(shift, scale, (n, d))


def test_frechet_zero_for_identical_sets_and_grows_with_the_shift():
    x = gaussian_features()
    assert M.frechet_distance(x, x) == pytest.approx(0, abs=1e-6)
    values = [M.frechet_distance(x, x + s) for s in (0.25, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[0] > 0
    # a pure mean shift adds exactly |shift|^2 per dimension
    assert values[2] == pytest.approx(8 * 1.0 ** 2, rel=1e-6)
    wider = [M.frechet_distance(x, x * s) for s in (1.0, 1.5, 2.0)]
    assert wider[0] == pytest.approx(0, abs=1e-6) and wider[1] < wider[2]


def test_frechet_is_finite_when_there_are_fewer_samples_than_dimensions():
    x, y = gaussian_features(n=6, d=32), gaussian_features(n=6, d=32, seed=1)
    assert np.isfinite(M.frechet_distance(x, y)) and M.frechet_distance(x, y) > 0


def test_kid_is_unbiased_near_zero_for_one_distribution_and_grows_with_the_shift():
    a, b = gaussian_features(seed=0), gaussian_features(seed=1)
    same = M.kid(a, b)
    shifted = [M.kid(a, gaussian_features(seed=1, shift=s)) for s in (0.25, 0.5, 1.0)]
    assert abs(same) < 0.1 * shifted[0]
    assert shifted == sorted(shifted)
    # subsets of a large set give the same answer within noise
    big_a, big_b = gaussian_features(n=600, seed=2), gaussian_features(n=600, seed=3, shift=0.5)
    assert M.kid(big_a, big_b, subset_size=200, subsets=20) == pytest.approx(M.kid(big_a, big_b), rel=0.2)


def test_prdc_one_for_identical_sets_and_lower_for_a_shifted_set():
    x = gaussian_features(n=200)
    same = M.prdc(x, x, k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] >= 1.0
    other = M.prdc(x, gaussian_features(n=200, seed=1), k=5)  # a second sample of the same distribution
    assert other["precision"] > 0.8 and other["recall"] > 0.8 and 0.7 < other["density"] < 1.3
    shifted = M.prdc(x, x + 1.5, k=5)
    for key in ("precision", "recall", "density", "coverage"):
        assert shifted[key] < 0.6 * other[key], key
    assert M.prdc(x[:4], x[:4], k=5)["k"] == 3  # k lowered for a small set


def test_one_nn_accuracy_half_for_one_distribution_one_for_separated_sets():
    a, b = gaussian_features(seed=0), gaussian_features(seed=1)
    assert 0.35 < M.one_nn_accuracy(a, b) < 0.65
    assert M.one_nn_accuracy(a, b + 10) == 1.0


def test_histogram_distances_zero_for_identical_and_monotone_in_a_brightness_shift():
    x = phantoms(12)
    same = M.histogram_distances(x, x)
    assert same["wasserstein1"] == pytest.approx(0, abs=1e-12) and same["jensen_shannon"] == pytest.approx(0, abs=1e-12)
    inside = x > 0
    shifted = [M.histogram_distances(x, np.where(inside, np.clip(x + s, 0, 1), 0)) for s in (0.02, 0.05, 0.1, 0.2)]
    w1 = [d["wasserstein1"] for d in shifted]
    js = [d["jensen_shannon"] for d in shifted]
    assert w1 == sorted(w1) and js == sorted(js)
    assert w1[2] == pytest.approx(0.1, abs=0.02)  # W1 of a shift is the shift
    assert all(0 <= j <= 1 for j in js)


def test_histograms_ignore_the_background():
    x = phantoms(6)
    noisy_background = x + np.where(x > 0, 0, 0.03).astype(np.float32)  # below the brain threshold
    assert M.histogram_distances(x, noisy_background)["wasserstein1"] == pytest.approx(0, abs=1e-12)


def test_brain_fraction_counts_pixels_above_the_threshold():
    images = np.zeros((2, 10, 10), dtype=np.float32)
    images[0, :5] = 0.5
    images[1, :2] = M.BRAIN_THRESHOLD / 2  # too dark to count
    np.testing.assert_allclose(M.brain_fraction(images), [0.5, 0.0])


def test_glcm_features_and_their_distances_grow_with_blur_and_noise():
    x = phantoms(16)
    names = M.glcm_feature_names()
    f = M.glcm_features(x)
    assert f.shape == (16, len(names)) and np.isfinite(f).all()
    assert M.standardised_frechet(f, f) == pytest.approx(0, abs=1e-6)
    assert max(M.ks_statistics(f, f, names).values()) == 0
    inside = x > 0
    blurred = [M.standardised_frechet(f, M.glcm_features(np.where(inside, gaussian_filter(x, (0, s, s)), 0)))
               for s in (0.5, 1.0, 2.0)]
    assert blurred == sorted(blurred) and blurred[0] > 0
    rng = np.random.default_rng(0)
    noised = [M.glcm_features(np.where(inside, np.clip(x + rng.normal(0, s, x.shape), 0.06, 1), 0))
              for s in (0.02, 0.05, 0.1)]
    fd = [M.standardised_frechet(f, g) for g in noised]
    ks = [np.mean(list(M.ks_statistics(f, g, names).values())) for g in noised]
    assert fd == sorted(fd) and ks == sorted(ks)


def test_ms_ssim_one_for_identical_images_and_falls_with_noise_and_blur():
    x = phantoms(4, size=64)
    np.testing.assert_allclose(M.ms_ssim(x, x).numpy(), 1.0, atol=1e-5)
    rng = np.random.default_rng(0)
    noise = [float(M.ms_ssim(x, np.clip(x + rng.normal(0, s, x.shape), 0, 1)).mean()) for s in (0.02, 0.05, 0.1)]
    blur = [float(M.ms_ssim(x, gaussian_filter(x, (0, s, s))).mean()) for s in (0.5, 1.0, 2.0)]
    assert noise == sorted(noise, reverse=True) and blur == sorted(blur, reverse=True)
    assert noise[0] < 1 and blur[0] < 1
    # symmetric, and a set of copies is "collapsed" while distinct phantoms are not
    np.testing.assert_allclose(M.ms_ssim(x[:2], x[2:]).numpy(), M.ms_ssim(x[2:], x[:2]).numpy(), atol=1e-6)
    assert M.mean_pairwise_ms_ssim(np.repeat(x[:1], 3, axis=0)) == pytest.approx(1.0, abs=1e-5)
    assert M.mean_pairwise_ms_ssim(x) < 0.9
    assert M.mean_pairwise_ms_ssim(x[:1]) is None
    with pytest.raises(ValueError, match="window"):
        M.ms_ssim(x[:, :5, :5], x[:, :5, :5])


def test_nearest_neighbours_in_chunks_match_the_full_search():
    rng = np.random.default_rng(0)
    ref = M.normalise_rows(rng.normal(size=(50, 6)))
    q = M.normalise_rows(rng.normal(size=(7, 6)))
    sims, idx = M.nearest_neighbours(q, ref, k=4, chunk=8)
    full = q @ ref.T
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=1)[:, :4])
    np.testing.assert_allclose(sims, np.take_along_axis(full, idx, axis=1), rtol=1e-6)


def _privacy(queries, reference_vectors, heldout_sims):
    sims, _ = M.nearest_neighbours(M.correlation_vectors(M.bandpass(queries)), reference_vectors, 6)
    return M.memorisation(sims, heldout_sims)


def test_privacy_check_finds_planted_copies_and_passes_a_clean_set(tiny_prepared):
    from dallebrain.data.dataset import SliceDataset
    from dallebrain.evaluation.features import load_slices

    def split(name, rows=None):
        table = SliceDataset(tiny_prepared, name).table
        picked = table if rows is None else table.sample(rows, random_state=0)
        return load_slices(tiny_prepared, picked["image_path"])

    train, heldout, clean = split("train"), split("test", 48), split("val", 24)
    reference = M.correlation_vectors(M.bandpass(train))
    heldout_sims, _ = M.nearest_neighbours(M.correlation_vectors(M.bandpass(heldout)), reference, 6)

    passed = _privacy(clean, reference, heldout_sims)
    assert passed["near_copies"] == 0 and passed["memorisation_rate"] == 0
    assert passed["near_copies_real_heldout"] == 0  # unseen subjects are never copies

    rng = np.random.default_rng(1)
    planted = clean.copy()
    where = [3, 10, 17]
    for i, j in zip(where, rng.choice(len(train), 3, replace=False), strict=True):
        planted[i] = np.clip(train[j] + rng.normal(0, 0.02, train[j].shape) * (train[j] > 0), 0, 1)
    found = _privacy(planted, reference, heldout_sims)
    assert found["near_copies"] == 3 and found["near_copy_indices"] == where
    assert found["memorisation_rate"] == pytest.approx(3 / 24)
    assert found["nearest_similarity"]["max"] > passed["nearest_similarity"]["max"]
