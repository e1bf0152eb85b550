"""Sharpness inside the brain: where blur shows, whatever its source (the VAE or the diffusion model).

The measure of one slice is its relative gradient energy: the mean gradient magnitude over the brain's interior,
divided by the slice's mean brain intensity.
- Gradient magnitude, because blur is the loss of steep intensity changes (sulci, folia, the grey/white border)
  and a Gaussian blur lowers every gradient; it needs no frequency cut-off tuned to the slice size.
- Inside the brain only: prepare's rule (signal above a share of the slice's top, holes filled, so ventricles
  stay in; anomaly.maps.brain_mask) finds the brain, whose outline is then drawn again at half its median
  intensity and eroded by EDGE_MARGIN_PX. The step from brain to the zero background would otherwise dominate
  the mean and measure the outline rather than the anatomy. Half height, because blur moves a low threshold's
  outline outwards (pulling the blurred step into the "interior": measured, a 1-2 px blur then scored as sharp
  as the original), while a blurred step crosses half its height where the sharp step was.
- Over the mean brain intensity, so a global gain (a darker or brighter contrast rendering) does not count as
  sharpness: gradient and mean both scale with the gain.
A set's sharpness is the mean over its slices; it is reported as the ratio to the real held-out slices at the
same contrast and plane (the real column: matched train slices over the held-out ones, the floor, about 1).
"""

from __future__ import annotations

import numpy as np

EDGE_MARGIN_PX = 3  # the outline's own gradient reaches about this far in at 128x128 (measured: 3 and 4 px agree)
MIN_INTERIOR_PX = 16  # fewer interior pixels (a slice at the brain's tip): no measure (NaN) rather than noise


def interior(image: np.ndarray) -> np.ndarray:
    """The brain's interior: prepare's brain mask, outlined again at half its median intensity, eroded."""
    from scipy import ndimage

    from dallebrain.anomaly.maps import brain_mask

    brain = brain_mask(image)
    if not brain.any():
        return brain
    above = image > 0.5 * float(np.median(image[brain]))
    inside = ndimage.binary_fill_holes(ndimage.binary_opening(above, np.ones((3, 3), bool))) & brain
    return ndimage.binary_erosion(inside, iterations=EDGE_MARGIN_PX)


def slice_sharpness(image: np.ndarray) -> float:
    """Relative gradient energy of one (H, W) slice in [0, 1]; NaN without a measurable brain interior."""
    image = np.asarray(image, dtype=np.float64)
    mask = interior(image)
    if mask.sum() < MIN_INTERIOR_PX:
        return float("nan")
    mean = float(image[mask].mean())
    if mean <= 0:
        return float("nan")
    gy, gx = np.gradient(image)
    return float(np.hypot(gx, gy)[mask].mean() / mean)


def sharpness(images: np.ndarray) -> np.ndarray:
    """Relative gradient energy of each slice of an (N, H, W) set."""
    return np.array([slice_sharpness(x) for x in np.asarray(images)], dtype=np.float64)


def _block(values: np.ndarray, reference: np.ndarray) -> dict:
    """A group's mean sharpness, the real reference's at the same rows, and their ratio."""
    def mean(x):
        x = x[np.isfinite(x)]
        return float(x.mean()) if x.size else None

    value, real = mean(values), mean(reference)
    ratio = value / real if value is not None and real else None
    return {"ratio": ratio, "value": value, "real": real, "n": int(np.isfinite(values).sum())}


def sharpness_column(real: np.ndarray, other: np.ndarray, modality, orientation) -> dict:
    """Per-slice sharpness arrays of the real held-out set and of another set with the same row order (a route's
    slice i was made from held-out caption i, the floor's slice i matches held-out slice i) -> their ratio over
    all slices, per contrast and per contrast and plane."""
    modality, orientation = np.asarray(modality), np.asarray(orientation)
    out = {"all": _block(other, real), "by_contrast": {}, "by_contrast_plane": {}}
    for m in dict.fromkeys(modality.tolist()):
        rows = modality == m
        out["by_contrast"][m] = _block(other[rows], real[rows])
        for plane in dict.fromkeys(orientation[rows].tolist()):
            both = rows & (orientation == plane)
            out["by_contrast_plane"][f"{m} {plane}"] = _block(other[both], real[both])
    return out
