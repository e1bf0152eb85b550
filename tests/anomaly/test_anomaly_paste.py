"""Pasted lesions: exact masks, the simulator's appearance per contrast, nothing changed outside."""

import numpy as np
import pytest
from scipy import ndimage

from dallebrain.anomaly.paste import lesion_contrast, paste_lesion, slice_maps
from dallebrain.data.grid import prepared_grid

GRID = prepared_grid(64)
INDEX = GRID.index_of("axial", 18.0)  # through the lateral ventricles


def _healthy_slice(modality: str) -> np.ndarray:
    """A noiseless slice from the template's tissue maps with this contrast's grey/white order."""
    maps = slice_maps(GRID, "axial", INDEX)
    gm, wm = {"T2w": (0.8, 0.6), "T1w": (0.55, 0.8), "FLAIR": (0.8, 0.65)}[modality]
    return np.clip(gm * maps.gm + wm * maps.wm, 0, 1).astype(np.float32)


def test_relaxation_gives_each_lesion_its_published_look():
    rng = np.random.default_rng(0)
    for field in (1.5, 3.0):
        assert lesion_contrast("wmh", "FLAIR", field, rng) > 1.2  # bright on FLAIR
        assert lesion_contrast("wmh", "T2w", field, rng) > 1.2  # and on T2w
        assert lesion_contrast("wmh", "T1w", field, rng) < 0.95  # dark-ish on T1w
        assert lesion_contrast("cavity", "FLAIR", field, rng) < 0.5  # CSF-like cavity nulled on FLAIR
        assert lesion_contrast("necrosis", "T1w", field, rng) < 0.8


@pytest.mark.parametrize("kind", ["tumour", "wmh", "ms", "infarct"])
def test_a_pasted_lesion_has_an_exact_mask_and_leaves_the_rest_of_the_slice_alone(kind):
    image = _healthy_slice("T2w")
    out, mask = paste_lesion(image, kind, "T2w", GRID, "axial", INDEX, np.random.default_rng(3), 3.0)
    assert mask.any(), kind
    labels = {"tumour": {4, 5, 6}, "wmh": {1}, "ms": {2}, "infarct": {3}}[kind]
    assert set(np.unique(mask[mask > 0]).tolist()) <= labels
    far = ~ndimage.binary_dilation(mask > 0, iterations=2)  # partial-volume edge pixels may change a little
    assert np.array_equal(out[far], image[far])
    assert np.abs(out[mask > 0] - image[mask > 0]).mean() > 0.05  # the lesion is visible where the mask says


def test_a_tumour_is_bright_on_t2_and_dark_on_t1():
    for modality, brighter in (("T2w", True), ("T1w", False)):
        image = _healthy_slice(modality)
        out, mask = paste_lesion(image, "tumour", modality, GRID, "axial", INDEX, np.random.default_rng(1), 1.5)
        solid = mask == 4
        assert solid.any()
        assert (out[solid].mean() > image[solid].mean()) == brighter


def test_unknown_lesion_types_are_refused():
    with pytest.raises(ValueError, match="unknown lesion type"):
        paste_lesion(_healthy_slice("T2w"), "glioma", "T2w", GRID, "axial", INDEX, np.random.default_rng(0))
