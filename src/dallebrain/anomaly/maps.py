"""From raw per-pixel differences to anomaly maps, slice scores and masks.

Every method's raw map goes through the same steps, so methods differ only in what they compare: a light
Gaussian smoothing (a lesion is a region, single-pixel noise is not; Baur et al. 2021 filter the same way), and
zero outside the brain shrunk by a margin (the model's blur at the brain's edge is the largest healthy error of
every method, and lesions seldom touch the edge).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SMOOTH_PX = 1.0
EDGE_MARGIN_PX = 2
TOP_PIXELS = 10  # a slice's score: the mean of its highest map values (a small lesion still counts)


def brain_mask(image: np.ndarray, margin_px: int = 0) -> np.ndarray:
    """Brain pixels of a skull-stripped slice (signal above 2 % of its top, holes filled: dark ventricles and
    FLAIR-nulled CSF stay in), shrunk by `margin_px`."""
    top = float(np.percentile(image, 99.5)) if image.size else 0.0
    if top <= 0:
        return np.zeros(image.shape, bool)
    mask = ndimage.binary_fill_holes(ndimage.binary_opening(image > 0.02 * top, np.ones((3, 3), bool)))
    if margin_px:
        mask = ndimage.binary_erosion(mask, iterations=margin_px)
    return mask


def finish(raw: np.ndarray, image: np.ndarray, smooth_px: float = SMOOTH_PX,
           margin_px: int = EDGE_MARGIN_PX) -> np.ndarray:
    """A raw (H, W) difference map smoothed and kept inside the brain (float32, >= 0)."""
    out = ndimage.gaussian_filter(np.abs(raw).astype(np.float32), smooth_px) if smooth_px > 0 else np.abs(raw)
    return (out * brain_mask(image, margin_px)).astype(np.float32)


def slice_score(anomaly_map: np.ndarray, top: int = TOP_PIXELS) -> float:
    """Mean of the `top` highest values of a finished map."""
    flat = anomaly_map.ravel()
    k = min(top, flat.size)
    return float(np.partition(flat, flat.size - k)[flat.size - k:].mean())


def upsample(latent_map: np.ndarray, size: int) -> np.ndarray:
    """A (h, w) latent-resolution map at (size, size), bilinear."""
    return ndimage.zoom(latent_map.astype(np.float32), size / latent_map.shape[-1], order=1).astype(np.float32)
