"""HCP Young Adult (Connectome Skyra 3 T): preprocessed structural packages, <id>/T1w and <id>/MNINonLinear.

The unrestricted CSV gives age only as a band ("22-25", ..., "36+"): the record's age is the band's middle.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from dallebrain.data.sources import tables
from dallebrain.data.sources.base import SubjectRecord

SUBJECT_DIR = re.compile(r"\d{6}")
FIELD_STRENGTH = 3.0
# space -> (modality -> file, tissue segmentation); the images of one record must share one space.
LAYOUTS = {
    "mni": (
        {"T1w": "MNINonLinear/T1w_restore_brain.nii.gz", "T2w": "MNINonLinear/T2w_restore_brain.nii.gz"},
        "MNINonLinear/aparc+aseg.nii.gz",
    ),
    "native": (
        {"T1w": "T1w/T1w_acpc_dc_restore_brain.nii.gz", "T2w": "T1w/T2w_acpc_dc_restore_brain.nii.gz"},
        "T1w/aparc+aseg.nii.gz",
    ),
}


def find_subjects(input_dir: Path, demographics: Path | None = None) -> list[SubjectRecord]:
    """One record per six-digit subject folder in `input_dir` (or one folder level below it).

    `demographics` is the unrestricted CSV; by default the last `unrestricted*.csv` (by name) in `input_dir`.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise ValueError(f"HCP folder not found: {input_dir}")
    folders: dict[str, Path] = {}
    for child in sorted(p for p in input_dir.iterdir() if p.is_dir()):
        candidates = [child] if SUBJECT_DIR.fullmatch(child.name) else sorted(child.iterdir())
        for folder in candidates:
            if folder.is_dir() and SUBJECT_DIR.fullmatch(folder.name):
                folders.setdefault(folder.name, folder)
    if not folders:
        raise ValueError(f"no HCP subject folder (six-digit id with T1w/ or MNINonLinear/) in {input_dir}")
    if demographics is None:
        found = sorted(input_dir.glob("unrestricted*.csv"))
        if not found:
            raise ValueError(f"no unrestricted*.csv in {input_dir}: pass the HCP demographics table")
        demographics = found[-1]
    rows = _read_demographics(Path(demographics))
    return [_record(sid, folder, rows.get(sid)) for sid, folder in sorted(folders.items())]


def _record(sid: str, folder: Path, row: tuple | None) -> SubjectRecord:
    record = SubjectRecord(subject_id=sid, source="hcp", images={}, field_strength=FIELD_STRENGTH)
    for space, (images, seg) in LAYOUTS.items():
        if (folder / images["T1w"]).is_file():
            record.images = {m: folder / f for m, f in images.items() if (folder / f).is_file()}
            record.in_mni = space == "mni"
            record.tissue_seg = folder / seg if (folder / seg).is_file() else None
            # "restore_brain": bias corrected and skull stripped by the HCP pipelines
            record.extra.update(skull_stripped=True, bias_corrected=True)
            if record.in_mni:
                record.extra["atlas"] = "MNI152"
            break
    native_images, native_seg = LAYOUTS["native"]
    # Volumes need the native (ACPC, rigid) labels: the MNINonLinear ones are warped.
    if (folder / native_seg).is_file():
        record.extra["native_seg"] = str(folder / native_seg)
    if (folder / native_images["T1w"]).is_file():
        record.extra["native_brain"] = str(folder / native_images["T1w"])
    if not record.images:
        record.problems.append("no T1w_restore_brain or T1w_acpc_dc_restore_brain image")
    tables.fill_demographics(record, row)
    return record


def _read_demographics(path: Path) -> dict[str, tuple[dict, list[str]]]:
    table = tables.read_table(path, what="HCP demographics")
    id_col = tables.find_column(table, "Subject")
    if id_col is None:
        raise ValueError(f"HCP demographics {path} has no Subject column")
    sex_col = tables.find_column(table, "Gender", "Sex")
    age_col = tables.find_column(table, "Age")

    def key(row):
        number = tables.to_float(row[id_col])
        return f"{int(number):06d}" if number is not None else None

    def age_of(row):
        return tables.parse_age_range(row[age_col]) if age_col else None

    cleaned = {}
    for sid, row, problems, sex in tables.subject_rows(table, key, sex_col, age_of):
        values = {
            "age": age_of(row),
            "sex": sex,
            "age_range": tables.plain(row[age_col]) if age_col else None,
        }
        if values["age_range"] is not None:
            values["age_range"] = str(values["age_range"])
        for column in ("Release", "Acquisition"):
            found = tables.find_column(table, column)
            values[column.lower()] = tables.plain(row[found]) if found else None
        cleaned[sid] = (values, problems)
    return cleaned


def native_volumes(record: SubjectRecord, reference_img, grid, to_mni: np.ndarray, ventricles: np.ndarray,
                   max_voxels: int):
    """Tissue volumes from HCP's FreeSurfer aseg in native (T1w) space; NOT_NATIVE when only the MNINonLinear
    labels exist (non-linearly warped, their volumes are not the subject's); None without any."""
    from dallebrain.data import volume_io, volumes
    from dallebrain.data.sources import NOT_NATIVE

    if not (record.extra.get("native_seg") or record.tissue_seg):
        return None
    path = record.extra.get("native_seg") or (None if record.in_mni else record.tissue_seg)
    if path is None:
        return NOT_NATIVE
    aseg = volume_io.load_volume(path, max_voxels)
    brain = None
    if record.extra.get("native_brain"):
        brain_img = volume_io.load_volume(record.extra["native_brain"], max_voxels)
        if brain_img.shape == aseg.shape:
            brain = np.asarray(brain_img.dataobj) > 0
    return volumes.from_freesurfer(np.rint(np.asarray(aseg.dataobj)), aseg.affine, brain)
