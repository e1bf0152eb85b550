"""benchmarks/bench_texture_outline.py: the rim removed is each slice's own outer brain ring (holes inside the brain
kept as they are), the texture rows are evaluate's GLCM distance per contrast, and a folder that is not a report
with its reconstruction column is refused in one line."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_texture_outline")


def _disc(size=32, radius=10.0, value=0.5):
    yy, xx = np.mgrid[:size, :size] - size / 2 + 0.5
    image = np.where(np.hypot(yy, xx) <= radius, value, 0.0).astype(np.float32)
    image[15:17, 15:17] = 0.0  # a dark ventricle inside the brain: not an outline
    return image


def test_the_rim_removed_is_the_outer_ring_of_each_slices_own_brain(bench):
    images = np.stack([_disc(), _disc(radius=6.0, value=0.8)])
    out = bench.without_rim(images, 2, 0.05)
    assert np.array_equal(images[0], _disc())  # the input is not touched
    for before, after in zip(images, out, strict=True):
        brain = before > 0.05
        kept = after > 0.05
        assert kept.sum() < brain.sum() and not (kept & ~brain).any()
        lost = brain & ~kept
        # every pixel lost lies within 2 px of the background outside the disc, none deeper inside
        ys, xs = np.nonzero(lost)
        radius = np.hypot(ys - 15.5, xs - 15.5)
        assert radius.min() > (before > 0.05).sum() ** 0.5 / np.sqrt(np.pi) - 3
        assert after[15, 15] == 0.0 and after[14, 14] == before[14, 14]  # the ventricle's own edge stays
    assert np.array_equal(bench.without_rim(images, 0, 0.05), images)


def test_texture_rows_are_zero_for_the_real_slices_and_grow_with_blur(bench):
    from scipy import ndimage

    rng = np.random.default_rng(0)
    real = np.stack([_disc() * (0.6 + 0.4 * rng.random((32, 32))) for _ in range(12)]).astype(np.float32)
    modality = np.array(["T1w"] * 6 + ["T2w"] * 6)
    blurred = np.stack([ndimage.gaussian_filter(x, 1.0) for x in real]).astype(np.float32)
    rows = bench.texture_rows(real, {"same": real, "blurred": blurred}, modality, 2)
    assert set(rows) == {"T1w", "T2w"}
    for contrast in rows.values():
        assert contrast["same"] == pytest.approx(0.0, abs=1e-6) and contrast["blurred"] > 1.0


def test_a_folder_that_is_not_a_report_is_refused_in_one_line(bench, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--report", str(tmp_path), "--data", str(tmp_path)])
    message = str(exit_info.value)
    assert message.startswith("error: ") and "missing metrics.json, samples_ldm.npz" in message
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--report", str(tmp_path), "--data", str(tmp_path), "--rim", "0"])
    assert "--rim must be at least 1" in str(exit_info.value)
