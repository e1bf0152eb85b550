"""Individual anatomy for the simulated cohort: template tissue maps deformed and aged per subject.

Why these steps: (1) ventricles enlarge ex vacuo with age, which a deformation that pushes the ventricle
wall outward reproduces with the displaced periventricular tissue; (2) cortical grey matter thins and
sulci widen (GM -> CSF next to CSF); (3) white matter loss after midlife thins the gyral white matter
(WM -> GM at the grey/white border, the same amount leaving GM for CSF at the surface); (4) individual
shape is a smooth random diffeomorphism, and head size an affine scale, drawn per subject.
Deformations are stationary velocity fields exponentiated by scaling and squaring, so they stay
invertible (no folding) whatever their size.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from dallebrain.data.grid import BRAIN_CENTRE_MNI, VolumeGrid
from dallebrain.data.lesions import LesionMaps, bounding_box, finalise_mask
from dallebrain.data.templates import (
    LATERAL_VENTRICLE_LABELS,
    atlas_labels,
    label_ids,
    tissue_priors,
)


@dataclass(frozen=True)
class AgeingModel:
    """Healthy-ageing trends (../shared/DATA.md); fractions are relative to the young-adult template."""

    reference_age: float = 20.0  # the MNI152 2009 template averages adults of about 18-44
    gm_loss_per_year: float = 0.0022  # steady GM loss from early adulthood: -15 % by 90
    wm_plateau_age: float = 45.0  # WM is stable until the mid-40s ...
    wm_loss_quadratic: float = 8.2e-5  # ... then falls ever faster: (age-45)^2 * c, -17 % by 90
    ventricle_growth_per_decade: float = 0.20  # lateral ventricles grow ~20 % a decade ...
    ventricle_growth_per_decade_after_50: float = 0.30  # ... faster after 50
    icv_ml: tuple[float, float] = (1393.0, 1538.0)  # mean intracranial volume, women / men
    icv_cv: float = 0.07  # between-subject coefficient of variation of ICV
    tissue_cv: float = 0.03  # between-subject variation of GM and WM loss targets
    ventricle_log_sd: float = 0.30  # ventricle size varies widely between healthy people

    def gm_fraction(self, age: float) -> float:
        return 1.0 - self.gm_loss_per_year * max(0.0, age - self.reference_age)

    def wm_fraction(self, age: float) -> float:
        return 1.0 - self.wm_loss_quadratic * max(0.0, age - self.wm_plateau_age) ** 2

    def ventricle_ratio(self, age: float) -> float:
        """Lateral ventricle volume relative to the reference age."""
        early = max(0.0, min(age, 50.0) - self.reference_age) / 10
        late = max(0.0, age - 50.0) / 10
        return (1 + self.ventricle_growth_per_decade) ** early * (
            1 + self.ventricle_growth_per_decade_after_50) ** late


@dataclass
class Anatomy:
    """One subject's tissue fractions and labels on the native grid, plus the ground-truth placement."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    labels: np.ndarray  # atlas structure labels (int16)
    to_mni: np.ndarray  # 4x4, native world mm <- MNI world mm (what registration should recover)
    voxel_ml: float
    lesions: LesionMaps | None = None  # lesion tissue in a box of the volume
    lesion_mask: np.ndarray | None = None  # uint8 mask labels (lesions.MASK_LABELS) in that box

    @property
    def intracranial(self) -> np.ndarray:
        total = self.gm + self.wm + self.csf
        if self.lesions is not None:
            total[self.lesions.box] += self.lesions.total()
        return total

    def without_lesions(self) -> Anatomy:
        """The same brain with each lesion's tissue given back to what it replaced (mass effect kept): the
        lesion-free rendering a lesion mask is checked against."""
        from dataclasses import replace

        out = replace(self, gm=self.gm.copy(), wm=self.wm.copy(), csf=self.csf.copy(), lesions=None,
                      lesion_mask=None)
        if self.lesions is not None:
            for name, part in self.lesions.replaced.items():
                getattr(out, name)[self.lesions.box] += part
        return out

    def tissue_labels(self) -> np.ndarray:
        """0 background, 1 CSF, 2 GM, 3 WM, 4 lesion (largest fraction; background where intracranial < 0.5)."""
        stack = np.stack([self.csf, self.gm, self.wm])
        seg = (np.argmax(stack, axis=0) + 1).astype(np.uint8)
        if self.lesions is not None:
            box = self.lesions.box
            seg[box][self.lesions.total() > stack[(slice(None), *box)].max(axis=0)] = 4
        seg[self.intracranial < 0.5] = 0
        return seg

    def volumes_ml(self) -> dict[str, float]:
        """Volumes measured on this anatomy (not the targets that were asked for)."""
        v = self.voxel_ml
        icv, gm, wm, csf = (float(a.sum(dtype=np.float64) * v) for a in
                            (self.intracranial, self.gm, self.wm, self.csf))
        vent = ndimage.binary_dilation(np.isin(self.labels, label_ids(*LATERAL_VENTRICLE_LABELS)))
        return {"icv_ml": icv, "gm_ml": gm, "wm_ml": wm, "csf_ml": csf,
                "lateral_ventricles_ml": float(self.csf[vent].sum(dtype=np.float64) * v),
                "nwbv": (gm + wm) / icv}


