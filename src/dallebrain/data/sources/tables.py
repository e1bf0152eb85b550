"""Small helpers shared by the cohort readers: reading demographic tables and cleaning their values.

Every reader meets the same mess (missing cells written as blank, "n/a" or 0, duplicate rows, sex coded as
letters or numbers), so the rules live here once.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from dallebrain.data.sources.base import SubjectRecord

MISSING_TEXT = {"", "n/a", "na", "nan", "none", "null", "-", "?"}
_SEX_WORDS = {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F"}


def read_table(path: Path, sheet: str | int | None = None, what: str = "demographics") -> pd.DataFrame:
    """Read a .csv, .tsv, .xls or .xlsx table; ValueError (one line) when it is missing or unreadable."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".xls", ".xlsx"):
            df = pd.read_excel(path, sheet_name=0 if sheet is None else sheet)
        elif suffix == ".tsv":
            df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        else:
            df = pd.read_csv(path)
            if df.shape[1] == 1 and any(sep in str(df.columns[0]) for sep in ";\t"):
                # Spreadsheets saved in some locales separate with ";".
                df = pd.read_csv(path, sep=None, engine="python")
    except Exception as exc:  # noqa: BLE001 - any parser failure means the same thing to the user
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"cannot read {what} file {path}: {reason}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    return df


def read_code_sheet(path: Path, sheet: str) -> dict[int, str]:
    """Code -> text from a two-column sheet (ID, text) of a workbook; {} when the sheet is absent or odd."""
    import pandas as pd

    try:
        df = pd.read_excel(path, sheet_name=sheet)
    except Exception:  # noqa: BLE001 - a missing code sheet only costs the decoded text
        return {}
    if df.shape[1] < 2:
        return {}
    codes = {}
    for code, text in zip(df.iloc[:, 0], df.iloc[:, 1], strict=True):
        number = to_float(code)
        if number is None or number == 0 or is_missing(text):
            continue
        codes[int(number)] = str(text).strip()
    return codes


def find_column(df: pd.DataFrame, *names: str) -> str | None:
    """The first column whose name matches one of `names`, ignoring case and surrounding spaces."""
    lower = {str(c).strip().lower(): c for c in df.columns}
    for name in names:
        if name.lower() in lower:
            return lower[name.lower()]
    return None


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        import pandas as pd

        if value is pd.NaT or (not isinstance(value, str) and pd.isna(value)):
            return True
    except (TypeError, ValueError):
        pass
    return isinstance(value, str) and value.strip().lower() in MISSING_TEXT


def to_float(value: Any, zero_is_missing: bool = False) -> float | None:
    """A finite float, or None for blanks, text and (optionally) the 0 some tables use for "unknown"."""
    if is_missing(value) or isinstance(value, bool):
        return None
    try:
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or (zero_is_missing and number == 0):
        return None
    return number


def parse_sex(value: Any, numeric_codes: dict[int, str] | None = None) -> tuple[str | None, str | None]:
    """("F" | "M" | None, problem | None). Numbers are accepted only with an explicit code table."""
    if is_missing(value):
        return None, None
    text = str(value).strip().lower()
    if text in _SEX_WORDS:
        return _SEX_WORDS[text], None
    number = to_float(value)
    if number is not None:
        if numeric_codes and number.is_integer() and int(number) in numeric_codes:
            return numeric_codes[int(number)], None
        if numeric_codes and number == 0:
            return None, None
        return None, f"sex code {str(value).strip()!r} is ambiguous"
    return None, f"sex value {str(value).strip()!r} not understood"


def parse_age_range(value: Any) -> float | None:
    """Age in years from a number or an age band: "22-25" -> 23.5, "36+" -> 37 (one year past the floor)."""
    number = to_float(value)
    if number is not None:
        return number
    if is_missing(value):
        return None
    text = str(value).strip()
    band = re.fullmatch(r"(\d+(?:\.\d+)?)\s*[-\u2013]\s*(\d+(?:\.\d+)?)", text)
    if band:
        return (float(band.group(1)) + float(band.group(2))) / 2
    open_band = re.fullmatch(r"(\d+(?:\.\d+)?)\s*\+", text)
    if open_band:
        return float(open_band.group(1)) + 1
    return None


