"""Cohort-level steps of `prepare`: subject-level split, age norms of volumes, captions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dallebrain.data.captions import SliceFacts, build_captions, volume_descriptor

SPLITS = ("train", "val", "test")


def assign_splits(subjects: pd.DataFrame, seed: int = 0, fractions=(0.8, 0.1, 0.1)) -> dict[str, str]:
    """subject_id -> split, no subject in two splits, balanced for sex and age.

    Subjects are ordered by (sex, age) and dealt in blocks of ten, each block shuffled with the seed and
    split 8/1/1, so every split spans the cohort's ages and both sexes. With fewer than ten subjects
    val and test still get one each when there are at least three."""
    rng = np.random.default_rng(seed)
    order = subjects.assign(_sex=subjects["sex"].fillna("?"), _age=subjects["age"].fillna(-1))
    ids = order.sort_values(["_sex", "_age", "subject_id"])["subject_id"].tolist()
    n_val = round(fractions[1] * 10)
    n_test = round(fractions[2] * 10)
    out: dict[str, str] = {}
    for start in range(0, len(ids), 10):
        block = list(rng.permutation(ids[start:start + 10]))
        for i, sid in enumerate(block):
            out[sid] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    if len(ids) >= 3 and len(ids) < 10:  # one small block: make sure train is the largest
        block = sorted(out, key=lambda s: rng.random())
        for i, sid in enumerate(block):
            out[sid] = "val" if i == 0 else "test" if i == 1 else "train"
    return out


def age_norm_z(subjects: pd.DataFrame, column: str, log: bool = False) -> pd.Series:
    """z-score of each subject's value against the cohort's own age trend (quadratic in age).

    Needs at least 8 subjects with age and value; otherwise NaN (and captions stay silent)."""
    y = subjects[column].astype(float)
    if log:
        y = np.log(y.where(y > 0))
    age = subjects["age"].astype(float)
    ok = y.notna() & age.notna()
    z = pd.Series(np.nan, index=subjects.index)
    if ok.sum() < 8:
        return z
    coef = np.polyfit(age[ok], y[ok], deg=2)
    resid = y[ok] - np.polyval(coef, age[ok])
    sd = float(resid.std(ddof=3))
    if sd > 0:
        z[ok] = resid / sd
    return z


def subject_table(slices: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ("subject_id", "age", "sex", "icv_ml", "lateral_ventricles_ml", "nwbv")
            if c in slices]
    return slices[cols].drop_duplicates("subject_id").reset_index(drop=True)


def add_cohort_fields(slices: pd.DataFrame, seed: int = 0, captions_per_slice: int = 5) -> pd.DataFrame:
    """Add split, volume descriptors relative to the age norm, and captions to the slice table."""
    subjects = subject_table(slices)
    for col in ("age", "sex", "lateral_ventricles_ml", "nwbv", "icv_ml"):
        if col not in subjects:
            subjects[col] = np.nan
    splits = assign_splits(subjects, seed)
    # Ventricles scale with head size: compare ventricle/ICV ratios, on a log scale (they are skewed).
    subjects["ventricle_ratio"] = subjects["lateral_ventricles_ml"] / subjects["icv_ml"]
    subjects["ventricles_z"] = age_norm_z(subjects, "ventricle_ratio", log=True)
    subjects["brain_volume_z"] = age_norm_z(subjects, "nwbv")
    per_subject = subjects.set_index("subject_id")
    out = slices.copy()
    out["split"] = out["subject_id"].map(splits)
    out["ventricles_z"] = out["subject_id"].map(per_subject["ventricles_z"])
    out["brain_volume_z"] = out["subject_id"].map(per_subject["brain_volume_z"])
    captions = [build_captions(facts_for_row(row), n=captions_per_slice, seed=seed)
                for row in out.itertuples(index=False)]
    out["captions"] = captions
    out["caption"] = [c[0] for c in captions]
    return out


def _none_if_nan(value):
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


def _structures(value) -> list[str]:
    return [] if value is None else [str(v) for v in value]


def facts_for_row(row) -> SliceFacts:
    """SliceFacts of one metadata row (a namedtuple from itertuples, or a dict-like)."""
    get = row._asdict().get if hasattr(row, "_asdict") else row.get
    return SliceFacts(
        orientation=get("orientation"), slice_mm=float(get("slice_mm")), modality=get("modality"),
        field_strength=_none_if_nan(get("field_strength")), age=_none_if_nan(get("age")),
        sex=_none_if_nan(get("sex")), structures=tuple(_structures(get("structures"))),
        ventricles=volume_descriptor(_none_if_nan(get("ventricles_z"))),
        brain_volume=volume_descriptor(_none_if_nan(get("brain_volume_z"))))
