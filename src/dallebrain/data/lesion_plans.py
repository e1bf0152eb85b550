"""Who gets which lesion, how large, how many and where: one plan per subject, drawn once, drawn again at
every session's age (only white-matter hyperintensities change with age here).

Distributions (printed beside ours by benchmarks/bench_lesions.py):
- WMH: Fazekas F et al. AJR 1987;149:351-356 (grades 0-3); de Leeuw FE et al. J Neurol Neurosurg Psychiatry
  2001;70:9-14 (Rotterdam Scan Study: WMH in about 95 % at 60-90 years, more and larger with age);
  Wardlaw JM et al. Lancet Neurol 2013;12:822-838 (STRIVE: periventricular caps and bands, deep punctate
  foci of a few mm that become confluent); Schmidt R et al. Lancet 2003;361:2046-2048 (lesions progress,
  faster from higher grades). [check] grade-by-age table, volumes per grade and growth rate are round
  values read from these, not fitted.
- MS: Filippi M et al. Lancet Neurol 2016;15:292-303 (MAGNIMS: ovoid lesions >= 3 mm, periventricular,
  juxtacortical, infratentorial); Thompson AJ et al. Lancet Neurol 2018;17:162-173 (McDonald 2017).
  [check] counts (median about 15) and sizes (long axis median about 8 mm) are typical values, not fitted.
- Infarcts: Bogousslavsky J et al. Stroke 1988;19:1083-1092 (Lausanne Stroke Registry: the middle cerebral
  artery's territory in most territorial infarcts); Tatu L et al. Neurology 1998;50:1699-1708 (territories).
  [check] territory shares 70/20/10 % and the volume distribution (median 20 mL) are round values.
- Tumours: Larjavaara S et al. Neuro-Oncology 2007;9:319-325 (gliomas: frontal 40 %, temporal 29 %,
  parietal 14 %, occipital 3 %, the rest deep or overlapping). [check] diameter (median 40 mm), necrosis
  and oedema reach are typical high-grade glioma values, not fitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dallebrain.data.grid import VolumeGrid
from dallebrain.data.lesion_atlas import LOBES, TERRITORIES, LesionAtlas, describe_place, lesion_atlas
from dallebrain.data.lesion_shapes import Ovoid, SmoothNoise, infarct_shapes, ms_shapes, tumour_shapes, wmh_shapes
from dallebrain.data.lesions import LesionMaps
from dallebrain.data.templates import tissue_priors

# Fazekas grade probabilities (0, 1, 2, 3) by age band (upper bound exclusive).
FAZEKAS_BY_AGE = ((45, (0.70, 0.25, 0.05, 0.00)), (60, (0.40, 0.42, 0.13, 0.05)),
                  (75, (0.15, 0.45, 0.28, 0.12)), (200, (0.05, 0.35, 0.35, 0.25)))
WMH_ML_BY_GRADE = {1: (0.5, 4.0), 2: (4.0, 12.0), 3: (12.0, 50.0)}  # log-uniform, mL
WMH_GROWTH_PER_YEAR = (0.08, 0.4)  # median relative growth, log-sd
MS_LOCATIONS = {"periventricular": 0.35, "juxtacortical": 0.25, "deep white matter": 0.30, "infratentorial": 0.10}
MS_COUNT = (15.0, 0.7, 2, 60)  # log-normal median, log-sd, clipped to [min, max]
MS_LONG_AXIS_MM = (8.0, 0.45, 3.0, 25.0)
INFARCT_TERRITORIES = {"middle cerebral artery": 0.70, "posterior cerebral artery": 0.20,
                       "anterior cerebral artery": 0.10}
INFARCT_ML = (20.0, 0.8, 3.0, 150.0)
TUMOUR_LOBES = {"frontal lobe": 0.40, "temporal lobe": 0.29, "parietal lobe": 0.14, "occipital lobe": 0.03,
                "insula": 0.07, "basal ganglia": 0.07}
TUMOUR_DIAMETER_MM = (40.0, 0.3, 15.0, 70.0)


def _lognormal(rng: np.random.Generator, spec: tuple[float, float, float, float]) -> float:
    median, log_sd, low, high = spec
    return float(np.clip(median * np.exp(rng.normal(0, log_sd)), low, high))


def _pick(rng: np.random.Generator, shares: dict[str, float]) -> str:
    names = list(shares)
    p = np.array([shares[n] for n in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _voxel(rng: np.random.Generator, candidates: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(candidates)
    if idx.size == 0:
        raise ValueError("no place on the template fits this lesion")
    return np.array(np.unravel_index(int(rng.choice(idx)), candidates.shape), dtype=np.float32)


def fazekas_grade(volume_ml: float) -> int:
    """The grade a WMH load reads as (the grade-volume bands of WMH_ML_BY_GRADE)."""
    if volume_ml <= 0:
        return 0
    return 1 if volume_ml < WMH_ML_BY_GRADE[2][0] else 2 if volume_ml < WMH_ML_BY_GRADE[3][0] else 3


@dataclass(frozen=True)
class WmhPlan:
    volume_ml: float  # at the baseline age
    baseline_age: float
    growth_per_year: float
    periventricular_share: float
    cap_mm: float
    foci: tuple[tuple[np.ndarray, float], ...]  # (template voxel, radius mm at baseline)
    noise: SmoothNoise
    kind: str = "wmh"

    def volume_at(self, age: float) -> float:
        return self.volume_ml * float(np.exp(self.growth_per_year * (age - self.baseline_age)))

    def apply(self, tissue: dict, grid: VolumeGrid, ml_per_voxel: float, age: float) -> LesionMaps:
        growth = self.volume_at(age) / self.volume_ml
        foci = [(c, r * growth ** (1 / 3)) for c, r in self.foci]
        periventricular = self.volume_at(age) * self.periventricular_share / ml_per_voxel
        return wmh_shapes(tissue, grid, periventricular, foci, self.cap_mm, self.noise)

    def finding(self, volumes: dict) -> str:
        return f"white matter hyperintensities (Fazekas {fazekas_grade(volumes['wmh_ml'])})"

    def site(self) -> str:
        return "periventricular and deep white matter"


def draw_wmh(rng: np.random.Generator, age: float, atlas: LesionAtlas, grid: VolumeGrid) -> WmhPlan | None:
    probabilities = next(p for upper, p in FAZEKAS_BY_AGE if age < upper)
    grade = int(rng.choice(4, p=probabilities))
    if grade == 0:
        return None  # no lesion: the subject stays healthy
    low, high = WMH_ML_BY_GRADE[grade]
    volume = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    share = float(rng.uniform(0.6, 0.85))
    deep = (atlas.brain & (tissue_priors(grid).wm > 0.9) & (atlas.cortex_mm > 6) & (atlas.ventricle_mm > 10)
            & (atlas.lobe > 0) & (atlas.lobe <= 4))
    foci, total = [], 0.0
    while total < volume * (1 - share) and len(foci) < 60:
        radius = float(np.exp(rng.uniform(np.log(1.5), np.log(4.0))))
        foci.append((_voxel(rng, deep), radius))
        total += 4 / 3 * np.pi * radius ** 3 / 1000
    growth = WMH_GROWTH_PER_YEAR[0] * float(np.exp(rng.normal(0, WMH_GROWTH_PER_YEAR[1])))
    return WmhPlan(volume, age, growth, share if foci else 1.0, float(rng.uniform(3, 8)), tuple(foci),
                   SmoothNoise(int(rng.integers(2**31)), 10.0))


@dataclass(frozen=True)
class MsPlan:
    ovoids: tuple[Ovoid, ...]
    locations: tuple[str, ...]
    kind: str = "ms"

    def apply(self, tissue: dict, grid: VolumeGrid, ml_per_voxel: float, age: float) -> LesionMaps | None:
        return ms_shapes(tissue, grid, list(self.ovoids))

    def finding(self, volumes: dict) -> str:
        places = [p for p in MS_LOCATIONS if p in self.locations]
        words = " and ".join(places[:2]) if len(places) <= 2 else ", ".join(places[:-1]) + " and " + places[-1]
        return f"{words} multiple sclerosis lesions"

    def site(self) -> str:
        return ", ".join(p for p in MS_LOCATIONS if p in self.locations)


def _ms_candidates(atlas: LesionAtlas, grid: VolumeGrid) -> dict[str, np.ndarray]:
    wm = tissue_priors(grid).wm
    cerebral = (atlas.lobe > 0) & (atlas.lobe <= 5)
    return {"periventricular": (wm > 0.5) & (atlas.ventricle_mm >= 1.5) & (atlas.ventricle_mm <= 6) & cerebral,
            "juxtacortical": (wm > 0.3) & (atlas.cortex_mm <= 3) & cerebral & (atlas.edge_mm > 4),
            "deep white matter": (wm > 0.8) & (atlas.ventricle_mm > 8) & (atlas.cortex_mm > 5) & cerebral,
            "infratentorial": (wm > 0.5) & (atlas.lobe >= LOBES.index("cerebellum") + 1)}


def _axes_towards(direction: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Orthonormal axes whose first column is `direction` (random when it is zero)."""
    first = direction if np.linalg.norm(direction) > 1e-6 else rng.standard_normal(3)
    q, _ = np.linalg.qr(np.column_stack([first, rng.standard_normal((3, 2))]))
    return q


