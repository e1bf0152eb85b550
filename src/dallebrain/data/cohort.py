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


def scan_keys(slices: pd.DataFrame) -> list[str]:
    """Columns that name one scan: the subject, and its session when the data are longitudinal."""
    return ["subject_id", "session_id"] if "session_id" in slices else ["subject_id"]


def subject_table(slices: pd.DataFrame) -> pd.DataFrame:
    """One row per scan (per subject when there are no sessions)."""
    keys = scan_keys(slices)
    cols = [c for c in (*keys, "age", "sex", "icv_ml", "lateral_ventricles_ml", "nwbv") if c in slices]
    return slices[cols].drop_duplicates(keys).reset_index(drop=True)


def add_cohort_fields(slices: pd.DataFrame, seed: int = 0, captions_per_slice: int = 5) -> pd.DataFrame:
    """Add split, volume descriptors relative to the age norm, and captions to the slice table.

    The split is made on subjects, so all sessions of a subject land in one split; volume norms are per
    scan (a subject's ventricles at 80 are compared with 80-year-olds)."""
    scans = subject_table(slices)
    for col in ("age", "sex", "lateral_ventricles_ml", "nwbv", "icv_ml"):
        if col not in scans:
            scans[col] = np.nan
    splits = assign_splits(scans.drop_duplicates("subject_id"), seed)
    # Ventricles scale with head size: compare ventricle/ICV ratios, on a log scale (they are skewed).
    scans["ventricle_ratio"] = scans["lateral_ventricles_ml"] / scans["icv_ml"]
    scans["ventricles_z"] = age_norm_z(scans, "ventricle_ratio", log=True)
    scans["brain_volume_z"] = age_norm_z(scans, "nwbv")
    keys = scan_keys(slices)
    out = slices.copy()
    out["split"] = out["subject_id"].map(splits)
    z = out[keys].merge(scans[[*keys, "ventricles_z", "brain_volume_z"]], on=keys, how="left")
    out["ventricles_z"] = z["ventricles_z"].to_numpy()
    out["brain_volume_z"] = z["brain_volume_z"].to_numpy()
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
        brain_volume=volume_descriptor(_none_if_nan(get("brain_volume_z"))),
        healthy=_healthy(get("healthy")), lesions=_findings_in_view(get("findings"), get("lesion_labels")))


def _healthy(value) -> bool:
    """A scan is healthy unless its source says otherwise (a lesion cohort's 'healthy' column)."""
    value = _none_if_nan(value)
    return True if value is None else bool(value)


def _findings_in_view(findings, labels) -> tuple[str, ...]:
    """The scan's lesion finding, named only on slices where its mask shows."""
    findings = _none_if_nan(findings)
    return (findings,) if findings and labels is not None and len(labels) else ()
