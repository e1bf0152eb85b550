"""How the report writes a number, and reads one from a column of metrics.json by its dotted path (shared by
report.py and anatomy_report.py)."""

from __future__ import annotations


def lookup(column: dict, path: str):
    value = column
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000 or abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.4g}"
    return str(value)
