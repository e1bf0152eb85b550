"""Where a caption puts the slice, measured, and inverted: the level map of a prompt in caption form.

Why: the shipped UNet reads a slice's level mostly from its caption's words (the landmark and the structures listed,
pipelines/caption_form.py), and the level it draws for the caption of level z is not z: the level judge puts the
T1w slices of "... (z = +36 mm) ..." at 39.4 mm and those of +18 mm at 16.5 mm (BENCHMARKS.md, "Where the level
error comes from"). The text encoder's states of two neighbouring captions, mixed, draw a level between theirs
(9 -> 12 mm: 6.9, 8.1, 10.3, 11.8, 13.3 mm judged at mixing weights 0, 1/4, 1/2, 3/4, 1; "Prompts that land at
the level they name"). So a model's dallebrain.json may hold, per contrast and plane, the level the judge finds
for each grid level's caption (`recipes/level_map.py`, seeds apart from every benchmark's); a prompt asking for
level z is then encoded as the mix of the two grid captions whose judged levels bracket z, and its attributes and
sampling start (the leak table's band) are read at the mixed level, as the map was measured with caption,
attributes and start at one level. Like the grey-level maps, a correction of what the model draws, fitted on the
model; the NIfTI and sidecar keep the level asked, and the sidecar's `level_map` records the captions, weight and
mixed level used.

Sagittal levels are judged as |x| (judges/level.py): the map is of |x|, and a prompt's side is kept.
"""

from __future__ import annotations

import dataclasses

import numpy as np

INFO_KEY = "level_map"  # under dallebrain.json's "sampling"
SEED_BASE = 800_000  # the recipe's seeds: apart from evaluate's, the grey-level maps' and the benchmarks'


@dataclasses.dataclass(frozen=True)
class Curve:
    """One contrast and plane: caption levels (increasing, grid mm; |x| for sagittal) and the level the model
    draws for each, made non-decreasing (isotonic), in mm."""

    caption_mm: tuple[float, ...]
    judged_mm: tuple[float, ...]

    def caption_for(self, asked_mm: float) -> tuple[float, float, float] | None:
        """(lower caption level, upper caption level, weight of the upper) whose mix is judged at `asked_mm`, or
        None outside the judged range (the caption of the asked level is used as it is)."""
        caption, judged = np.asarray(self.caption_mm), np.asarray(self.judged_mm)
        if not judged[0] <= asked_mm <= judged[-1]:
            return None
        upper = int(np.searchsorted(judged, asked_mm, side="left"))
        if judged[upper] == asked_mm:  # on a judged level; on a flat run of them, its middle caption
            last = int(np.searchsorted(judged, asked_mm, side="right")) - 1
            middle = (caption[upper] + caption[last]) / 2
            lower = int(np.searchsorted(caption, middle, side="right")) - 1
            if caption[lower] == middle or lower == len(caption) - 1:
                return float(caption[lower]), float(caption[lower]), 0.0
            w = (middle - caption[lower]) / (caption[lower + 1] - caption[lower])
            return float(caption[lower]), float(caption[lower + 1]), float(w)
        lower = upper - 1
        w = (asked_mm - judged[lower]) / (judged[upper] - judged[lower])
        return float(caption[lower]), float(caption[upper]), float(w)


def isotonic(values: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to `values` in least squares (pool adjacent violators)."""
    from sklearn.isotonic import IsotonicRegression

    return IsotonicRegression().fit_transform(np.arange(len(values)), np.asarray(values, dtype=np.float64))


def fit_curve(caption_mm, judged_mm) -> Curve:
    """A Curve from each caption level's judged levels (rows of seeds) or their means; ValueError (one line) for
    fewer than two levels or levels out of order."""
    caption = np.asarray(caption_mm, dtype=np.float64)
    judged = np.asarray(judged_mm, dtype=np.float64)
    judged = judged.mean(axis=1) if judged.ndim == 2 else judged
    if len(caption) < 2 or len(caption) != len(judged) or np.any(np.diff(caption) <= 0):
        raise ValueError(f"a level map needs >= 2 increasing caption levels with one judged level each, got "
                         f"{len(caption)} levels and {len(judged)} judged")
    if not np.all(np.isfinite(judged)):
        raise ValueError("a level map's judged levels must be finite numbers")
    return Curve(tuple(round(float(c), 3) for c in caption), tuple(round(float(j), 3) for j in isotonic(judged)))


@dataclasses.dataclass(frozen=True)
class LevelMap:
    curves: dict[str, dict[str, Curve]]  # contrast -> plane -> curve

    def caption_for(self, contrast: str | None, plane: str | None, asked_mm: float | None):
        """(lower, upper, weight) caption levels for a prompt (sagittal: signed as asked), or None where the map
        has no curve for it or the level is outside the curve's judged range."""
        curve = (self.curves.get(contrast) or {}).get(plane) if asked_mm is not None else None
        if curve is None:
            return None
        sign = -1.0 if plane == "sagittal" and asked_mm < 0 else 1.0
        found = curve.caption_for(abs(asked_mm) if plane == "sagittal" else asked_mm)
        if found is None:
            return None
        lower, upper, w = found
        return sign * lower, sign * upper, w

    def to_info(self, record: dict) -> dict:
        return {**record, "curves": {c: {p: {"caption_mm": list(k.caption_mm), "judged_mm": list(k.judged_mm)}
                                         for p, k in planes.items()} for c, planes in self.curves.items()}}


def level_map_of(sampling: dict) -> LevelMap | None:
    """The map in a model's dallebrain.json "sampling", or None; ValueError (one line) for a malformed one, so a
    bad file is refused when the model loads."""
    info = sampling.get(INFO_KEY)
    if info is None:
        return None
    from dallebrain.vocab import ORIENTATIONS

    try:
        curves = {}
        for contrast, planes in info["curves"].items():
            curves[contrast] = {}
            for plane, curve in planes.items():
                if plane not in ORIENTATIONS:
                    raise ValueError(f"unknown plane {plane!r}")
                caption, judged = np.asarray(curve["caption_mm"], float), np.asarray(curve["judged_mm"], float)
                if (len(caption) < 2 or len(caption) != len(judged) or np.any(np.diff(caption) <= 0)
                        or np.any(np.diff(judged) < 0) or not np.all(np.isfinite(judged))):
                    raise ValueError(f"{contrast} {plane}: caption levels must increase and judged levels not "
                                     "decrease, one each")
                curves[contrast][plane] = Curve(tuple(caption.tolist()), tuple(judged.tolist()))
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise ValueError(f"malformed sampling.{INFO_KEY} in dallebrain.json: {error}") from None
    return LevelMap(curves)
