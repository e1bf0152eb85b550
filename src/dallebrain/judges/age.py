"""The age judge: age from what the tissue judge sees in a slice (its CSF, ventricle, GM and WM fractions) and
where the slice is (plane, level). A ridge regression whose coefficients vary smoothly with the level (Gaussian
bumps every 15 mm per plane), so "a large ventricle fraction" means old at z = +20 mm and nothing at the vertex.
Coefficients are a small JSON file; fitting is in judges/age_fit.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dallebrain.judges.tissue import FRACTIONS
from dallebrain.judges.tissue import SHIPPED as SHIPPED_TISSUE
from dallebrain.vocab import ORIENTATIONS

SHIPPED = SHIPPED_TISSUE.parent / "age"
MODEL_FILE = "age.json"
CENTRES_MM = tuple(float(c) for c in np.arange(-90.0, 91.0, 15.0))
WIDTH_MM = 15.0
VENTRICLE_FLOOR = 0.002  # log(ventricles + floor): ventricles grow multiplicatively with age


def per_image(value, n: int, name: str) -> np.ndarray:
    """A scalar or one value per image, as an array of n."""
    array = np.asarray(value)
    if array.ndim == 0:
        array = np.full(n, array.item())
    if array.shape != (n,):
        raise ValueError(f"{name} must be one value or one per image ({n}), got shape {array.shape}")
    return array


def features(shares: dict[str, np.ndarray], orientation, slice_mm) -> np.ndarray:
    """Design matrix: per plane a block of [1, fractions, log ventricles] x level bumps (zero in other planes)."""
    n = len(shares[FRACTIONS[0]])
    planes = per_image(orientation, n, "orientation").astype(str)
    unknown = sorted(set(planes) - set(ORIENTATIONS))
    if unknown:
        raise ValueError(f"orientation must be one of {', '.join(ORIENTATIONS)}, got {unknown[0]!r}")
    try:
        level = per_image(slice_mm, n, "slice_mm").astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc).splitlines()[0] if "slice_mm" in str(exc) else "slice_mm must be numbers") from None
    if not np.isfinite(level).all():
        raise ValueError("slice_mm must be finite")
    tissue = np.stack([np.ones(n), *(shares[k] for k in FRACTIONS),
                       np.log(shares["ventricles"] + VENTRICLE_FLOOR)], axis=1)
    bumps = np.exp(-0.5 * ((level[:, None] - np.asarray(CENTRES_MM)) / WIDTH_MM) ** 2)
    bumps /= bumps.sum(axis=1, keepdims=True) + 1e-12  # a partition of unity, also beyond the outer bumps
    block = (bumps[:, :, None] * tissue[:, None, :]).reshape(n, -1)
    design = np.zeros((n, len(ORIENTATIONS) * block.shape[1]))
    for p, plane in enumerate(ORIENTATIONS):
        rows = planes == plane
        design[rows, p * block.shape[1]:(p + 1) * block.shape[1]] = block[rows]
    return design


class AgeJudge:
    """`predict(images, orientation, slice_mm)` -> years per image (NaN where the tissue judge sees no brain)."""

    def __init__(self, tissue_judge, model: dict):
        self.tissue = tissue_judge
        self.model = model
        self.coef = np.asarray(model["coef"], dtype=np.float64)
        self.mean, self.scale = np.asarray(model["mean"]), np.asarray(model["scale"])

    def predict_from_fractions(self, shares: dict[str, np.ndarray], orientation, slice_mm) -> np.ndarray:
        design = features(shares, orientation, slice_mm)
        if design.shape[1] != self.coef.size:
            raise ValueError("age judge coefficients do not match this version's features")
        years = (design - self.mean) / self.scale @ self.coef + float(self.model["intercept"])
        # A linear model extrapolates without bound on fractions unlike any training slice (a generated slice
        # with a rare level-plane mix read as 3000 years and swamped the MAE): no answer outside the ages it
        # was fitted on
        if "age_range" in self.model:
            years = np.clip(years, *self.model["age_range"])
        return years

    def predict(self, images, orientation, slice_mm) -> np.ndarray:
        return self.predict_from_fractions(self.tissue.fractions(images), orientation, slice_mm)


def load_age_judge(folder: str | Path | None = None, tissue_folder: str | Path | None = None) -> AgeJudge:
    """The shipped age judge (or a `judge fit-age` folder) over the tissue judge it was fitted on."""
    from dallebrain.judges.tissue import load_tissue_judge

    path = Path(SHIPPED if folder is None else folder) / MODEL_FILE
    if not path.is_file():
        raise ValueError(f"{path.parent}: not an age judge folder (needs {MODEL_FILE})")
    try:
        model = json.loads(path.read_text())
        missing = {"coef", "mean", "scale", "intercept"} - set(model)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable age judge ({type(exc).__name__})") from None
    if missing:
        raise ValueError(f"{path}: unreadable age judge (no {', '.join(sorted(missing))})")
    _check_values(model, path)
    tissue = load_tissue_judge(tissue_folder)
    # The coefficients read one segmenter's fractions: another segmenter's would be judged on a wrong scale.
    if model.get("tissue_sha256") not in (None, tissue_fingerprint(tissue_folder)):
        raise ValueError(f"{path}: fitted on another tissue judge than {tissue_folder or 'the shipped one'}")
    return AgeJudge(tissue, model)


def _check_values(model: dict, path: Path) -> None:
    """The record's numbers, checked when it loads: a hand-edited age.json (a null range, a coefficient list cut
    short) would otherwise fail as a TypeError at the first prediction, at the end of an `evaluate` run."""
    try:
        arrays = [np.asarray(model[k], dtype=np.float64) for k in ("coef", "mean", "scale")]
        numbers = np.asarray([model["intercept"], *model.get("age_range", [0.0, 1.0])], dtype=np.float64)
    except (TypeError, ValueError):
        arrays, numbers = [], np.array([np.nan])
    sizes = {a.shape for a in arrays}
    valid = (len(arrays) == 3 and len(sizes) == 1 and arrays[0].ndim == 1 and arrays[0].size > 0
             and all(np.isfinite(a).all() for a in arrays) and (arrays[2] != 0).all()
             and numbers.shape == (3,) and np.isfinite(numbers).all() and numbers[1] <= numbers[2])
    if not valid:
        raise ValueError(f"{path}: unreadable age judge (coef, mean and scale must be lists of finite numbers of "
                         "one length, intercept a number, age_range two ages)")


def tissue_fingerprint(tissue_folder: str | Path | None = None) -> str:
    """sha256 of a tissue judge's weights file: which segmenter an age judge was fitted on."""
    import hashlib

    from dallebrain.judges.network import WEIGHTS_FILE

    return hashlib.sha256((Path(tissue_folder or SHIPPED_TISSUE) / WEIGHTS_FILE).read_bytes()).hexdigest()