def draw_ms(rng: np.random.Generator, age: float, atlas: LesionAtlas, grid: VolumeGrid) -> MsPlan:
    candidates = _ms_candidates(atlas, grid)
    gradient = np.gradient(atlas.ventricle_mm)
    ovoids, places = [], set()
    for _ in range(int(round(_lognormal(rng, MS_COUNT)))):
        place = _pick(rng, MS_LOCATIONS)
        centre = _voxel(rng, candidates[place])
        long_axis = _lognormal(rng, MS_LONG_AXIS_MM) / 2
        radii = np.array([long_axis, *(long_axis * rng.uniform(0.5, 0.8, 2))])
        # Periventricular plaques point away from the ventricle wall (Dawson's fingers).
        towards = np.array([g[tuple(centre.astype(int))] for g in gradient]) if place == "periventricular" else 0
        ovoids.append(Ovoid(centre, radii, _axes_towards(np.asarray(towards, float), rng),
                            juxtacortical=place == "juxtacortical"))
        places.add(place)
    return MsPlan(tuple(ovoids), tuple(sorted(places)))


@dataclass(frozen=True)
class InfarctPlan:
    territory: str
    left: bool
    seed_voxel: np.ndarray
    inward: np.ndarray
    volume_ml: float
    rim_mm: float
    noise: SmoothNoise
    kind: str = "infarct"

    def apply(self, tissue: dict, grid: VolumeGrid, ml_per_voxel: float, age: float) -> LesionMaps:
        atlas = lesion_atlas(grid)
        candidates = (atlas.territory == TERRITORIES.index(self.territory) + 1) & (atlas.left == self.left)
        return infarct_shapes(tissue, grid, candidates & atlas.brain, self.seed_voxel, self.inward,
                              self.volume_ml / ml_per_voxel, self.rim_mm, self.noise)

    def finding(self, volumes: dict) -> str:
        return f"a chronic infarct in the {self.site()} territory"

    def site(self) -> str:
        return f"{'left' if self.left else 'right'} {self.territory}"


