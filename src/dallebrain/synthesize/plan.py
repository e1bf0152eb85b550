"""What synthetic slice i shows: its attributes, caption, seed and split, a pure function of (settings, i).

Nothing about the plan is held for the whole data set: any process can plan any slice on its own, which is
what lets a killed run resume, shards of several processes agree, and 100,000 slices cost the memory of 10.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from dallebrain.data.captions import SliceFacts, build_captions, volume_descriptor
from dallebrain.data.grid import VolumeGrid
from dallebrain.data.landmarks import landmark
from dallebrain.synthesize.mix import AttributeMix, Weighted
from dallebrain.vocab import MODALITIES, ORIENTATIONS

CAPTIONS_PER_SLICE = 5  # as `data prepare` writes: the first is the canonical caption, used as the prompt
SPLIT_FRACTIONS = (("train", 0.8), ("val", 0.1), ("test", 0.1))
# Levels an explicit mix draws from: those `data prepare` keeps by default (a slice every 3 mm showing at least
# 10 % brain), measured on the template's intracranial mask, so prompts ask for what the model was shown.
LEVEL_STEP_MM = 3.0
MIN_BRAIN_FRACTION = 0.1
LIKE_COLUMNS = ("modality", "orientation", "slice_mm", "age", "sex", "field_strength")


@dataclass(frozen=True)
class PlannedSlice:
    index: int  # position in the data set, 0..n-1
    seed: int  # its own noise seed: the data set's --seed + index
    split: str
    facts: SliceFacts
    slice_index: int  # plane index on the model's grid
    captions: tuple[str, ...]
    ventricles_z: float | None = None
    brain_volume_z: float | None = None

    @property
    def prompt(self) -> str:
        return self.captions[0]

    @property
    def subject_id(self) -> str:
        # every synthetic slice is its own made-up person: no two slices share an anatomy
        return f"synthetic-{self.index:07d}"

    def path(self, suffix: str) -> str:
        """Relative file name; a thousand slices per folder keeps folders listable at 100,000 slices."""
        return f"slices/{self.index // 1000:05d}/{self.subject_id}{suffix}"


@lru_cache(maxsize=8)
def brain_levels(grid: VolumeGrid, orientation: str) -> tuple[tuple[int, float, tuple[str, ...]], ...]:
    """(plane index, MNI level, visible atlas structures) of every level `prepare` would keep on the template."""
    from dallebrain.data.grid import extract_slice
    from dallebrain.data.slicing import slice_positions, visible_structures
    from dallebrain.data.templates import atlas_labels, tissue_priors

    brain = tissue_priors(grid).intracranial > 0.5
    labels = atlas_labels(grid)
    out = []
    for index in slice_positions(grid, orientation, LEVEL_STEP_MM):
        mask = extract_slice(brain, orientation, index)
        if mask.mean() >= MIN_BRAIN_FRACTION:
            structures = visible_structures(extract_slice(labels, orientation, index), int(mask.sum()))
            out.append((index, grid.level_mm(orientation, index), structures))
    return tuple(out)


def _pick(rng: np.random.Generator, weighted: Weighted):
    return weighted.choices[int(rng.choice(len(weighted.choices), p=weighted.probabilities))]


class MixSampler:
    """Attributes drawn independently from an explicit AttributeMix."""

    def __init__(self, mix: AttributeMix, grid: VolumeGrid):
        self.mix, self.grid = mix, grid
        self.candidates: dict[str, tuple[list, Weighted]] = {}
        for plane in mix.planes.choices:
            levels = brain_levels(grid, plane)
            if mix.levels is None:
                self.candidates[plane] = ([levels], Weighted((0,), (1.0,)))
                continue
            ranges = [[lv for lv in levels if lo - 1e-6 <= lv[1] <= hi + 1e-6] for lo, hi in mix.levels.choices]
            kept = [(i, p) for i, p in enumerate(mix.levels.probabilities) if ranges[i]]
            if not kept:
                raise ValueError(f"--levels {mix.describe()['levels']} holds no {plane} slice that shows brain: "
                                 f"{plane} levels run from {levels[0][1]:+.1f} to {levels[-1][1]:+.1f} mm")
            total = sum(p for _, p in kept)
            self.candidates[plane] = (ranges, Weighted(tuple(i for i, _ in kept), tuple(p / total for _, p in kept)))

    def draw(self, rng: np.random.Generator) -> tuple[SliceFacts, int, float | None, float | None]:
        plane = _pick(rng, self.mix.planes)
        ranges, which = self.candidates[plane]
        chosen = ranges[_pick(rng, which)]
        index, level, structures = chosen[int(rng.integers(len(chosen)))]
        low, high = _pick(rng, self.mix.ages)
        ages = np.arange(math.ceil(low), math.floor(high) + 1)
        age = float(ages[int(rng.integers(len(ages)))]) if len(ages) else float(low)
        facts = SliceFacts(orientation=plane, slice_mm=level, modality=_pick(rng, self.mix.contrasts),
                           field_strength=_pick(rng, self.mix.field_strengths), age=age,
                           sex=_pick(rng, self.mix.sexes), structures=structures)
        return facts, index, None, None


def _value(v):
    """None for a missing table value (None, NaN, pandas NA)."""
    if v is None:
        return None
    try:
        return None if bool(v != v) else v
    except (TypeError, ValueError):
        return v


class LikeSampler:
    """Attributes of a row drawn from a prepared data set's train split: its joint distribution of contrast, plane,
    level, age, sex, field strength (and the structures and volume descriptors of that real slice)."""

    def __init__(self, prepared: str | Path, grid: VolumeGrid):
        import pandas as pd

        path = Path(prepared) / "metadata.parquet"
        if not path.is_file():
            raise ValueError(f"--like: not a prepared data set (no metadata.parquet): {prepared}")
        table = pd.read_parquet(path)
        missing = [c for c in LIKE_COLUMNS if c not in table]
        if missing:
            raise ValueError(f"--like: {path} lacks the column(s) {', '.join(missing)}")
        if "split" in table and (table["split"] == "train").any():
            table = table[table["split"] == "train"]  # the held-out subjects stay unseen, even their attributes
        table = table[table["modality"].isin(MODALITIES) & table["orientation"].isin(ORIENTATIONS)]
        if table.empty:
            raise ValueError(f"--like: {path} has no slice of a known contrast and plane")
        self.grid = grid
        self.rows = table.reset_index(drop=True)

    def draw(self, rng: np.random.Generator) -> tuple[SliceFacts, int, float | None, float | None]:
        row = self.rows.iloc[int(rng.integers(len(self.rows)))]
        get = row.get
        structures = get("structures")
        ventricles_z, brain_z = _value(get("ventricles_z")), _value(get("brain_volume_z"))
        age, field = _value(get("age")), _value(get("field_strength"))
        facts = SliceFacts(orientation=row["orientation"], slice_mm=float(row["slice_mm"]),
                           modality=row["modality"], field_strength=None if field is None else float(field),
                           age=None if age is None else float(age), sex=_value(get("sex")),
                           structures=() if structures is None else tuple(str(s) for s in structures),
                           ventricles=volume_descriptor(ventricles_z), brain_volume=volume_descriptor(brain_z))
        return facts, self.grid.index_of(facts.orientation, facts.slice_mm), ventricles_z, brain_z


def plan_slice(sampler: MixSampler | LikeSampler, seed: int, index: int) -> PlannedSlice:
    """Slice `index` of the data set made with `seed`: the same whichever process asks, and whenever."""
    rng = np.random.default_rng([seed, index])
    u = rng.random()
    split = next(name for name, edge in zip(("train", "val", "test"), np.cumsum([f for _, f in SPLIT_FRACTIONS]),
                                            strict=True) if u < edge or name == "test")
    facts, slice_index, ventricles_z, brain_z = sampler.draw(rng)
    captions = tuple(build_captions(facts, CAPTIONS_PER_SLICE, seed))
    return PlannedSlice(index, seed + index, split, facts, slice_index, captions, ventricles_z, brain_z)


def slice_landmark(planned: PlannedSlice) -> str:
    return landmark(planned.facts.orientation, planned.facts.slice_mm)

