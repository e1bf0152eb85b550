"""Prompt adherence: do slices show what was asked?

The attribute predictors are the heads of the evaluation encoder (features.py), trained on the real train
split only. Real held-out slices scored against their own captions give the ceiling; synthetic slices are
scored against what their prompt asked (parse_prompt), the very same captions, so the two are measured alike.
A field the prompt is silent on is left out of that field's score.
"""

from __future__ import annotations

import numpy as np

from dallebrain.evaluation.features import SEXES, Targets
from dallebrain.vocab import MODALITIES, ORIENTATIONS

CLASS_FIELDS = {"contrast": MODALITIES, "orientation": ORIENTATIONS, "sex": SEXES}
REGRESSION_FIELDS = {"level_mm": "level_mm", "age": "age"}


def score_attributes(predictions: dict[str, np.ndarray], targets: Targets) -> dict[str, dict]:
    """Per attribute: accuracy (classes) or mean absolute error (level in mm, age in years), with the number
    of slices whose prompt stated it."""
    out: dict[str, dict] = {}
    for name, options in CLASS_FIELDS.items():
        truth = getattr(targets, name)
        known = truth >= 0
        if not known.any():
            out[name] = {"accuracy": None, "n": 0}
            continue
        predicted = np.array([options.index(p) for p in predictions[name]])
        out[name] = {"accuracy": float((predicted[known] == truth[known]).mean()), "n": int(known.sum())}
    for name in REGRESSION_FIELDS:
        truth = getattr(targets, name)
        known = np.isfinite(truth)
        if not known.any():
            out[name] = {"mae": None, "n": 0}
            continue
        out[name] = {"mae": float(np.abs(predictions[name][known] - truth[known]).mean()), "n": int(known.sum())}
    return out


def chance_scores(train: Targets, heldout: Targets) -> dict[str, dict]:
    """What a predictor that ignores the image scores on the held-out targets: the train split's majority
    class, or its mean: the floor under the ceiling."""
    predictions: dict[str, np.ndarray] = {}
    for name, options in CLASS_FIELDS.items():
        values = getattr(train, name)
        values = values[values >= 0]
        majority = int(np.bincount(values).argmax()) if values.size else 0
        predictions[name] = np.array([options[majority]] * len(getattr(heldout, name)))
    for name in REGRESSION_FIELDS:
        values = getattr(train, name)
        values = values[np.isfinite(values)]
        predictions[name] = np.full(len(getattr(heldout, name)), values.mean() if values.size else np.nan)
    return score_attributes(predictions, heldout)


# --- brain volume against age ---------------------------------------------------------------------------------------


def position_keys(modality, orientation, slice_mm) -> list[tuple]:
    return [(m, o, round(float(s), 1)) for m, o, s in zip(modality, orientation, slice_mm, strict=True)]


def relative_brain_fraction(fractions: np.ndarray, keys: list[tuple], reference: dict[tuple, float]) -> np.ndarray:
    """Brain fraction of each slice over the cohort's mean at its (contrast, orientation, level), so slices at
    different levels can be pooled; NaN where the cohort has no slice at that position."""
    means = np.array([reference.get(k, np.nan) for k in keys], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(means > 0, np.asarray(fractions, dtype=np.float64) / means, np.nan)


def reference_means(fractions: np.ndarray, keys: list[tuple]) -> dict[tuple, float]:
    sums: dict[tuple, list[float]] = {}
    for f, k in zip(fractions, keys, strict=True):
        sums.setdefault(k, []).append(float(f))
    return {k: float(np.mean(v)) for k, v in sums.items()}


def age_slope(ages: np.ndarray, relative: np.ndarray) -> dict:
    """Least-squares slope of relative brain fraction against age, in % per decade (None when the ages do not
    vary), with the number of slices used."""
    ages, relative = np.asarray(ages, dtype=np.float64), np.asarray(relative, dtype=np.float64)
    ok = np.isfinite(ages) & np.isfinite(relative)
    if ok.sum() < 3 or np.ptp(ages[ok]) < 1.0:
        return {"slope_percent_per_decade": None, "n": int(ok.sum())}
    slope, intercept = np.polyfit(ages[ok], relative[ok], 1)
    r = np.corrcoef(ages[ok], relative[ok])[0, 1]
    return {"slope_percent_per_decade": float(slope * 1000), "intercept": float(intercept),
            "pearson_r": float(r), "n": int(ok.sum())}
