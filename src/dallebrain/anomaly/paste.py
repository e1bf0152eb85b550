"""Lesions pasted into healthy prepared slices, with exact masks: the benchmark's lesion source for a data set
that has no simulated lesions (a prepared healthy IXI, or a simulated cohort made without --lesions).

Shapes are drawn in the slice on the template's tissue maps at the slice's position (tumours and MS plaques in
white matter, WMH as caps and bands along the lateral ventricles, infarcts as wedges from the cortex inwards);
appearance comes from the simulator's own relaxation model: each lesion tissue's signal over white matter's for
a typical sequence of the slice's contrast (`data.lesions.lesion_parameters`, `data.mr_physics`), times the
slice's own white-matter level. The 3-D simulator (`dallebrain data simulate --lesions`) is the better source:
its lesions have mass effect and partial volume in 3-D; these only stand in where it is not available.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from dallebrain.data.grid import VolumeGrid, extract_slice
from dallebrain.data.lesions import LESION_TISSUES, LESION_TYPES, lesion_parameters
from dallebrain.data.mr_physics import TISSUE_PARAMETERS, draw_sequence, tissue_signal


@dataclass(frozen=True)
class SliceMaps:
    """Template tissue fractions and lateral ventricles on one slice (display convention)."""

    gm: np.ndarray
    wm: np.ndarray
    ventricles: np.ndarray


@lru_cache(maxsize=2)
def _volumes(grid: VolumeGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from dallebrain.data.templates import LATERAL_VENTRICLE_LABELS, atlas_labels, label_ids, tissue_priors

    priors = tissue_priors(grid)
    return priors.gm, priors.wm, np.isin(atlas_labels(grid), label_ids(*LATERAL_VENTRICLE_LABELS))


def slice_maps(grid: VolumeGrid, orientation: str, index: int) -> SliceMaps:
    gm, wm, vent = _volumes(grid)
    return SliceMaps(*(extract_slice(v, orientation, index) for v in (gm, wm, vent)))


def lesion_contrast(tissue: str, modality: str, field_strength: float, rng: np.random.Generator) -> float:
    """A lesion tissue's signal over normal white matter's for a sequence of this contrast."""
    field = 3.0 if field_strength is None or field_strength > 2 else 1.5
    seq = draw_sequence(modality, field, rng)
    return tissue_signal(seq, *lesion_parameters(tissue, field)) / tissue_signal(seq, *TISSUE_PARAMETERS[field]["wm"])


def _pick(rng: np.random.Generator, candidates: np.ndarray) -> np.ndarray | None:
    idx = np.argwhere(candidates)
    return None if idx.size == 0 else idx[int(rng.integers(len(idx)))].astype(float)


def _disc(shape: tuple[int, int], centre: np.ndarray, radius_px: float, rng: np.random.Generator,
          ragged: float = 0.15, stretch: float = 1.0) -> np.ndarray:
    """Occupancy of an irregular ellipse: radius varied with angle by a few smooth harmonics."""
    rows, cols = np.indices(shape, dtype=np.float32)
    dy, dx = rows - centre[0], (cols - centre[1]) / stretch
    angle = np.arctan2(dy, dx)
    wobble = sum(rng.uniform(-ragged, ragged) * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    return np.clip(radius_px * (1 + wobble) - np.hypot(dy, dx) + 0.5, 0, 1).astype(np.float32)


@dataclass(frozen=True)
class LesionSpec:
    """What to draw; None fields are drawn at random (the benchmark's pasted lesions), given ones are obeyed
    (a pathology prompt: "a 30 mm tumour in the right temporal lobe")."""

    kind: str
    size_mm: float | None = None  # tumour, infarct: diameter of the lesion (tumour: without oedema); ms: plaque
    region: np.ndarray | None = None  # bool slice map of where the lesion's centre may go (a lobe, a territory)
    fazekas: int | None = None  # wmh: grade 1-3 sets the periventricular band and the deep foci
    count: int | None = None  # ms: number of plaques


# Fazekas grade -> (periventricular band mm, deep foci, focus radius mm): caps and pencil lines, a smooth halo
# with beginning confluence, irregular confluent hyperintensity (Fazekas et al. AJR 1987;149:351-356).
FAZEKAS_2D = {1: ((2.0, 4.0), (0, 2), (1.5, 2.5)), 2: ((4.0, 8.0), (3, 6), (2.0, 4.0)),
              3: ((8.0, 14.0), (6, 12), (3.0, 6.0))}


def _centre(rng, candidates: np.ndarray, spec: LesionSpec, preferred: np.ndarray | None = None,
            radius_px: float = 0.0) -> np.ndarray | None:
    """A centre among the candidates (inside the spec's region, as deep in it as the lesion's radius allows, so
    the lesion lies in the region and not only its centre), in the preferred part of them when it has any."""
    if spec.region is not None:
        candidates = candidates & spec.region
        depth = ndimage.distance_transform_edt(spec.region)
        deep = candidates & (depth >= min(0.7 * radius_px, 0.8 * float(depth[candidates].max(initial=0))))
        candidates = deep if deep.any() else candidates
    if preferred is not None and (candidates & preferred).any():
        candidates = candidates & preferred
    return _pick(rng, candidates)


def _tumour(maps: SliceMaps, brain: np.ndarray, spacing: float, rng, spec: LesionSpec) -> dict[str, np.ndarray]:
    diameter = spec.size_mm if spec.size_mm else 2 * float(np.clip(rng.lognormal(np.log(14.0), 0.3), 6.0, 30.0))
    radius = diameter / 2 / spacing
    inner = ndimage.distance_transform_edt(brain) > radius * 0.8
    centre = _centre(rng, inner, spec, maps.wm > 0.4, radius)
    if centre is None:
        return {}
    solid = _disc(brain.shape, centre, radius, rng)
    out = {"tumour": solid}
    if rng.random() < 0.8:
        out["necrosis"] = _disc(brain.shape, centre, radius * rng.uniform(0.35, 0.6), rng, ragged=0.1)
    reach = rng.uniform(4.0, 15.0) / spacing
    out["oedema"] = np.clip(_disc(brain.shape, centre, radius + reach, rng, 0.25) - solid, 0, 1) * (maps.wm > 0.3)
    return out


def _wmh(maps: SliceMaps, brain: np.ndarray, spacing: float, rng, spec: LesionSpec) -> dict[str, np.ndarray]:
    wm = maps.wm > 0.5
    band_mm, foci, focus_mm = FAZEKAS_2D[spec.fazekas] if spec.fazekas else ((3.0, 8.0), (1, 6), (1.5, 4.0))
    if maps.ventricles.any():
        band = ndimage.distance_transform_edt(~maps.ventricles) * spacing < rng.uniform(*band_mm)
        noise = ndimage.gaussian_filter(rng.standard_normal(brain.shape), 3.0)
        occupancy = (band & wm & (noise > np.quantile(noise, 0.3))).astype(np.float32)
    else:
        occupancy = np.zeros(brain.shape, np.float32)
    for _ in range(int(rng.integers(foci[0], foci[1] + (spec.fazekas is not None)))):  # deep punctate foci
        centre = _centre(rng, wm & brain, spec)
        if centre is not None:
            occupancy = np.maximum(occupancy, _disc(brain.shape, centre, rng.uniform(*focus_mm) / spacing, rng))
    return {"wmh": occupancy}


def _ms(maps: SliceMaps, brain: np.ndarray, spacing: float, rng, spec: LesionSpec) -> dict[str, np.ndarray]:
    occupancy = np.zeros(brain.shape, np.float32)
    for _ in range(spec.count or int(rng.integers(2, 8))):
        centre = _centre(rng, (maps.wm > 0.5) & brain, spec)
        if centre is not None:
            size = spec.size_mm / 2 if spec.size_mm else float(np.clip(rng.lognormal(np.log(3.0), 0.4), 1.5, 10.0))
            occupancy = np.maximum(occupancy, _disc(brain.shape, centre, size / spacing, rng, 0.1,
                                                    rng.uniform(0.5, 2.0)))
    return {"ms": occupancy}


def _infarct(maps: SliceMaps, brain: np.ndarray, spacing: float, rng, spec: LesionSpec) -> dict[str, np.ndarray]:
    cortex = (maps.gm > maps.wm) & (maps.gm > 0.4) & brain & (ndimage.distance_transform_edt(brain) > 2)
    diameter = spec.size_mm if spec.size_mm else 2 * float(np.clip(rng.lognormal(np.log(12.0), 0.4), 5.0, 30.0))
    radius = diameter / 2 / spacing
    centre = _centre(rng, cortex, spec, radius_px=radius / 2)  # a wedge from the cortex: half of it reaches out
    if centre is None:
        return {}
    region = _disc(brain.shape, centre, radius, rng, 0.25) * brain
    rim = rng.uniform(1.5, 3.0) / spacing
    core = np.clip(_disc(brain.shape, centre, radius - rim, rng, 0.25), 0, 1) * brain
    return {"cavity": core, "gliosis": np.clip(region - core, 0, 1)}


SHAPES = {"tumour": _tumour, "wmh": _wmh, "ms": _ms, "infarct": _infarct}


def paste_lesion(image: np.ndarray, lesion: str | LesionSpec, modality: str, grid: VolumeGrid, orientation: str,
                 index: int, rng: np.random.Generator, field_strength: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(slice with the lesion, uint8 mask with data.lesions.MASK_LABELS values); an unchanged slice and an
    empty mask when the slice has no place for this lesion. `lesion`: a type (everything drawn) or a spec."""
    spec = lesion if isinstance(lesion, LesionSpec) else LesionSpec(lesion)
    if spec.kind not in LESION_TYPES:
        raise ValueError(f"unknown lesion type {spec.kind!r}: choose from {', '.join(LESION_TYPES)}")
    brain = image > 0.02 * max(float(image.max()), 1e-6)
    maps = slice_maps(grid, orientation, index)
    tissues = SHAPES[spec.kind](maps, brain, grid.spacing_mm, rng, spec)
    wm_level = float(np.median(image[(maps.wm > 0.9) & brain])) if ((maps.wm > 0.9) & brain).sum() > 20 else \
        float(np.percentile(image[brain], 75)) if brain.any() else 0.0
    out, mask = image.astype(np.float32).copy(), np.zeros(image.shape, np.uint8)
    for tissue, occupancy in tissues.items():  # later tissues (necrosis inside tumour) overwrite earlier ones
        occupancy = occupancy * brain
        value = wm_level * lesion_contrast(tissue, modality, field_strength, rng)
        texture = 1 + 0.03 * rng.standard_normal(image.shape)
        out = (1 - occupancy) * out + occupancy * value * texture
        mask[occupancy >= 0.5] = LESION_TISSUES[tissue][4]
    return np.clip(out, 0, 1).astype(np.float32), mask
