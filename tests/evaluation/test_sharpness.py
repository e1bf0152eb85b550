"""The in-brain sharpness measure: lower for a blurred copy, blind to a global gain, about 1 between real slices
of one contrast and plane (different subjects, matched levels), and grouped per contrast and plane."""

import numpy as np
from scipy import ndimage


def _brain(size: int = 64, seed: int = 0) -> np.ndarray:
    """A disc of textured 'tissue' (smoothed noise around 0.5) on a zero background, like a prepared slice."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.4 * size) ** 2
    texture = 0.5 + 0.6 * ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.0)
    return np.clip(texture, 0.05, 1.0) * disc


def test_a_blurred_slice_is_less_sharp_and_a_gain_does_not_count():
    from dallebrain.evaluation.sharpness import slice_sharpness

    image = _brain()
    blurred = ndimage.gaussian_filter(image, 1.5)
    sharp, soft = slice_sharpness(image), slice_sharpness(blurred)
    assert np.isfinite(sharp) and soft < 0.75 * sharp  # blur removes most of the texture's gradient energy
    assert np.isclose(slice_sharpness(0.5 * image), sharp, rtol=1e-9)  # a darker rendering is not a blurrier one
    assert np.isclose(slice_sharpness(1.8 * image), sharp, rtol=1e-9)  # nor a brighter one (above 1 is fine here)
    # the outline does not count: a flat disc has no sharpness, however hard its edge
    flat = (_brain() > 0) * 0.6
    assert slice_sharpness(flat) < 1e-9
    assert np.isnan(slice_sharpness(np.zeros((64, 64))))  # no brain: no measure rather than 0


def test_sharpness_column_groups_by_contrast_and_plane():
    from dallebrain.evaluation.sharpness import sharpness, sharpness_column

    images = np.stack([_brain(seed=s) for s in range(6)])
    blurred = ndimage.gaussian_filter(images, (0, 1.5, 1.5))
    modality, orientation = ["T1w", "T1w", "T1w", "T2w", "T2w", "T2w"], ["axial", "axial", "coronal"] * 2
    real = sharpness(images)
    column = sharpness_column(real, sharpness(blurred), modality, orientation)
    assert set(column["by_contrast"]) == {"T1w", "T2w"}
    assert set(column["by_contrast_plane"]) == {"T1w axial", "T1w coronal", "T2w axial", "T2w coronal"}
    assert column["by_contrast_plane"]["T1w axial"]["n"] == 2 and column["all"]["n"] == 6
    for block in [column["all"], *column["by_contrast"].values(), *column["by_contrast_plane"].values()]:
        assert block["ratio"] < 0.75 and np.isclose(block["ratio"], block["value"] / block["real"])
    same = sharpness_column(real, real, modality, orientation)
    assert all(b["ratio"] == 1.0 for b in same["by_contrast"].values())


def test_real_over_real_sharpness_is_about_one(tiny_prepared):
    """The floor: train slices matched to held-out ones (same contrast, plane, nearest level; other subjects) are
    about as sharp as the held-out ones, while the held-out slices blurred by one pixel are clearly less sharp.
    The tiny cohort has four subjects, so "about" is their spread (on 40 subjects at 128x128 the floor measured
    0.97 over 300 test slices, and a 1 px blur 0.75)."""
    import pandas as pd

    from dallebrain.evaluation.features import load_slices
    from dallebrain.evaluation.reference import match_train
    from dallebrain.evaluation.sharpness import sharpness, sharpness_column

    table = pd.read_parquet(tiny_prepared / "metadata.parquet")
    train = table[table["split"] == "train"].reset_index(drop=True)
    heldout = table[table["split"] != "train"].reset_index(drop=True)
    floor = train.loc[match_train(train, heldout, 0)]
    images = load_slices(tiny_prepared, heldout["image_path"], progress=False)
    real = sharpness(images)

    def ratio(other: np.ndarray) -> float:
        return sharpness_column(real, sharpness(other), heldout["modality"], heldout["orientation"])["all"]["ratio"]

    floor_ratio = ratio(load_slices(tiny_prepared, floor["image_path"], progress=False))
    blurred_ratio = ratio(ndimage.gaussian_filter(images, (0, 1.0, 1.0)))
    assert 0.8 < floor_ratio < 1.25, floor_ratio
    assert blurred_ratio < 0.8 and abs(np.log(floor_ratio)) < abs(np.log(blurred_ratio)), (floor_ratio, blurred_ratio)
