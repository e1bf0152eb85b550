"""The lesion cohort the benchmark reads: prepared slices with exact lesion masks, whatever made them.

One small adapter with two sources behind it:
- "prepared": a data set prepared from a cohort simulated with lesions (`dallebrain data simulate --lesions`):
  `prepare` slices each scan's mask beside its images (metadata columns mask_path and lesion_type).
- "pasted": any healthy prepared data set (a prepared IXI, a healthy simulated cohort); lesions are pasted into
  the slices of some healthy test subjects (`paste.py`), one lesion type per slice in turn.
Subjects get roles: healthy ones are split into fit (the normal model), val (thresholds) and test; every lesion
subject is test only. The diffusion model is trained elsewhere, on other subjects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dallebrain.anomaly.attributes import SliceAttributes
from dallebrain.data.grid import VolumeGrid

SOURCES = ("auto", "prepared", "pasted")
MASK_COLUMNS = ("mask_path", "lesion_type")
HEALTHY_ROLES = ("fit", "val", "fit", "test")  # round robin over shuffled healthy subjects: 1/2, 1/4, 1/4
PASTED_ROLES = ("fit", "val", "pasted", "test")
SIZE_BINS_MM2 = ((0.0, 100.0, "small (<100 mm2)"), (100.0, 1000.0, "medium (100-1000 mm2)"),
                 (1000.0, np.inf, "large (>=1000 mm2)"))


@dataclass
class Case:
    """One slice of the benchmark, on the prepared grid."""

    image: np.ndarray  # (S, S) float32 in [0, 1]
    mask: np.ndarray  # (S, S) uint8 lesion labels (data.lesions.MASK_LABELS); all zero when healthy
    attributes: SliceAttributes
    subject_id: str
    lesion_type: str  # the subject's lesion type ("none": healthy subject)
    role: str  # fit, val or test
    image_path: str = ""

    def lesion_area_mm2(self, spacing_mm: float) -> float:
        return float((self.mask > 0).sum()) * spacing_mm ** 2


def size_bin(area_mm2: float) -> str:
    return next(name for low, high, name in SIZE_BINS_MM2 if low <= area_mm2 < high)


def attributes_of(row) -> SliceAttributes:
    def known(value):
        return None if value is None or (isinstance(value, float) and np.isnan(value)) else value

    age, field_strength = known(row.get("age")), known(row.get("field_strength"))
    return SliceAttributes(row["orientation"], float(row["slice_mm"]), row["modality"],
                           None if field_strength is None else float(field_strength),
                           None if age is None else float(age), known(row.get("sex")))


def load_mask(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im, dtype=np.uint8).copy()


@dataclass
class LesionCohort:
    """A prepared data set's slice table with subject roles and lesion types, and each slice's mask."""

    root: Path
    table: pd.DataFrame  # metadata rows + role, lesion_type
    grid: VolumeGrid
    source: str  # "prepared" or "pasted"
    seed: int = 0

    def case(self, row) -> Case:
        from dallebrain.data.slicing import load_png

        image = load_png(self.root / row["image_path"])
        mask = np.zeros(image.shape, np.uint8)
        if self.source == "prepared" and row["lesion_type"] != "none" and isinstance(row["mask_path"], str):
            mask = load_mask(self.root / row["mask_path"])
        elif self.source == "pasted" and row["lesion_type"] != "none":
            from dallebrain.anomaly.paste import paste_lesion

            rng = np.random.default_rng([self.seed, int(row.name)])
            image, mask = paste_lesion(image, row["lesion_type"], row["modality"], self.grid, row["orientation"],
                                       int(row["slice_index"]), rng, attributes_of(row).field_strength)
        return Case(image, mask, attributes_of(row), row["subject_id"], row["lesion_type"], row["role"],
                    row["image_path"])


def _subjects(table: pd.DataFrame, source: str, root: Path) -> tuple[str, pd.DataFrame]:
    """(source used, one row per subject with its lesion type: that of its lesion scans, else "none")."""
    has_masks = all(c in table for c in MASK_COLUMNS)
    if source == "prepared" and not has_masks:
        raise ValueError(f"{root} has no lesion masks (prepare a cohort simulated with --lesions): use --lesions "
                         "pasted")
    subjects = pd.DataFrame({"subject_id": table["subject_id"].unique()})
    if not has_masks or source == "pasted":
        return "pasted", subjects.assign(lesion_type="none")
    kinds = table["lesion_type"].fillna("none")
    first = kinds[kinds != "none"].groupby(table["subject_id"][kinds != "none"]).first()
    return "prepared", subjects.assign(lesion_type=subjects["subject_id"].map(first).fillna("none"))


def _assign_roles(subjects: pd.DataFrame, source: str, seed: int) -> pd.DataFrame:
    """Healthy subjects in turn (after a seeded shuffle) fit, val, fit, test; with pasted lesions fit, val,
    pasted (a lesion subject), test. Subjects with lesions of their own are test only."""
    subjects = subjects.sort_values("subject_id").reset_index(drop=True)
    healthy = subjects.index[subjects["lesion_type"] == "none"].to_numpy()
    healthy = healthy[np.random.default_rng(seed).permutation(len(healthy))]
    pattern = PASTED_ROLES if source == "pasted" else HEALTHY_ROLES
    subjects["role"] = "test"
    subjects.loc[healthy, "role"] = [pattern[i % len(pattern)] for i in range(len(healthy))]
    pasted = subjects["role"] == "pasted"
    subjects.loc[pasted, "role"] = "test"
    subjects.loc[pasted, "lesion_type"] = "pasted"
    return subjects


def load_cohort(prepared: str | Path, source: str = "auto", lesion_types: tuple[str, ...] = ("wmh", "ms", "infarct",
                "tumour"), seed: int = 0, subjects: list[str] | None = None) -> LesionCohort:
    """The prepared data set (only `subjects` when given) with roles and lesion types; ValueError in one line when
    it cannot serve."""
    from dallebrain.data.prepare import read_settings

    root = Path(prepared)
    meta = root / "metadata.parquet"
    if not meta.is_file() or not (root / "prepare.json").is_file():
        raise ValueError(f"not a prepared data set (metadata.parquet, prepare.json): {root}")
    if source not in SOURCES:
        raise ValueError(f"unknown lesion source {source!r}: choose from {', '.join(SOURCES)}")
    table = pd.read_parquet(meta)
    if subjects is not None:
        table = table[table["subject_id"].isin(subjects)]
    used, roles = _subjects(table, source, root)
    roles = _assign_roles(roles, used, seed)
    table = table.drop(columns=[c for c in ("lesion_type", "role") if c in table])
    table = table.merge(roles, on="subject_id", how="inner").sort_values(["subject_id", "image_path"])
    table = table.reset_index(drop=True)
    if used == "pasted":  # each slice of a lesion subject gets a type of its own, in turn: every type is present
        pasted = table.index[table["lesion_type"] == "pasted"]
        table.loc[pasted, "lesion_type"] = [lesion_types[i % len(lesion_types)] for i in range(len(pasted))]
    grid = read_settings(root)["grid"]
    return LesionCohort(root, table, VolumeGrid(tuple(grid["shape"]), float(grid["spacing_mm"]),
                                                tuple(grid["origin_mm"])), used, seed)
