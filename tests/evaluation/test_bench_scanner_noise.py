"""benchmarks/bench_scanner_noise.py: the spectrum fitted is the power a smoothed copy lacks above the latent grid's
Nyquist frequency (white noise of variance s2 reads s2 per band), the noise it adds has that spectrum, stays on the
brain and depends on the slice's index alone, and bad inputs are refused in one line."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_scanner_noise")


def _brains(n=6, size=96, sigma=0.0, seed=0, ramp=0.2):
    """Smooth discs (a brain with a soft intensity ramp), with white noise of SD sigma on the brain."""
    yy, xx = np.mgrid[:size, :size] - size / 2 + 0.5
    brain = np.hypot(yy, xx) <= size * 0.42
    rng = np.random.default_rng(seed)
    base = np.where(brain, 0.5 + ramp * yy / size, 0.0)
    return np.stack([np.where(brain, base + sigma * rng.standard_normal(base.shape), 0.0)
                     for _ in range(n)]).astype(np.float32)


def test_white_noise_reads_its_variance_in_every_band(bench):
    power = bench.band_power(_brains(sigma=0.02, ramp=0.0))
    # a flat brain with white noise: 4e-4 in every band, up to the periodogram's scatter
    assert np.allclose(power[1:-1], 0.02 ** 2, rtol=0.25)


def test_the_lost_spectrum_starts_at_the_latent_nyquist_and_the_noise_gives_it_back(bench):
    real, smooth = _brains(sigma=0.02, seed=1), _brains(sigma=0.0)
    lost = bench.lost_spectrum(real, smooth, downsampling=4)
    assert np.all(lost[bench.BAND_EDGES[:-1] < 0.125] == 0)
    assert np.allclose(lost[2:-1], 0.02 ** 2, rtol=0.3)
    noisy = bench.with_noise(smooth, lost)
    again = bench.band_power(noisy)
    assert np.allclose(again[2:-1], bench.band_power(real)[2:-1], rtol=0.35)
    background = smooth <= 0.05
    assert np.array_equal(noisy[background], smooth[background])  # the background and outline stay
    assert (noisy[~background] > 0.05).all() and noisy.max() <= 1.0
    assert np.array_equal(bench.with_noise(smooth[:2], lost), noisy[:2])  # slice i's noise from i alone


def test_more_noise_moves_texture_further_from_a_clean_reference(bench):
    clean = _brains(sigma=0.0)
    got = bench.scores(clean, {"close": clean, "far": bench.with_noise(clean, np.full(12, 1e-3))})
    close, far = got["close"], got["far"]
    assert close["glcm"] == pytest.approx(0.0, abs=1e-6) and far["glcm"] > 1.0
    assert far["sharpness"] > 1.0 and close["sharpness"] == pytest.approx(1.0)


def test_bad_inputs_are_refused_in_one_line(bench, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--data", str(tmp_path)])
    assert str(exit_info.value).startswith("error: ") and "not a prepared data set" in str(exit_info.value)
    (tmp_path / "metadata.parquet").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--data", str(tmp_path), "--model", str(tmp_path)])
    assert "not a model folder" in str(exit_info.value)
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--data", str(tmp_path), "--per-contrast", "4"])
    assert "--per-contrast must be at least 16" in str(exit_info.value)
