"""Which slices the benchmark uses: a few per lesion type from test subjects (each showing at least a minimum
of lesion), healthy test slices, healthy validation slices for the thresholds, and the healthy fit slices at the
positions those need. Sizes are options: the CPU is shared, the defaults are small."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dallebrain.anomaly.cases import Case, LesionCohort


@dataclass(frozen=True)
class SelectionSizes:
    n_per_type: int = 16  # lesion slices per lesion type
    n_healthy: int = 32  # slices of healthy test subjects
    n_val: int = 32  # slices of healthy validation subjects (thresholds)
    max_fit: int = 1500  # healthy slices the normal model is fitted on, at most
    min_lesion_px: int = 10  # a lesion slice shows at least this many lesion pixels

    def __post_init__(self) -> None:
        for name in ("n_per_type", "n_healthy", "n_val", "max_fit", "min_lesion_px"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class Selection:
    fit: pd.DataFrame
    val: list[Case]
    healthy: list[Case]
    lesions: list[Case]


def _shuffled(table: pd.DataFrame, seed: int) -> pd.DataFrame:
    return table.sample(frac=1.0, random_state=seed) if len(table) else table


def _lesion_cases(cohort: LesionCohort, rows: pd.DataFrame, n: int, min_px: int, seed: int) -> list[Case]:
    """Up to n cases of these rows with at least min_px lesion pixels, visited in a seeded random order of subjects
    (all of a subject's rows together, so a simulator mask volume is resampled once) and then of slices."""
    subjects = rows["subject_id"].unique()
    order = np.random.default_rng(seed).permutation(len(subjects))
    cases: list[Case] = []
    per_subject = max(1, -(-n // max(len(subjects), 1)))  # spread over subjects: a few per subject
    for round_ in range(2):  # first a fair share per subject, then fill up from any
        for s in subjects[order]:
            mine = _shuffled(rows[rows["subject_id"] == s], seed)
            taken = sum(c.subject_id == s for c in cases)
            for _, row in mine.iterrows():
                if len(cases) >= n or (round_ == 0 and taken >= per_subject):
                    break
                if any(c.image_path == row["image_path"] for c in cases):
                    continue
                case = cohort.case(row)
                if int((case.mask > 0).sum()) >= min_px:
                    cases.append(case)
                    taken += 1
    return cases


def at_positions(table: pd.DataFrame, wanted: pd.DataFrame, pool_mm: float) -> pd.DataFrame:
    """Rows of `table` at a position (contrast, plane, level within pool_mm) some row of `wanted` has."""
    keep = np.zeros(len(table), bool)
    for (modality, orientation), group in wanted.groupby(["modality", "orientation"]):
        levels = np.unique(group["slice_mm"].to_numpy())
        same = (table["modality"] == modality).to_numpy() & (table["orientation"] == orientation).to_numpy()
        distance = np.abs(table["slice_mm"].to_numpy()[:, None] - levels[None]).min(axis=1)
        keep |= same & (distance <= pool_mm + 1e-6)
    return table[keep]


def spread_over_positions(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows reordered so that every position comes once before any comes twice: any first k of them (the
    fit slices kept, the slices a calibrated method learns on) cover as many positions as k allows."""
    if rows.empty:
        return rows
    rank = rows.groupby(["modality", "orientation", "slice_mm"]).cumcount()
    return rows.assign(_rank=rank.to_numpy()).sort_values("_rank", kind="stable").drop(columns="_rank")


def select(cohort: LesionCohort, sizes: SelectionSizes, lesion_types: tuple[str, ...], pool_mm: float,
           seed: int = 0) -> Selection:
    """The benchmark's slices; ValueError in one line when a role has no slice at all."""
    fit_all = cohort.table[(cohort.table["role"] == "fit") & (cohort.table["lesion_type"] == "none")]
    t = at_positions(cohort.table, fit_all, pool_mm)  # only positions the normal model can be fitted at
    val_rows = _shuffled(t[(t["role"] == "val") & (t["lesion_type"] == "none")], seed).head(sizes.n_val)
    healthy_rows = _shuffled(t[(t["role"] == "test") & (t["lesion_type"] == "none")], seed).head(sizes.n_healthy)
    lesions = []
    for k, kind in enumerate(lesion_types):
        rows = t[(t["role"] == "test") & (t["lesion_type"] == kind)]
        lesions += _lesion_cases(cohort, rows, sizes.n_per_type, sizes.min_lesion_px, seed + k)
    if val_rows.empty or healthy_rows.empty or not lesions:
        raise ValueError(f"the data set has {len(val_rows)} healthy validation, {len(healthy_rows)} healthy test and "
                         f"{len(lesions)} lesion slices: each is needed (more subjects, or other --lesion-types)")
    wanted = pd.concat([val_rows, healthy_rows, pd.DataFrame([{"modality": c.attributes.modality, "orientation":
                       c.attributes.orientation, "slice_mm": c.attributes.slice_mm} for c in lesions])])
    fit_rows = spread_over_positions(_shuffled(at_positions(fit_all, wanted, pool_mm), seed)).head(sizes.max_fit)
    return Selection(fit_rows, [cohort.case(r) for _, r in val_rows.iterrows()],
                     [cohort.case(r) for _, r in healthy_rows.iterrows()], lesions)
