"""Small helpers shared by the cohort readers: reading demographic tables and cleaning their values.

Every reader meets the same mess (missing cells written as blank, "n/a" or 0, duplicate rows, sex coded as
letters or numbers), so the rules live here once.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from dallebrain.data.sources.base import SubjectRecord

MISSING_TEXT = {"", "n/a", "na", "nan", "none", "null", "-", "?"}
_SEX_WORDS = {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F"}
# DataFrame.attrs key of a text table: data row position -> why the row cannot be trusted. `dedupe` turns it
# into a problem of that row's subject, so one damaged row fails one subject, not the cohort.
ROW_PROBLEMS = "row_problems"
# Byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one).
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# Stands for bytes that do not decode: a lone surrogate, which no strict decoding ever produces.
_UNDECODABLE = "\udfff"


def _mark_undecodable(error: UnicodeDecodeError) -> tuple[str, int]:
    return _UNDECODABLE, error.end


codecs.register_error("dallebrain-undecodable", _mark_undecodable)


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
        else:
            df = _read_text_table(path, suffix == ".tsv")
    except Exception as exc:  # noqa: BLE001 - any parser failure means the same thing to the user
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"cannot read {what} file {path}: {reason}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    return df


def decode_table_text(raw: bytes) -> tuple[str, str]:
    """(text, encoding) of a text table's bytes, where bytes that are not text become U+DFFF.

    The encoding: the byte-order mark's (UTF-8, UTF-16, UTF-32); else UTF-8 when the file is UTF-8, or
    when it is UTF-8 apart from some damaged lines (some other line holds non-ASCII UTF-8 text); else
    Latin-1, what spreadsheets write as "ANSI" text, in which every byte is a character. NUL bytes count as
    damage: real tables have none, and a file full of them is UTF-16 without its mark (refused, since
    nothing tells its byte order for sure)."""
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            return raw.decode(encoding, errors="dallebrain-undecodable"), encoding
    if raw.count(0) > len(raw) // 10:
        raise ValueError("looks like UTF-16 without a byte-order mark: save it as UTF-8")
    text = raw.decode("utf-8", errors="dallebrain-undecodable")
    if _UNDECODABLE in text and not any(
        _UNDECODABLE not in line and not line.isascii() for line in text.splitlines()
    ):
        return raw.decode("latin-1").replace("\x00", _UNDECODABLE), "latin-1"
    return text.replace("\x00", _UNDECODABLE), "utf-8"


def _read_text_table(path: Path, tab_separated: bool) -> pd.DataFrame:
    """A .tsv (all cells text) or .csv (pandas' number parsing) in any encoding `decode_table_text` knows.

    Rows with bytes that are not text, or with more non-empty cells than the header has columns, stay in the
    table (so their subject is still found) with their reason in `df.attrs[ROW_PROBLEMS]`."""
    import pandas as pd

    text, encoding = decode_table_text(path.read_bytes())
    first = text.split("\n", 1)[0]
    if tab_separated:
        sep = "\t"
    elif "," in first or not any(c in first for c in ";\t"):
        sep = ","
    else:  # spreadsheets saved in some locales separate with ";"
        sep = max(";\t", key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    rows = [(reader.line_num, fields) for fields in reader if any(f.strip() for f in fields)]
    if not rows:
        raise ValueError("empty file")
    header = [f.replace(_UNDECODABLE, "\ufffd") for f in rows[0][1]]
    problems, kept = {}, []
    for line, fields in rows[1:]:
        extra = fields[len(header):]
        if any(_UNDECODABLE in f for f in fields):
            problems[len(kept)] = f"demographics line {line} has bytes that are not {encoding} text"
        elif any(f.strip() for f in extra):
            problems[len(kept)] = f"demographics line {line} has {len(fields)} cells for {len(header)} columns"
        kept.append([f.replace(_UNDECODABLE, "\ufffd") for f in fields[:len(header)]])
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=sep, lineterminator="\n").writerows([header, *kept])
    buffer.seek(0)
    options = {"dtype": str, "keep_default_na": False} if tab_separated else {}
    df = pd.read_csv(buffer, sep=sep, index_col=False, **options)
    df.attrs[ROW_PROBLEMS] = problems
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
    row_problems = df.attrs.get(ROW_PROBLEMS, {})
    kept = {}
    for k, rows in groups.items():
        # max() keeps the first of equally full rows, so the table order breaks ties.
        best = max(rows, key=fullness)
        problems = [row_problems[r.name] for r in rows if r.name in row_problems]
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