def exponentiate(velocity: np.ndarray, steps: int = 5) -> np.ndarray:
    """Displacement of exp(v) by scaling and squaring (Arsigny et al. 2006); arrays are (3, X, Y, Z), voxels."""
    disp = velocity / (2 ** steps)
    grid = np.indices(disp.shape[1:], dtype=np.float32)
    for _ in range(steps):
        coords = grid + disp
        disp = disp + np.stack([ndimage.map_coordinates(d, coords, order=1, mode="nearest") for d in disp])
    return disp


def _warp(volume: np.ndarray, coords: np.ndarray, order: int = 1) -> np.ndarray:
    return ndimage.map_coordinates(volume, coords, order=order, mode="constant", cval=0.0)


@dataclass(frozen=True)
class _VentricleField:
    box: tuple[slice, slice, slice]
    velocity: np.ndarray  # unit-strength outward velocity field in the box (3, ...), voxels
    strengths: np.ndarray  # calibration: strength -> ventricle volume ratio
    ratios: np.ndarray


@lru_cache(maxsize=2)
def _ventricle_field(grid: VolumeGrid) -> _VentricleField:
    """Smooth field pointing into the lateral ventricles, and its calibration on the template."""
    priors, labels = tissue_priors(grid), atlas_labels(grid)
    vent = np.isin(labels, label_ids(*LATERAL_VENTRICLE_LABELS))
    idx = np.argwhere(vent)
    margin = 16
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, grid.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    smooth = ndimage.gaussian_filter(vent[box].astype(np.float32), 3.0)
    grad = np.stack(np.gradient(smooth))
    # Sampling uphill (towards the ventricles) makes the ventricles grow into the surrounding tissue.
    velocity = grad / np.abs(grad).max()
    base = _ventricle_volume(priors.csf[box], labels[box])
    strengths = np.array([-3, -2, -1, 0, 1, 2, 3, 4, 6, 8, 10, 13, 16], dtype=np.float32)
    ratios = []
    for s in strengths:
        coords = np.indices(smooth.shape, dtype=np.float32) + exponentiate(velocity * s)
        ratios.append(_ventricle_volume(_warp(priors.csf[box], coords), _warp(labels[box], coords, 0)) / base)
    return _VentricleField(box, velocity.astype(np.float32), strengths, np.array(ratios))


def _ventricle_volume(csf: np.ndarray, labels: np.ndarray) -> float:
    vent = ndimage.binary_dilation(np.isin(labels, label_ids(*LATERAL_VENTRICLE_LABELS)))
    return float(csf[vent].sum())


def _convert(src: np.ndarray, dst: np.ndarray, weight: np.ndarray, amount: float) -> None:
    """Move `amount` (voxel fractions) from src to dst in place, in proportion to weight, at most 90 %
    of any voxel, solving for the proportionality constant by bisection."""
    if amount <= 0:
        return
    sel = (src > 1e-3) & (weight > 1e-3)
    s, w = src[sel], weight[sel]
    if (s * 0.9).sum() < amount:
        raise ValueError("atrophy target exceeds the tissue available")
    lo, hi = 0.0, 1.0
    while (s * np.minimum(hi * w, 0.9)).sum() < amount:
        hi *= 2
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if (s * np.minimum(mid * w, 0.9)).sum() < amount else (lo, mid)
    moved = s * np.minimum(hi * w, 0.9)
    src[sel] = s - moved
    dst[sel] += moved


def _random_velocity(shape: tuple[int, ...], rng: np.random.Generator, amplitude_vox: float,
                     smoothness_vox: float) -> np.ndarray:
    """Smooth random velocity field with a given maximum magnitude (voxels), built on a coarse grid."""
    step = 4
    coarse_shape = tuple(int(np.ceil(n / step)) + 1 for n in shape)
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(coarse_shape), smoothness_vox / step)
                      for _ in range(3)])
    field *= amplitude_vox / np.abs(field).max()
    zoom = [n / c for n, c in zip(shape, coarse_shape, strict=True)]
    return np.stack([ndimage.zoom(f, zoom, order=1)[: shape[0], : shape[1], : shape[2]] for f in field])


