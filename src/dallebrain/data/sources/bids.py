"""Any BIDS data set: sub-*/[ses-*/]anat/sub-*_{T1w,T2w,PDw,FLAIR}.nii[.gz] and participants.tsv."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dallebrain.data.sources import tables
from dallebrain.data.sources.base import SubjectRecord
from dallebrain.vocab import MODALITIES

IMAGE_NAME = re.compile(r"(sub-[A-Za-z0-9]+)(_[A-Za-z0-9]+-[A-Za-z0-9]+)*_(T1w|T2w|PDw|FLAIR)\.nii(\.gz)?")


def find_subjects(input_dir: Path, demographics: Path | None = None) -> list[SubjectRecord]:
    """One record per sub-* folder of the BIDS root `input_dir`; the first session with images is used.

    `demographics` is participants.tsv; by default `input_dir`/participants.tsv. A data set without one
    is still read (BIDS makes it optional), each record then carrying the problem "no demographics row".
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise ValueError(f"BIDS folder not found: {input_dir}")
    subjects = sorted(p for p in input_dir.glob("sub-*") if p.is_dir())
    if not subjects:
        raise ValueError(f"no sub-* folder in {input_dir}: not a BIDS data set root")
    if demographics is None:
        default = input_dir / "participants.tsv"
        rows = _read_participants(default) if default.is_file() else {}
    else:
        rows = _read_participants(Path(demographics))
    records = [_record(folder, rows, input_dir) for folder in subjects]
    return sorted(records, key=lambda r: r.subject_id)


def _anat_images(anat: Path) -> tuple[dict[str, Path], list[str]]:
    images: dict[str, Path] = {}
    ignored = []
    # Sorted names put run-1 before run-2, and "sub-01_T1w" after "sub-01_acq-*": either is a fine pick.
    for path in sorted(anat.glob("sub-*")):
        match = IMAGE_NAME.fullmatch(path.name)
        if not match:
            continue
        if match.group(3) in images:
            ignored.append(str(path))
        else:
            images[match.group(3)] = path
    return {m: images[m] for m in MODALITIES if m in images}, ignored


def _record(folder: Path, rows: dict, root: Path) -> SubjectRecord:
    sid = folder.name.removeprefix("sub-")
    record = SubjectRecord(subject_id=sid, source="bids", images={})
    images, ignored = _anat_images(folder / "anat")
    if not images:
        for session in sorted(p for p in folder.glob("ses-*") if p.is_dir()):
            images, ignored = _anat_images(session / "anat")
            if images:
                record.extra["session"] = session.name.removeprefix("ses-")
                break
    record.images = images
    if ignored:
        record.extra["ignored_images"] = ignored
    if not images:
        record.problems.append("no anat image (T1w, T2w, PDw or FLAIR)")
    else:
        sidecar = _sidecar(next(iter(images.values())), root)
        strength = tables.to_float(sidecar.get("MagneticFieldStrength"))
        record.field_strength = strength
        maker = " ".join(
            str(sidecar[k]) for k in ("Manufacturer", "ManufacturersModelName") if sidecar.get(k)
        )
        record.site = maker or None
    row = rows.get(sid)
    if row is not None and row[0].get("field_strength") is not None:
        record.field_strength = row[0]["field_strength"]
    tables.fill_demographics(record, row)
    record.extra.pop("field_strength", None)
    return record


def _sidecar(image: Path, root: Path) -> dict:
    """The JSON sidecar of an image, falling back to the data set level one (BIDS inheritance, simplified)."""
    stem = image.name.split(".nii")[0]
    suffix = stem.rsplit("_", 1)[-1]
    for candidate in (image.parent / f"{stem}.json", root / f"{suffix}.json"):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_bytes())  # bytes: json finds UTF-8 (BOM or not), -16 or -32
            except (OSError, ValueError):
                return {}
    return {}


def _read_participants(path: Path) -> dict[str, tuple[dict, list[str]]]:
    table = tables.read_table(path, what="BIDS participants")
    id_col = tables.find_column(table, "participant_id")
    if id_col is None:
        raise ValueError(f"BIDS participants file {path} has no participant_id column")
    sex_col = tables.find_column(table, "sex", "gender")
    age_col = tables.find_column(table, "age")
    strength_col = tables.find_column(table, "field_strength", "MagneticFieldStrength")

    def key(row):
        text = str(row[id_col]).strip()
        return None if tables.is_missing(text) else text.removeprefix("sub-")

    def age_of(row):
        return tables.parse_age_range(row[age_col]) if age_col else None

    known = {id_col, sex_col, age_col, strength_col}
    cleaned = {}
    for sid, row, problems, sex in tables.subject_rows(table, key, sex_col, age_of):
        values = {
            "age": age_of(row),
            "sex": sex,
            "field_strength": tables.to_float(row[strength_col]) if strength_col else None,
        }
        if age_col and values["age"] is not None and tables.to_float(row[age_col]) is None:
            values["age_range"] = str(row[age_col]).strip()
        for column in table.columns:
            if column not in known:
                values[str(column)] = tables.plain(row[column])
        cleaned[sid] = (values, problems)
    return cleaned
