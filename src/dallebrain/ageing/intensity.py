"""Session-to-session intensity non-uniformity is not ageing. Two sessions of one person differ by a smooth
multiplicative field (bias field, coil, normalisation) as well as by anatomy; measured on the simulated cohort,
that smooth field is most of the squared difference between sessions, and a network trained on raw follow-ups
spent its capacity on it and learned no anatomy (400 steps: 3 % of the ventricle change). The follow-up is
therefore brought under the source's field before training: a quadratic surface fitted to log(follow-up / source)
over tissue pixels, refitted without the worst-fitting fifth (the pixels that changed with age), divided out."""

from __future__ import annotations

import numpy as np

TISSUE = 0.15  # both slices above this (prepare's scale, 0..1): inside the brain, not CSF-dark everywhere
MIN_PIXELS = 50


def _design(shape: tuple[int, int]) -> np.ndarray:
    y, x = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    y, x = (y / shape[0] - 0.5).ravel(), (x / shape[1] - 0.5).ravel()
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)


def match_session_field(source: np.ndarray, follow_up: np.ndarray) -> np.ndarray:
    """The follow-up [H, W] under the source's smooth intensity field (clipped to [0, 1])."""
    design = _design(source.shape)
    keep = ((source > TISSUE) & (follow_up > TISSUE)).ravel()
    if keep.sum() < MIN_PIXELS:
        return follow_up
    ratio = np.log(follow_up.ravel()[keep] / source.ravel()[keep])
    rows = design[keep]
    use = np.ones(len(ratio), bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(rows[use], ratio[use], rcond=None)
        error = np.abs(rows @ coef - ratio)
        use = error <= np.quantile(error, 0.8)
    field = np.exp(design @ coef).reshape(source.shape)
    return np.clip(follow_up / field, 0, 1).astype(np.float32)