@dataclass
class IndividualTraits:
    """What makes one person that person, drawn once and shared by all their scans: individual factors on
    the age trends, head size and the shape warp; the pose is only the first scan's."""

    ventricle_factor: float  # times the age trend of ventricle volume
    gm_factor: float  # times the age trend of the GM fraction
    wm_factor: float
    icv_ml: float
    scale: float  # native <- MNI linear scale that gives icv_ml
    rotation_deg: np.ndarray
    translation_mm: np.ndarray
    displacement: np.ndarray  # (3, X, Y, Z) template voxels: the individual shape warp

    def to_mni(self, rotation_deg: np.ndarray | None = None, translation_mm: np.ndarray | None = None) -> np.ndarray:
        """native <- MNI of a scan: this head, in the given pose (default: the first scan's)."""
        return _pose(self.scale, self.rotation_deg if rotation_deg is None else rotation_deg,
                     self.translation_mm if translation_mm is None else translation_mm)


def draw_traits(grid: VolumeGrid, sex: str, rng: np.random.Generator,
                model: AgeingModel = AgeingModel()) -> IndividualTraits:
    """One person's traits (the draws, in the order the cohort has always made them)."""
    ventricle_factor = float(np.exp(rng.normal(0, model.ventricle_log_sd)))
    gm_factor, wm_factor = rng.normal(1, model.tissue_cv), rng.normal(1, model.tissue_cv)
    icv_ml = model.icv_ml[0 if sex == "F" else 1] * float(np.exp(rng.normal(0, model.icv_cv)))
    voxel_ml = grid.spacing_mm ** 3 / 1000
    scale = (icv_ml / (float(tissue_priors(grid).intracranial.sum()) * voxel_ml)) ** (1 / 3)
    rotation, translation = rng.normal(0, 3, 3), rng.normal(0, 3, 3)
    velocity = _random_velocity(grid.shape, rng, amplitude_vox=rng.uniform(2.0, 4.0) / grid.spacing_mm,
                                smoothness_vox=18.0 / grid.spacing_mm)
    return IndividualTraits(ventricle_factor, gm_factor, wm_factor, icv_ml, scale, rotation, translation,
                            exponentiate(velocity, steps=4))


