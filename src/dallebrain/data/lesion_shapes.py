"""Lesion geometry in template space: occupancy maps (0-1) drawn on an aged template's tissue maps.

Shapes are sharp-edged (a one-voxel ramp) implicit surfaces; irregularity comes from a smooth noise field
fixed per lesion (`SmoothNoise`), so every session of a subject draws the same lesion. Each function edits
the tissue maps in place through `lesions.take_tissue` and returns the `LesionMaps` it filled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from dallebrain.data.grid import VolumeGrid
from dallebrain.data.lesions import LesionMaps, take_tissue
from dallebrain.data.templates import LATERAL_VENTRICLE_LABELS, label_ids

RAMP_VOXELS = 1.0  # width of the partial-volume edge of a lesion


@dataclass(frozen=True)
class SmoothNoise:
    """A smooth random field in about [-1, 1] over the whole grid, defined by a seed and a length scale."""

    seed: int
    scale_mm: float

    def sample(self, grid: VolumeGrid, box: tuple[slice, slice, slice]) -> np.ndarray:
        step = max(1.0, self.scale_mm / grid.spacing_mm / 2)
        coarse_shape = tuple(int(np.ceil(n / step)) + 2 for n in grid.shape)
        coarse = ndimage.gaussian_filter(np.random.default_rng(self.seed).standard_normal(coarse_shape), 1.0)
        coarse /= max(float(np.abs(coarse).max()), 1e-6)
        idx = np.indices(tuple(s.stop - s.start for s in box), dtype=np.float32)
        coords = np.stack([(idx[d] + box[d].start) / step for d in range(3)])
        return ndimage.map_coordinates(coarse, coords, order=1, mode="nearest").astype(np.float32)


def _ramp(signed_mm: np.ndarray, grid: VolumeGrid) -> np.ndarray:
    """Occupancy from a signed distance (mm, positive inside): a one-voxel partial-volume edge."""
    return np.clip(0.5 + signed_mm / (RAMP_VOXELS * grid.spacing_mm), 0.0, 1.0).astype(np.float32)


def box_around(centre: np.ndarray, radius_mm: float, grid: VolumeGrid) -> tuple[slice, slice, slice]:
    r = int(np.ceil(radius_mm / grid.spacing_mm)) + 2
    c = np.round(centre).astype(int)
    return tuple(slice(int(max(0, c[d] - r)), int(min(grid.shape[d], c[d] + r + 1))) for d in range(3))


def _offsets_mm(box: tuple[slice, slice, slice], centre: np.ndarray, grid: VolumeGrid) -> np.ndarray:
    idx = np.indices(tuple(s.stop - s.start for s in box), dtype=np.float32)
    return np.stack([(idx[d] + box[d].start - centre[d]) * grid.spacing_mm for d in range(3)])


def _fill_to_volume(score: np.ndarray, available: np.ndarray, volume_vox: float) -> float:
    """Score threshold at which the available tissue below it adds up to `volume_vox`."""
    order = np.argsort(score, axis=None)
    cumulative = np.cumsum(available.ravel()[order])
    k = int(np.searchsorted(cumulative, volume_vox))
    return float(score.ravel()[order[min(k, order.size - 1)]])


def wmh_shapes(tissue: dict[str, np.ndarray], grid: VolumeGrid, periventricular_vox: float,
               foci: list[tuple[np.ndarray, float]], cap_mm: float, noise: SmoothNoise) -> LesionMaps:
    """Periventricular caps and bands (thickest at the frontal and occipital horns) plus deep punctate foci,
    all in white matter; `periventricular_vox` template voxels of the former, foci (centre voxel, radius mm)."""
    vent_all = np.isin(tissue["labels"], label_ids(*LATERAL_VENTRICLE_LABELS))
    margin = int(np.ceil(30 / grid.spacing_mm))
    points = np.concatenate([np.argwhere(vent_all)] + [np.round(c)[None].astype(int) for c, _ in foci])
    lo, hi = np.maximum(points.min(0) - margin, 0), np.minimum(points.max(0) + margin + 1, grid.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    vent = vent_all[box]
    dist = ndimage.distance_transform_edt(~vent).astype(np.float32) * grid.spacing_mm
    # Caps: the band is thicker towards both ends of the ventricles along y (frontal and occipital horns).
    ys = np.argwhere(vent)[:, 1]
    y_mid, half = (ys.min() + ys.max()) / 2, max((ys.max() - ys.min()) / 2, 1)
    y = np.arange(box[1].start, box[1].stop, dtype=np.float32)[None, :, None] - box[1].start
    ends = np.clip(np.abs(y - y_mid) / half, 0, 1) ** 4  # 1 at the horn tips, no further
    score = dist - cap_mm * ends + 2.5 * noise.sample(grid, box)
    wm = tissue["wm"][box]
    maps = LesionMaps(box)
    if periventricular_vox > 0:
        # Fill by voxels at least half white matter: those become mask voxels (the rest, partial volume with
        # the ventricles, falls under the mask threshold), so the mask's volume is the volume drawn.
        solid = wm >= 0.5
        threshold = _fill_to_volume(np.where(solid, score, np.inf), solid.astype(np.float32), periventricular_vox)
        take_tissue(maps, tissue, "wmh", _ramp(threshold - score, grid), ("wm",))
    if foci:
        balls = [(c, np.eye(3), np.full(3, r)) for c, r in foci]
        take_tissue(maps, tissue, "wmh", _union_of_ovoids(box, balls, grid), ("wm",))
    return maps


@dataclass(frozen=True)
class Ovoid:
    """One ellipsoidal lesion: centre (template voxel), semi-axes (mm) along the columns of `axes`."""

    centre: np.ndarray
    radii_mm: np.ndarray
    axes: np.ndarray  # 3x3, orthonormal columns
    juxtacortical: bool = False


def ms_shapes(tissue: dict[str, np.ndarray], grid: VolumeGrid, ovoids: list[Ovoid]) -> LesionMaps | None:
    """Ovoid plaques in white matter (juxtacortical ones may reach into the cortex)."""
    if not ovoids:
        return None
    centres = np.array([o.centre for o in ovoids])
    reach = max(float(o.radii_mm.max()) for o in ovoids) + 2 * grid.spacing_mm
    lo = np.maximum(np.floor(centres.min(0) - reach / grid.spacing_mm), 0).astype(int)
    hi = np.minimum(np.ceil(centres.max(0) + reach / grid.spacing_mm) + 1, grid.shape).astype(int)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    maps = LesionMaps(box)
    for juxtacortical, replaces in ((False, ("wm",)), (True, ("wm", "gm"))):
        chosen = [(o.centre, o.axes, o.radii_mm) for o in ovoids if o.juxtacortical == juxtacortical]
        if chosen:
            take_tissue(maps, tissue, "ms", _union_of_ovoids(box, chosen, grid), replaces)
    return maps


def _union_of_ovoids(box: tuple[slice, slice, slice], ovoids: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                     grid: VolumeGrid) -> np.ndarray:
    """Occupancy (box-shaped) of a union of ellipsoids (centre voxel, 3x3 axes, semi-axes mm), each drawn in
    its own small box."""
    occupancy = np.zeros(tuple(s.stop - s.start for s in box), np.float32)
    for centre, axes, radii in ovoids:
        sub = box_around(centre, float(radii.max()) + grid.spacing_mm, grid)
        sub = tuple(slice(max(s.start, b.start), min(s.stop, b.stop)) for s, b in zip(sub, box, strict=True))
        if any(s.stop <= s.start for s in sub):
            continue
        local = np.tensordot(axes.T, _offsets_mm(sub, centre, grid), axes=1) / radii[:, None, None, None]
        inner = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(sub, box, strict=True))
        occupancy[inner] = np.maximum(occupancy[inner],
                                      _ramp((1 - np.linalg.norm(local, axis=0)) * float(radii.min()), grid))
    return occupancy


def infarct_shapes(tissue: dict[str, np.ndarray], grid: VolumeGrid, candidates: np.ndarray, seed_voxel: np.ndarray,
                   inward: np.ndarray, volume_vox: float, rim_mm: float, noise: SmoothNoise) -> LesionMaps:
    """A wedge from the cortex inwards inside one arterial territory (`candidates`, full-grid bool): a
    CSF-like cavity within a gliotic rim `rim_mm` thick, grey and white matter both replaced."""
    reach = 2.2 * (volume_vox * grid.spacing_mm ** 3 * 3 / (4 * np.pi)) ** (1 / 3) + 10
    box = box_around(seed_voxel, reach, grid)
    offsets = _offsets_mm(box, seed_voxel, grid)
    distance = np.linalg.norm(offsets, axis=0)
    # Elongated inwards (towards the deep white matter), ragged by the noise: a wedge, not a ball.
    along = np.tensordot(inward, offsets, axes=1)
    score = distance - 0.45 * np.clip(along, 0, None) + 6.0 * noise.sample(grid, box)
    available = (tissue["gm"][box] + tissue["wm"][box]) * candidates[box]
    threshold = _fill_to_volume(np.where(candidates[box], score, np.inf), available, volume_vox)
    inside = _ramp(threshold - score, grid) * candidates[box]
    core = _ramp(threshold - rim_mm - score, grid) * candidates[box]
    maps = LesionMaps(box)
    take_tissue(maps, tissue, "cavity", core, ("gm", "wm"))
    rim = np.where(core >= 1.0, 0.0, (inside - core) / np.maximum(1.0 - core, 1e-6))
    take_tissue(maps, tissue, "gliosis", rim, ("gm", "wm"))
    return maps


def displace_outwards(tissue: dict[str, np.ndarray], grid: VolumeGrid, centre: np.ndarray, inserted_mm: float,
                      edge_mm: np.ndarray, box: tuple[slice, slice, slice]) -> None:
    """Mass effect: the tissue around `centre` pushed out as if a ball of radius `inserted_mm` were put in
    (volume-preserving radial map r -> (r^3 + k^3)^(1/3)), fading near the skull, which does not move."""
    offsets = _offsets_mm(box, centre, grid)
    rho = np.maximum(np.linalg.norm(offsets, axis=0), 1e-3)
    source_r = np.cbrt(np.maximum(rho ** 3 - inserted_mm ** 3, 0.0))
    push = (rho - source_r) * np.clip(edge_mm[box] / 15.0, 0.0, 1.0)
    coords = np.stack([(offsets[d] * (1 - push / rho)) / grid.spacing_mm + centre[d] for d in range(3)])
    for name in ("gm", "wm", "csf"):
        tissue[name][box] = ndimage.map_coordinates(tissue[name], coords, order=1, mode="nearest")
    tissue["labels"][box] = ndimage.map_coordinates(tissue["labels"], coords, order=0, mode="nearest")


def tumour_shapes(tissue: dict[str, np.ndarray], grid: VolumeGrid, centre: np.ndarray, radius_mm: float,
                  necrosis_fraction: float, oedema_mm: float, displaced_fraction: float, edge_mm: np.ndarray,
                  noise: SmoothNoise) -> LesionMaps:
    """A mass with an irregular rim and a necrotic core, surrounding oedema in the white matter, and the
    mass effect of the part of its volume that displaced the brain rather than infiltrating it."""
    box = box_around(centre, radius_mm + oedema_mm + 30, grid)
    displace_outwards(tissue, grid, centre, radius_mm * displaced_fraction ** (1 / 3), edge_mm, box)
    rho = np.linalg.norm(_offsets_mm(box, centre, grid), axis=0)
    rim = radius_mm * (1 + 0.12 * noise.sample(grid, box))
    maps = LesionMaps(box)
    if necrosis_fraction > 0:
        take_tissue(maps, tissue, "necrosis", _ramp(necrosis_fraction * rim - rho, grid), ("gm", "wm", "csf"))
    take_tissue(maps, tissue, "tumour", _ramp(rim - rho, grid), ("gm", "wm", "csf"))
    reach = oedema_mm * (1 + 0.4 * SmoothNoise(noise.seed + 1, 12.0).sample(grid, box))
    take_tissue(maps, tissue, "oedema", _ramp(rim + reach - rho, grid), ("wm",))
    return maps
