"""What the benchmarks share. The scratch folder a benchmark writes its cohorts, runs and files into (its --out):
emptied before each run, but only when this or another benchmark made it (it holds MARKER) or it is empty; a
mistaken --out (a prepared set, a trained model, '.') is refused in one line rather than deleted. And the checks of
paths and numbers a benchmark runs right after parsing, so a typo costs a second, not the minutes of work before
the first use of the value."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

MARKER = ".dallebrain-benchmark-scratch"


def fresh_scratch(out: Path) -> Path:
    """`out` made new and empty (but for MARKER); SystemExit naming it when it holds what no benchmark made."""
    if out.exists():
        if not out.is_dir():
            raise SystemExit(f"error: --out {out} is a file: give a new folder or an earlier benchmark's scratch")
        if not (out / MARKER).is_file() and any(out.iterdir()):
            raise SystemExit(f"error: --out {out} holds files no benchmark made (no {MARKER}); the benchmark empties "
                             "its --out, so give a new or empty folder")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("a dallebrain benchmark's scratch folder: its next run empties it\n")
    return out


def check_at_least(minimum: float, **numbers: float) -> None:
    """SystemExit naming the first option below `minimum` (or not a finite number): numbers are checked before the
    work that would otherwise fail on them minutes later."""
    for name, value in numbers.items():
        if value is None:
            continue
        if not (math.isfinite(value) and value >= minimum):
            raise SystemExit(f"error: --{name.replace('_', '-')} must be at least {minimum:g}, got {value}")


def check_holds(label: str, folder: Path | None, needed: str, what: str) -> None:
    """SystemExit when a given folder (`label`: its option, as printed) lacks the file that makes it `what` (None:
    not given, skipped)."""
    if folder is not None and not (Path(folder) / needed).exists():
        raise SystemExit(f"error: {label} {folder} is not {what} (no {needed})")


def check_prepared(option: str, folder: Path | None) -> None:
    check_holds(f"--{option}", folder, "metadata.parquet", "a prepared data set")