@dataclass
class AgedTemplate:
    """Tissue maps of one person at one age, still in template space (before shape warp and pose)."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    labels: np.ndarray
    ventricle_ratio: float
    gm_target: float  # template voxels of GM asked for
    wm_target: float
    lesions: LesionMaps | None = None


def cross_sectional_targets(grid: VolumeGrid, age: float, traits: IndividualTraits,
                            model: AgeingModel = AgeingModel()) -> tuple[float, float]:
    """GM and WM (template voxels) a person of this age should have: the age trend times their factor,
    never more than the young template (tissue is lost, not made)."""
    priors = tissue_priors(grid)
    # float32 sums, as the cohort has always computed them (float64 would move the result in the last bits)
    return (priors.gm.sum() * min(1.0, model.gm_fraction(age) * traits.gm_factor),
            priors.wm.sum() * min(1.0, model.wm_fraction(age) * traits.wm_factor))


def age_template(grid: VolumeGrid, age: float, traits: IndividualTraits, model: AgeingModel = AgeingModel(),
                 targets: tuple[float, float] | None = None) -> AgedTemplate:
    """Ventricle growth and tissue loss of one age, in template space; `targets` (GM, WM template voxels)
    replace the cross-sectional ones (a later session of a longitudinal subject)."""
    priors, labels = tissue_priors(grid), atlas_labels(grid)
    gm, wm, csf, labels = priors.gm.copy(), priors.wm.copy(), priors.csf.copy(), labels.copy()

    # 1. Ventricles: deform towards the age target (times an individual factor).
    field = _ventricle_field(grid)
    vent_ratio = model.ventricle_ratio(age) * traits.ventricle_factor
    strength = float(np.interp(vent_ratio, field.ratios, field.strengths))
    coords = np.indices(field.velocity.shape[1:], dtype=np.float32) + exponentiate(field.velocity * strength)
    box = field.box
    for tissue in (gm, wm, csf):
        tissue[box] = _warp(tissue[box], coords)
    labels[box] = _warp(labels[box], coords, order=0).astype(np.int16)

    # 2-3. Tissue loss towards the age targets, the lost tissue becoming CSF at the right places.
    gm_target, wm_target = targets or cross_sectional_targets(grid, age, traits, model)
    wm_loss = max(0.0, float(wm.sum()) - wm_target)
    _convert(wm, gm, ndimage.gaussian_filter(gm, 1.0), wm_loss)
    gm_loss = max(0.0, float(gm.sum()) - gm_target)
    # Squared proximity keeps the new CSF in the sulci and at the ventricle walls, not spread thinly.
    near_csf = ndimage.gaussian_filter(csf, 1.0) ** 2
    _convert(gm, csf, near_csf / max(float(near_csf.max()), 1e-6), gm_loss)
    return AgedTemplate(gm, wm, csf, labels, vent_ratio, gm_target, wm_target)


def place_in_native(grid: VolumeGrid, aged: AgedTemplate, traits: IndividualTraits,
                    to_mni: np.ndarray) -> Anatomy:
    """The individual shape warp, head size and pose applied to template-space tissue."""
    # Native voxel -> MNI world -> template voxel, then the individual deformation.
    vox = np.linalg.inv(grid.affine) @ np.linalg.inv(to_mni) @ grid.affine
    coords = np.tensordot(vox[:3, :3], np.indices(grid.shape, dtype=np.float32), axes=1)
    coords += vox[:3, 3].reshape(3, 1, 1, 1).astype(np.float32)
    coords += np.stack([ndimage.map_coordinates(d, coords, order=1, mode="nearest") for d in traits.displacement])
    anatomy = Anatomy(_warp(aged.gm, coords), _warp(aged.wm, coords), _warp(aged.csf, coords),
                      _warp(aged.labels, coords, order=0).astype(np.int16), to_mni, grid.spacing_mm ** 3 / 1000)
    if aged.lesions is not None:
        anatomy.lesions = _warp_lesions(aged.lesions, coords)
        tissue = {"gm": anatomy.gm, "wm": anatomy.wm, "csf": anatomy.csf}
        anatomy.lesion_mask = None if anatomy.lesions is None else finalise_mask(tissue, anatomy.lesions)
    return anatomy


def _warp_lesions(maps: LesionMaps, coords: np.ndarray) -> LesionMaps | None:
    """Template-box lesion maps -> native-box ones: only the native voxels that sample the template box."""
    start = np.array([s.start for s in maps.box], np.float32).reshape(3, 1, 1, 1)
    stop = np.array([s.stop for s in maps.box], np.float32).reshape(3, 1, 1, 1)
    inside = np.all((coords >= start - 1) & (coords <= stop), axis=0)
    box = bounding_box(inside, 1, inside.shape)
    if box is None:
        return None
    local = coords[(slice(None), *box)] - start
    out = LesionMaps(box)
    for target, source in ((out.tissues, maps.tissues), (out.replaced, maps.replaced)):
        for name, part in source.items():
            target[name] = _warp(np.asarray(part, np.float32), local)
    return out


def anatomy_targets(grid: VolumeGrid, aged: AgedTemplate, traits: IndividualTraits) -> dict:
    """What was asked for (beside what is measured on the anatomy)."""
    priors = tissue_priors(grid)
    return {"icv_ml": traits.icv_ml, "ventricle_ratio": aged.ventricle_ratio,
            "gm_fraction": aged.gm_target / float(priors.gm.sum()),
            "wm_fraction": aged.wm_target / float(priors.wm.sum()),
            "scale": traits.scale,
            "max_shape_displacement_mm": float(np.abs(traits.displacement).max() * grid.spacing_mm)}


def make_anatomy(grid: VolumeGrid, age: float, sex: str, rng: np.random.Generator,
                 model: AgeingModel = AgeingModel()) -> tuple[Anatomy, dict]:
    """Draw one subject's anatomy; returns it with the targets that were asked for."""
    traits = draw_traits(grid, sex, rng, model)
    aged = age_template(grid, age, traits, model)
    return place_in_native(grid, aged, traits, traits.to_mni()), anatomy_targets(grid, aged, traits)


def _pose(scale: float, rotation_deg: np.ndarray, translation_mm: np.ndarray) -> np.ndarray:
    """native <- MNI: scale and rotate about the brain centre, then translate."""
    rx, ry, rz = np.radians(rotation_deg)
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    rot = (np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
           @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]))
    centre = np.array(BRAIN_CENTRE_MNI)
    out = np.eye(4)
    out[:3, :3] = rot * scale
    out[:3, 3] = centre + translation_mm - out[:3, :3] @ centre
    return out
