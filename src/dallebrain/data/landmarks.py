"""Anatomical landmarks of slice positions in MNI152 space: the phrase a caption uses for a level, and the
cues the prompt parser reads a level from."""

from __future__ import annotations

import math

from dallebrain.vocab import ORIENTATIONS

# Anatomical landmarks by slice position in MNI152 space (mm, RAS+).
# axial (z) and coronal (y): a slice belongs to the row whose [low, high) range contains it.
# sagittal (|x|): a slice belongs to the row whose (low, high] range contains |x|; "{side}" becomes
# "left" (x < 0) or "right" (x > 0).
# `centre` is where parse_prompt puts a slice named only by its landmark (a typical value for open ends).
#   orientation: ((low, high, phrase, centre), ...)
LANDMARKS: dict[str, tuple[tuple[float, float, str, float], ...]] = {
    "axial": (
        (-math.inf, -42.0, "at the level of the cerebellum", -50.0),
        (-42.0, -28.0, "at the level of the pons", -35.0),
        (-28.0, -12.0, "through the hippocampi and midbrain", -20.0),
        (-12.0, 4.0, "at the level of the basal ganglia", -4.0),
        (4.0, 16.0, "at the level of the thalami", 10.0),
        (16.0, 30.0, "at the level of the lateral ventricles", 23.0),
        (30.0, 50.0, "at the level of the centrum semiovale", 40.0),
        (50.0, math.inf, "near the vertex", 60.0),
    ),
    "coronal": (
        (45.0, math.inf, "through the frontal poles", 55.0),
        (20.0, 45.0, "through the frontal lobes", 32.5),
        (4.0, 20.0, "through the frontal horns of the lateral ventricles", 12.0),
        (-8.0, 4.0, "through the basal ganglia", -2.0),
        (-20.0, -8.0, "through the thalami", -14.0),
        (-38.0, -20.0, "through the hippocampi", -29.0),
        (-60.0, -38.0, "through the atria of the lateral ventricles", -49.0),
        (-80.0, -60.0, "through the parieto-occipital region", -70.0),
        (-math.inf, -80.0, "through the occipital poles", -90.0),
    ),
    "sagittal": (
        (-math.inf, 4.0, "midsagittal", 0.0),
        (4.0, 14.0, "through the {side} lateral ventricle", 9.0),
        (14.0, 30.0, "through the {side} basal ganglia", 22.0),
        (30.0, 42.0, "through the {side} insula", 36.0),
        (42.0, math.inf, "through the {side} temporal lobe", 50.0),
    ),
}

# Free-text cues for a landmark when the exact phrase is absent: orientation -> ((regex, row index), ...).
LANDMARK_CUES: dict[str, tuple[tuple[str, int], ...]] = {
    "axial": (
        (r"cerebell", 0),
        (r"\bpons\b|\bpontine\b", 1),
        (r"hippocamp|midbrain|mesencephal", 2),
        (r"basal ganglia|lentiform|putamen", 3),
        (r"thalam", 4),
        (r"lateral ventricle|\bventricles\b", 5),
        (r"centrum semiovale|semioval", 6),
        (r"\bvertex\b|convexity", 7),
    ),
    "coronal": (
        (r"frontal poles?\b", 0),
        (r"frontal lobes?\b", 1),
        (r"frontal horns?\b", 2),
        (r"basal ganglia|lentiform|putamen", 3),
        (r"thalam", 4),
        (r"hippocamp", 5),
        (r"\batri(?:a|um)\b|trigone", 6),
        (r"parieto-?\s?occipital", 7),
        (r"occipital poles?\b", 8),
    ),
    "sagittal": (
        (r"mid-?\s?sagittal|\bmidline\b", 0),
        (r"lateral ventricle", 1),
        (r"basal ganglia|lentiform|putamen", 2),
        (r"insula", 3),
        (r"temporal lobe", 4),
    ),
}


def landmark_row(orientation: str, slice_mm: float) -> int:
    rows = LANDMARKS[orientation]
    if orientation == "sagittal":
        return next(i for i, (lo, hi, _, _) in enumerate(rows) if lo < abs(slice_mm) <= hi)
    return next(i for i, (lo, hi, _, _) in enumerate(rows) if lo <= slice_mm < hi)


def landmark(orientation: str, slice_mm: float) -> str:
    """Anatomical landmark phrase for a slice position in MNI space, e.g.
    "at the level of the lateral ventricles"."""
    if orientation not in LANDMARKS:
        raise ValueError(f"unknown orientation {orientation!r}; expected one of {ORIENTATIONS}")
    phrase = LANDMARKS[orientation][landmark_row(orientation, slice_mm)][2]
    return phrase.format(side="left" if slice_mm < 0 else "right")
