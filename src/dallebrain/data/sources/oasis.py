"""OASIS-1 cross-sectional: 416 adults aged 18-96 (Siemens Vision 1.5 T MPRAGE), discN/OAS1_XXXX_MR1 folders.

Demented subjects (CDR >= 0.5) are returned with a problem so that `prepare` can list and exclude them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from dallebrain.data.sources import tables
from dallebrain.data.sources.base import SubjectRecord

SESSION_DIR = re.compile(r"(OAS1_\d{4})_MR(\d+)")
DEMOGRAPHICS_NAME = "oasis_cross-sectional.csv"
FIELD_STRENGTH = 1.5
SCANNER = "Siemens Vision 1.5T"
# CSV column -> extra key (Age, M/F and CDR are read separately)
EXTRA_COLUMNS = {
    "Hand": "hand",
    "Educ": "educ",
    "SES": "ses",
    "MMSE": "mmse",
    "CDR": "cdr",
    "eTIV": "etiv",
    "nWBV": "nwbv",
    "ASF": "asf",
}


def find_subjects(input_dir: Path, demographics: Path | None = None) -> list[SubjectRecord]:
    """One record per first session (OAS1_XXXX_MR1) in `input_dir`/discN/ or directly in `input_dir`.

    `demographics` is oasis_cross-sectional.csv; by default looked for in `input_dir`.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise ValueError(f"OASIS-1 folder not found: {input_dir}")
    sessions = {}
    for child in sorted(input_dir.iterdir()):
        for folder in [child] if SESSION_DIR.fullmatch(child.name) else _subdirs(child):
            match = SESSION_DIR.fullmatch(folder.name)
            # MR2 folders are the repeat scans of the reliability subset: one session per subject.
            if match and folder.is_dir() and int(match.group(2)) == 1:
                sessions.setdefault(match.group(1), folder)
    if not sessions:
        raise ValueError(f"no OASIS-1 session folder (discN/OAS1_XXXX_MR1) found in {input_dir}")
    demographics = Path(demographics) if demographics is not None else input_dir / DEMOGRAPHICS_NAME
    rows = _read_demographics(demographics)
    return [_record(sid, folder, rows.get(sid)) for sid, folder in sorted(sessions.items())]


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _analyze(path: Path | None) -> Path | None:
    """The .hdr only when its .img is beside it (an Analyze pair is useless half-extracted)."""
    return path if path is not None and path.with_suffix(".img").is_file() else None


def _record(sid: str, folder: Path, row: tuple | None) -> SubjectRecord:
    record = SubjectRecord(
        subject_id=sid, source="oasis1", images={}, field_strength=FIELD_STRENGTH, site=SCANNER
    )
    record.extra["session_dir"] = str(folder)
    processed = _analyze(
        tables.single_match(
            folder / "PROCESSED" / "MPRAGE" / "T88_111", ("*_mpr_n*_anon_111_t88_masked_gfc.hdr",)
        )
    )
    if processed is not None:
        # Talairach-88 atlas space, skull stripped, bias corrected: registration is only checked.
        record.images["T1w"] = processed
        record.in_mni = True
        # skull stripped ("masked") and bias corrected ("gfc"): prepare skips N4 and keeps the zero background
        record.extra.update(atlas="T88", skull_stripped=True, bias_corrected=True)
        record.tissue_seg = _analyze(tables.single_match(folder / "FSL_SEG", ("*_masked_gfc_fseg.hdr",)))
    else:
        raw = _analyze(tables.single_match(folder / "RAW", ("*_mpr-1_anon.hdr", "*_mpr-*_anon.hdr")))
        if raw is not None:
            record.images["T1w"] = raw
        else:
            record.problems.append("no MPRAGE image (PROCESSED/MPRAGE/T88_111 or RAW)")
    tables.fill_demographics(record, row)
    cdr = record.extra.get("cdr")
    if cdr is not None and cdr >= 0.5:
        record.problems.append(f"not healthy (CDR {cdr:g})")
    return record


def _read_demographics(path: Path) -> dict[str, tuple[dict, list[str]]]:
    table = tables.read_table(path, what="OASIS-1 demographics")
    id_col = tables.find_column(table, "ID")
    if id_col is None:
        raise ValueError(f"OASIS-1 demographics {path} has no ID column")
    sex_col = tables.find_column(table, "M/F", "Sex", "Gender")
    age_col = tables.find_column(table, "Age")

    def key(row):
        match = SESSION_DIR.fullmatch(str(row[id_col]).strip())
        # The CSV also lists the MR2 repeat sessions: only the first session describes our image.
        return match.group(1) if match and int(match.group(2)) == 1 else None

    def age_of(row):
        return tables.to_float(row[age_col]) if age_col else None

    cleaned = {}
    for sid, row, problems, sex in tables.subject_rows(table, key, sex_col, age_of):
        values = {"age": age_of(row), "sex": sex}
        for column, extra_key in EXTRA_COLUMNS.items():
            found = tables.find_column(table, column)
            value = row[found] if found else None
            values[extra_key] = tables.plain(value) if column == "Hand" else tables.to_float(value)
        cleaned[sid] = (values, problems)
    return cleaned


def native_volumes(record: SubjectRecord, reference_img, grid, to_mni: np.ndarray, ventricles: np.ndarray,
                   max_voxels: int):
    """Tissue volumes from OASIS's FSL_SEG (on the T88 T1's grid), back in native mL through the atlas scaling
    factor; the lateral ventricles are its CSF inside the atlas's (dilated) ventricle labels. None without it."""
    from dallebrain.data import volume_io, volumes
    from dallebrain.data.templates import resample_to_grid

    if record.tissue_seg is None:
        return None
    seg = volume_io.load_volume(record.tissue_seg, max_voxels)
    seg_data = np.rint(np.asarray(seg.dataobj)).astype(np.int16)
    t1 = np.asarray(reference_img.dataobj)
    if seg_data.shape != t1.shape or not np.allclose(seg.affine, reference_img.affine, atol=1e-3):
        raise ValueError(f"{Path(record.tissue_seg).name}: not on the grid of the T1 image")
    classes = volumes.fsl_seg_classes(seg_data, t1)
    csf = resample_to_grid((seg_data == classes["csf"]).astype(np.float32), seg.affine, grid, 1, to_mni)
    asf = record.extra.get("asf")
    # T88 images are scaled to the atlas: ASF (the atlas scaling factor) brings volumes back to native.
    native_per_image = 1.0 / asf if asf else 1.0
    native_per_mni = float(abs(np.linalg.det(to_mni[:3, :3])))
    grid_ml = grid.spacing_mm ** 3 / 1000.0
    vents = float(csf[ventricles].sum()) * grid_ml * native_per_mni * native_per_image
    return volumes.from_fsl_seg(seg_data, t1, seg.affine, vents, native_per_image)