def fullness(row: pd.Series) -> int:
    """How many cells of a row say something (blank, "n/a" and 0 say nothing)."""
    return sum(not is_missing(v) and not (to_float(v) == 0) for v in row.to_numpy())


def dedupe(
    df: pd.DataFrame,
    key: Any,
    sex_of: Any = None,
    age_of: Any = None,
    max_age_gap: float = 1.0,
) -> dict[Any, tuple[pd.Series, list[str]]]:
    """Group rows by `key(row)`, keep the fullest row of each group and report conflicts.

    Args:
        key: row -> subject key (None drops the row).
        sex_of, age_of: row -> parsed sex / age, used to detect rows that disagree (sex differs, or ages
            more than `max_age_gap` years apart); such a group gets "conflicting demographic rows".

    Returns:
        key -> (kept row, problems).
    """
    groups: dict[Any, list[pd.Series]] = {}
    for _, row in df.iterrows():
        k = key(row)
        if k is not None:
            groups.setdefault(k, []).append(row)
    kept = {}
    for k, rows in groups.items():
        # max() keeps the first of equally full rows, so the table order breaks ties.
        best = max(rows, key=fullness)
        problems = []
        if len(rows) > 1:
            sexes = {s for s in (sex_of(r) for r in rows) if s} if sex_of else set()
            ages = [a for a in (age_of(r) for r in rows) if a is not None] if age_of else []
            if len(sexes) > 1 or (ages and max(ages) - min(ages) > max_age_gap):
                problems.append("conflicting demographic rows")
        kept[k] = (best, problems)
    return kept


def plain(value: Any) -> Any:
    """A cell as a plain JSON-friendly value: None, float, int or str (dates as ISO text)."""
    if is_missing(value):
        return None
    if hasattr(value, "isoformat"):
        text = value.isoformat()
        return text[:10] if text.endswith("T00:00:00") else text
    if isinstance(value, bool | int | str):
        return value.strip() if isinstance(value, str) else value
    number = to_float(value)
    if number is not None:
        return int(number) if number.is_integer() else number
    return str(value)


def single_match(folder: Path, patterns: tuple[str, ...]) -> Path | None:
    """The first existing file in `folder` matching the glob patterns, tried in order, then by name."""
    for pattern in patterns:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    return None


def fill_demographics(record: SubjectRecord, row: tuple[dict, list[str]] | None) -> None:
    """Copy one subject's cleaned table values ("age", "sex", then extras) and problems onto its record."""
    if row is None:
        record.problems.append("no demographics row")
        return
    values, problems = dict(row[0]), row[1]
    record.problems.extend(problems)
    record.age, record.sex = values.pop("age"), values.pop("sex")
    record.extra.update(values)
    if record.age is None:
        record.problems.append("age missing")
    if record.sex is None and not any(p.startswith("sex") for p in problems):
        record.problems.append("sex missing")


def subject_rows(df: pd.DataFrame, key: Any, sex_col: str | None, age_of: Any):
    """(subject key, fullest row, problems, sex) per subject of a demographics table: duplicate rows merged
    by `dedupe` (conflicting sex or age reported), sex read once with `parse_sex` (letters and words only),
    an unreadable sex added to the problems. The readers without numeric sex codes share this loop."""

    def sex_of(row):
        return parse_sex(row[sex_col])[0] if sex_col else None

    for sid, (row, problems) in dedupe(df, key, sex_of, age_of).items():
        problems = list(problems)
        sex, sex_problem = parse_sex(row[sex_col]) if sex_col else (None, None)
        if sex_problem:
            problems.append(sex_problem)
        yield sid, row, problems, sex
