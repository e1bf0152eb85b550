"""Lesions of the simulated cohort: their tissues, their masks, and how they enter an anatomy.

A lesion is a tissue of its own (T1, T2, PD) that takes the place of normal tissue. It is drawn in template
space, beside the aged tissue maps (`lesion_shapes`), so the subject's shape warp and pose carry it into
every scan exactly as they carry the brain. In the native scan a voxel belongs to the lesion mask when at
least half of it is lesion; smaller slivers are given back to the tissue they replaced, so the mask is
exactly where the rendering departs from the lesion-free brain.

Appearance follows from relaxation relative to the same field's white matter (grey matter for the tumour,
CSF for fluid): white-matter hyperintensities, demyelinating plaques, gliosis and vasogenic oedema have
long T1 and T2 (bright on FLAIR and T2w, dark-ish on T1w); a chronic infarct's cavity is CSF-like (dark on
FLAIR and T1w) inside a gliotic rim; a necrotic core is proteinaceous fluid (T2w bright, T1w dark, not nulled
by FLAIR). Sources: Vrenken H et al. Radiology 2006;240:811-820 (T1 of MS lesions about twice normal-appearing
white matter); Just M, Thelen M. Radiology 1988;169:779-785 (T1, T2, PD of brain tumours, necrosis and
oedema at 1.5 T). [check] The multipliers below are round values inside the ranges those report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dallebrain.data.mr_physics import TISSUE_PARAMETERS

LESION_TYPES = ("wmh", "ms", "infarct", "tumour")
# Mask label value -> what it marks (the lesion mask's look-up table).
MASK_LABELS = {1: "wmh", 2: "ms", 3: "infarct", 4: "tumour", 5: "necrosis", 6: "oedema"}
MASK_DESCRIPTIONS = {
    "wmh": "white-matter hyperintensity of presumed vascular origin",
    "ms": "demyelinating (multiple sclerosis-like) lesion",
    "infarct": "chronic territorial infarct (cavity and gliotic rim)",
    "tumour": "tumour, solid part",
    "necrosis": "tumour, necrotic core",
    "oedema": "vasogenic oedema around a tumour",
}
# Lesion tissue -> (reference tissue, T1 factor, T2 factor, proton density) and its mask label.
LESION_TISSUES = {
    "wmh": ("wm", 1.6, 1.8, 0.86, 1),
    "ms": ("wm", 1.9, 2.2, 0.88, 2),
    "cavity": ("csf", 0.9, 0.8, 0.97, 3),
    "gliosis": ("wm", 1.7, 2.0, 0.88, 3),
    "tumour": ("gm", 1.35, 1.4, 0.90, 4),
    "necrosis": ("csf", 0.55, 0.2, 0.95, 5),
    "oedema": ("wm", 1.8, 2.2, 0.88, 6),
}
MASK_THRESHOLD = 0.5  # a voxel is lesion when at least half of it is


def lesion_parameters(tissue: str, field_strength: float) -> tuple[float, float, float]:
    """(T1 ms, T2 ms, PD) of a lesion tissue at a field strength."""
    reference, t1_factor, t2_factor, pd, _ = LESION_TISSUES[tissue]
    t1, t2, _ = TISSUE_PARAMETERS[field_strength][reference]
    return t1 * t1_factor, t2 * t2_factor, pd


def parse_lesions(text: str) -> tuple[str, ...]:
    """'wmh,ms' -> ('wmh', 'ms'); ValueError names an unknown type."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    names = ["tumour" if n == "tumor" else n for n in names]
    unknown = [n for n in names if n not in LESION_TYPES]
    if unknown or not names:
        raise ValueError(f"unknown lesion type(s) {unknown or text!r}: choose from {','.join(LESION_TYPES)}")
    return tuple(dict.fromkeys(names))


@dataclass
class LesionMaps:
    """Lesion tissue fractions inside a box of a volume, and the normal tissue each voxel gave up."""

    box: tuple[slice, slice, slice]
    tissues: dict[str, np.ndarray] = field(default_factory=dict)  # lesion tissue -> fraction
    replaced: dict[str, np.ndarray] = field(default_factory=dict)  # "gm" / "wm" / "csf" -> fraction given up

    def total(self) -> np.ndarray:
        shape = tuple(s.stop - s.start for s in self.box)
        return sum(self.tissues.values(), np.zeros(shape, np.float32))


def take_tissue(maps: LesionMaps, tissue_maps: dict[str, np.ndarray], lesion: str, occupancy: np.ndarray,
                replaces: tuple[str, ...]) -> None:
    """Turn `occupancy` (0-1, box-shaped) of the `replaces` tissues into lesion tissue, in place."""
    occupancy = np.clip(occupancy, 0.0, 1.0).astype(np.float32)
    taken = np.zeros_like(occupancy)
    for name in replaces:
        region = tissue_maps[name][maps.box]
        part = region * occupancy
        region -= part
        taken += part
        maps.replaced[name] = maps.replaced.get(name, 0.0) + part
    maps.tissues[lesion] = maps.tissues.get(lesion, 0.0) + taken


def finalise_mask(tissue_maps: dict[str, np.ndarray], maps: LesionMaps) -> np.ndarray:
    """Native-space step: the mask (uint8 labels, box-shaped) of voxels at least half lesion; below that the
    lesion tissue goes back to what it replaced, in place, so nothing abnormal is left outside the mask."""
    total = maps.total()
    keep = total >= MASK_THRESHOLD
    drop = ~keep
    for name, part in maps.replaced.items():
        tissue_maps[name][maps.box][drop] += part[drop]
        part[drop] = 0.0
    names = list(maps.tissues)
    for name in names:
        maps.tissues[name][drop] = 0.0
    mask = np.zeros(total.shape, np.uint8)
    if names:
        stack = np.stack([maps.tissues[n] for n in names])
        winner = np.array([LESION_TISSUES[n][4] for n in names], np.uint8)[np.argmax(stack, axis=0)]
        mask[keep] = winner[keep]
    return mask


def full_mask(shape: tuple[int, ...], maps: LesionMaps | None, box_mask: np.ndarray | None) -> np.ndarray:
    """The box mask placed in a whole volume (all zero without lesions)."""
    out = np.zeros(shape, np.uint8)
    if maps is not None and box_mask is not None:
        out[maps.box] = box_mask
    return out


def mask_volumes_ml(mask: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """mL per mask label name (every name, zero when absent)."""
    counts = np.bincount(mask.ravel(), minlength=max(MASK_LABELS) + 1)
    return {name: float(counts[value] * voxel_ml) for value, name in MASK_LABELS.items()}


def bounding_box(mask: np.ndarray, margin: int, shape: tuple[int, ...]) -> tuple[slice, slice, slice] | None:
    """Box around the True voxels of `mask` with a margin, clipped to `shape`; None when empty."""
    idx = np.argwhere(mask)
    if idx.size == 0:
        return None
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
