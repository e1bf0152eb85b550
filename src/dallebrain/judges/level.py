"""The level judge: where along its plane's axis a slice lies in MNI space, read from its anatomy.

No training of its own: the tissue judge segments the slice (CSF, GM, WM whatever the contrast) and the level is
the one whose MNI152 tissue-prior slices (data/templates.tissue_priors, on the same prepared grid) correlate
best with those probability maps. Prepared slices are affinely registered to MNI, so the anatomy at a level is
the template's up to a subject's shape. A sagittal slice cannot say which hemisphere it is in (the two are
mirror images), so sagittal levels are estimated as |x| and reported on the right (x >= 0), `side_known` False.
Its error on real held-out slices is printed by benchmarks/bench_level_judge.py.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from dallebrain.vocab import ORIENTATIONS

POOL = 4  # compare at a quarter of the prepared size (32 px): the shapes carry the level, not the texture
MARGIN_MM = 6.0  # search levels where the template has at least this much brain beyond the slice


def _pool(maps: np.ndarray) -> np.ndarray:
    n, h, w = maps.shape[0], maps.shape[-2] // POOL * POOL, maps.shape[-1] // POOL * POOL
    return maps[..., :h, :w].reshape(n, -1, h // POOL, POOL, w // POOL, POOL).mean(axis=(3, 5))


@lru_cache(maxsize=8)
def _references(orientation: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(levels in mm, pooled CSF/GM/WM prior slices [L, 3, h, w] normalised for correlation) of one plane."""
    from dallebrain.data.grid import NORMAL_AXIS, extract_slice, prepared_grid
    from dallebrain.data.templates import tissue_priors

    grid = prepared_grid(size)
    priors = tissue_priors(grid)
    axis = NORMAL_AXIS[orientation]
    levels, maps = [], []
    for index in range(grid.shape[axis]):
        stack = np.stack([extract_slice(v, orientation, index) for v in (priors.csf, priors.gm, priors.wm)])
        if stack[1:].sum() < 50:  # hardly any brain in this plane
            continue
        level = grid.level_mm(orientation, index)
        if orientation == "sagittal" and level < 0:
            continue  # mirror images of the right side: see the module docstring
        levels.append(level)
        maps.append(stack)
    pooled = _pool(np.stack(maps))
    return np.asarray(levels), _standardise(pooled)


def _standardise(maps: np.ndarray) -> np.ndarray:
    flat = maps.reshape(len(maps), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-8)


def estimate_levels(images, orientations: list[str], judge=None) -> np.ndarray:
    """Estimated MNI level (mm) of each slice, along its plane's axis; sagittal as |x|."""
    from dallebrain.judges.network import CLASSES
    from dallebrain.judges.tissue import check_images

    array = check_images(images)
    if len(orientations) != len(array):
        raise ValueError(f"one orientation per image: got {len(orientations)} for {len(array)} images")
    unknown = sorted(set(orientations) - set(ORIENTATIONS))
    if unknown:
        raise ValueError(f"unknown orientation {unknown[0]!r}: choose from {', '.join(ORIENTATIONS)}")
    judge = judge or _shipped_judge()
    probs = judge.probabilities(array)
    csf = probs[:, CLASSES.index("csf")] + probs[:, CLASSES.index("ventricles")]
    maps = np.stack([csf, probs[:, CLASSES.index("gm")], probs[:, CLASSES.index("wm")]], axis=1)
    out = np.empty(len(array))
    for orientation in set(orientations):
        rows = [i for i, o in enumerate(orientations) if o == orientation]
        levels, refs = _references(orientation, array.shape[-1])
        scores = _standardise(_pool(maps[rows])) @ refs.T  # correlation with every level's template slices
        out[rows] = levels[scores.argmax(axis=1)]
    return out


@lru_cache(maxsize=1)
def _shipped_judge():
    from dallebrain.judges.tissue import load_tissue_judge

    return load_tissue_judge()