def draw_infarct(rng: np.random.Generator, age: float, atlas: LesionAtlas, grid: VolumeGrid) -> InfarctPlan:
    territory, left = _pick(rng, INFARCT_TERRITORIES), bool(rng.random() < 0.5)
    priors = tissue_priors(grid)
    cortex = ((atlas.territory == TERRITORIES.index(territory) + 1) & (atlas.left == left) & atlas.brain
              & (priors.gm > priors.wm) & (atlas.edge_mm > 3))
    seed = _voxel(rng, cortex)
    centre = np.linalg.inv(grid.affine) @ np.array([-14.0 if left else 14.0, -10.0, 12.0, 1.0])
    inward = centre[:3] - seed
    return InfarctPlan(territory, left, seed, (inward / np.linalg.norm(inward)).astype(np.float32),
                       _lognormal(rng, INFARCT_ML), float(rng.uniform(1.5, 3.0)),
                       SmoothNoise(int(rng.integers(2**31)), 12.0))


@dataclass(frozen=True)
class TumourPlan:
    place: str
    centre: np.ndarray
    diameter_mm: float
    necrosis_fraction: float
    oedema_mm: float
    displaced_fraction: float
    noise: SmoothNoise
    kind: str = "tumour"

    def apply(self, tissue: dict, grid: VolumeGrid, ml_per_voxel: float, age: float) -> LesionMaps:
        # The plan is in template mm; the subject's head scale makes the native tumour as large as drawn.
        scale = (ml_per_voxel / (grid.spacing_mm ** 3 / 1000)) ** (1 / 3)
        return tumour_shapes(tissue, grid, self.centre, self.diameter_mm / 2 / scale, self.necrosis_fraction,
                             self.oedema_mm / scale, self.displaced_fraction, lesion_atlas(grid).edge_mm, self.noise)

    def finding(self, volumes: dict) -> str:
        diameter = 2 * (3 * (volumes["tumour_ml"] + volumes["necrosis_ml"]) * 1000 / (4 * np.pi)) ** (1 / 3)
        core = " with a necrotic core" if volumes["necrosis_ml"] > 0 else ""
        return f"a {diameter:.0f} mm tumour in the {self.place}{core} and surrounding oedema"

    def site(self) -> str:
        return self.place


