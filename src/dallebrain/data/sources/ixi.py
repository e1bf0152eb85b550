"""IXI (CC BY-SA 3.0): ~580 healthy adults from three London sites, T1/T2/PD NIfTI plus IXI.xls.

Users untar IXI-T1.tar, IXI-T2.tar, IXI-PD.tar into one or several folders; the site is only in file names.
"""

from __future__ import annotations

import re
from pathlib import Path

from dallebrain.data.sources import tables
from dallebrain.data.sources.base import SubjectRecord
from dallebrain.vocab import MODALITIES

FILE_NAME = re.compile(r"IXI(\d+)-(Guys|HH|IOP)-(\d+)-(T1|T2|PD|MRA|DTI)(?:-(\d+))?\.nii\.gz")
MODALITY = {"T1": "T1w", "T2": "T2w", "PD": "PDw"}  # MRA and DTI are not structural images
FIELD_STRENGTH = {"Guys": 1.5, "HH": 3.0, "IOP": 1.5}
SCANNER = {"Guys": "Philips 1.5T", "HH": "Philips 3T", "IOP": "GE 1.5T"}
DEMOGRAPHICS_NAMES = ("IXI.xls", "IXI.xlsx", "IXI.csv")
SEX_CODES = {1: "M", 2: "F"}  # the header says it: "SEX_ID (1=m, 2=f)"
# Table column -> (code sheet, extra key)
CODED = {
    "ETHNIC_ID": ("Ethnicity", "ethnicity"),
    "MARITAL_ID": ("Marital Status", "marital_status"),
    "OCCUPATION_ID": ("Occupation", "occupation"),
    "QUALIFICATION_ID": ("Qualification", "qualification"),
}


def subject_id(number: int | str) -> str:
    return f"IXI{int(number):03d}"


def find_subjects(input_dir: Path, demographics: Path | None = None) -> list[SubjectRecord]:
    """One record per IXI subject with at least one image file under `input_dir` (searched recursively).

    `demographics` is IXI.xls (or the same table as .xlsx/.csv); by default looked for in `input_dir`.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise ValueError(f"IXI folder not found: {input_dir}")
    files: dict[str, list[tuple[re.Match, Path]]] = {}
    for path in input_dir.rglob("IXI*.nii.gz"):
        match = FILE_NAME.fullmatch(path.name)
        if match:
            files.setdefault(subject_id(match.group(1)), []).append((match, path))
    if not files:
        raise ValueError(f"no IXI image (IXI002-Guys-0828-T1.nii.gz ...) found under {input_dir}")
    if demographics is None:
        found = [input_dir / name for name in DEMOGRAPHICS_NAMES if (input_dir / name).is_file()]
        if not found:
            raise ValueError(f"no IXI.xls, IXI.xlsx or IXI.csv in {input_dir}: pass the demographics table")
        demographics = found[0]
    rows = _read_demographics(Path(demographics))
    return [_record(sid, matches, rows) for sid, matches in sorted(files.items())]


def _record(sid: str, matches: list[tuple[re.Match, Path]], rows: dict) -> SubjectRecord:
    record = SubjectRecord(subject_id=sid, source="ixi", images={})
    sites = sorted({m.group(2) for m, _ in matches})
    site = sites[0]
    if len(sites) > 1:
        record.problems.append(f"files name several sites: {', '.join(sites)}")
    record.site = site
    record.field_strength = FIELD_STRENGTH[site]
    record.extra["scanner"] = SCANNER[site]
    ignored = []
    # Sorting on (modality, repeat number, path) keeps the unnumbered or lowest-numbered file.
    for match, path in sorted(matches, key=lambda mp: (mp[0].group(4), int(mp[0].group(5) or 0), str(mp[1]))):
        modality = MODALITY.get(match.group(4))
        if modality is None:
            continue
        if modality in record.images:
            ignored.append(str(path))
        else:
            record.images[modality] = path
    record.images = {m: record.images[m] for m in MODALITIES if m in record.images}
    if ignored:
        record.extra["ignored_images"] = ignored
    if not record.images:
        record.problems.append("no T1, T2 or PD image (only MRA/DTI)")
    tables.fill_demographics(record, rows.get(sid))
    return record


def _read_demographics(path: Path) -> dict[str, tuple[dict, list[str]]]:
    """IXI id -> (cleaned values incl. "age" and "sex", problems)."""
    table = tables.read_table(
        path, sheet="Table" if path.suffix.lower() in (".xls", ".xlsx") else None, what="IXI demographics"
    )
    id_col = tables.find_column(table, "IXI_ID")
    sex_col = tables.find_column(table, "SEX_ID (1=m, 2=f)", "SEX_ID", "SEX")
    age_col = tables.find_column(table, "AGE")
    if id_col is None:
        raise ValueError(f"IXI demographics {path} has no IXI_ID column")
    codes = {}
    if path.suffix.lower() in (".xls", ".xlsx"):
        codes = {column: tables.read_code_sheet(path, sheet) for column, (sheet, _) in CODED.items()}

    def key(row):
        number = tables.to_float(row[id_col])
        return subject_id(int(number)) if number is not None else None

    def sex_of(row):
        return tables.parse_sex(row[sex_col], SEX_CODES)[0] if sex_col else None

    def age_of(row):
        return tables.to_float(row[age_col], zero_is_missing=True) if age_col else None

    cleaned = {}
    for sid, (row, problems) in tables.dedupe(table, key, sex_of, age_of).items():
        problems = list(problems)
        sex, sex_problem = tables.parse_sex(row[sex_col], SEX_CODES) if sex_col else (None, None)
        if sex_problem:
            problems.append(sex_problem)
        values = {"age": age_of(row), "sex": sex}
        for column, extra_key in (("HEIGHT", "height_cm"), ("WEIGHT", "weight_kg")):
            found = tables.find_column(table, column)
            values[extra_key] = tables.to_float(row[found], zero_is_missing=True) if found else None
        for column, (_, extra_key) in CODED.items():
            found = tables.find_column(table, column)
            code = tables.to_float(row[found], zero_is_missing=True) if found else None
            if code is None:
                values[extra_key] = None
            elif codes.get(column):
                values[extra_key] = codes[column].get(int(code), f"code {int(code)}")
            else:
                values[column.lower()] = int(code)  # no code sheet (csv): keep the raw code
        for column in ("DOB", "STUDY_DATE", "DATE_AVAILABLE"):
            found = tables.find_column(table, column)
            values[column.lower()] = tables.plain(row[found]) if found else None
        cleaned[sid] = (values, problems)
    return cleaned