def draw_tumour(rng: np.random.Generator, age: float, atlas: LesionAtlas, grid: VolumeGrid) -> TumourPlan:
    lobe, left = _pick(rng, TUMOUR_LOBES), bool(rng.random() < 0.5)
    diameter = _lognormal(rng, TUMOUR_DIAMETER_MM)
    radius = diameter / 2
    region = (atlas.lobe == LOBES.index(lobe) + 1) & (atlas.left == left)
    wm = tissue_priors(grid).wm
    deep = lobe in ("basal ganglia", "insula")
    candidates = region & (atlas.edge_mm >= 0.6 * radius) & ((wm > 0.5) | deep)
    if not candidates.any():  # a large tumour in a small lobe: the deepest places of the lobe
        candidates = region & (atlas.edge_mm >= np.percentile(atlas.edge_mm[region], 90))
    centre = _voxel(rng, candidates)
    necrosis = float(rng.uniform(0.3, 0.65)) if rng.random() < 0.8 else 0.0
    oedema, displaced = float(rng.uniform(5, 25)), float(rng.uniform(0.4, 0.8))
    return TumourPlan(describe_place(atlas, tuple(centre.astype(int))), centre, diameter, necrosis, oedema,
                      displaced, SmoothNoise(int(rng.integers(2**31)), 8.0))


DRAW = {"wmh": draw_wmh, "ms": draw_ms, "infarct": draw_infarct, "tumour": draw_tumour}
LesionPlan = WmhPlan | MsPlan | InfarctPlan | TumourPlan


def draw_lesion_plan(types: tuple[str, ...], fraction: float, age: float, rng: np.random.Generator,
                     grid: VolumeGrid) -> LesionPlan | None:
    """None (healthy) with probability 1 - fraction, else a plan of one of `types` (a WMH draw of Fazekas 0
    also leaves the subject healthy)."""
    if not types or rng.random() >= fraction:
        return None
    kind = types[int(rng.integers(len(types)))]
    return DRAW[kind](rng, age, lesion_atlas(grid), grid)


LESION_COLUMNS = ["healthy", "lesion_type", "lesion_site", "findings", "lesion_count", "lesion_ml", "fazekas",
                  "wmh_ml", "ms_ml", "infarct_ml", "tumour_ml", "necrosis_ml", "oedema_ml"]


def lesion_summary(plan: LesionPlan | None, mask: np.ndarray | None, voxel_ml: float) -> dict:
    """The lesion columns of a scan, measured on its mask; 'healthy' only where the mask is empty."""
    from scipy import ndimage

    from dallebrain.data.lesions import mask_volumes_ml

    volumes = {f"{k}_ml": v for k, v in mask_volumes_ml(np.zeros(1, np.uint8) if mask is None else mask,
                                                          voxel_ml).items()}
    # Lesions counted as separate connected pieces; oedema is part of its tumour, not a lesion of its own.
    count = 0 if mask is None else int(ndimage.label((mask > 0) & (mask != 6))[1])
    if plan is None or count == 0:
        return {"healthy": True, "lesion_type": "none", "lesion_site": "", "findings": "", "lesion_count": 0,
                "lesion_ml": 0.0, "fazekas": 0, **volumes}
    return {"healthy": False, "lesion_type": plan.kind, "lesion_site": plan.site(), "findings": plan.finding(volumes),
            "lesion_count": count, "lesion_ml": float(sum(volumes.values())),
            "fazekas": fazekas_grade(volumes["wmh_ml"]), **volumes}


def add_lesions(aged, plan: LesionPlan | None, grid: VolumeGrid, ml_per_voxel: float, age: float):
    """The aged template (anatomy.AgedTemplate) with the plan's lesions drawn in, mass effect included."""
    from dataclasses import replace

    if plan is None:
        return aged
    tissue = {"gm": aged.gm, "wm": aged.wm, "csf": aged.csf, "labels": aged.labels}
    maps = plan.apply(tissue, grid, ml_per_voxel, age)
    return replace(aged, gm=tissue["gm"], wm=tissue["wm"], csf=tissue["csf"], labels=tissue["labels"], lesions=maps)
