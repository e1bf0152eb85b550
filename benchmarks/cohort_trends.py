"""Fitted ageing trends of a simulated (or any BIDS) cohort's participants.tsv, against the literature.

    python benchmarks/cohort_trends.py COHORT_DIR
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dallebrain.cli._common import OneLineParser


def trends(table: pd.DataFrame) -> list[tuple[str, float, str]]:
    """(quantity, value, literature) rows."""
    age = table["age"].to_numpy(float)
    nwbv = np.polyfit(age, table["nwbv"], 2)
    vent = table["lateral_ventricles_ml"].to_numpy(float)
    young, old = age < 50, age >= 50
    # growth per decade from a log-linear fit in each age band
    per_decade = {name: float(np.exp(10 * np.polyfit(age[m], np.log(vent[m]), 1)[0]) - 1)
                  for name, m in (("<50", young), (">=50", old)) if m.sum() >= 3}
    icv = table.groupby("sex")["icv_ml"].mean()
    gm_slope = np.polyfit(age, table["gm_ml"] / table["icv_ml"], 1)[0]
    wm = (table["wm_ml"] / table["icv_ml"]).to_numpy(float)

    def slope(mask):
        return np.polyfit(age[mask], wm[mask], 1)[0] if mask.sum() > 2 else np.nan

    wm_young, wm_old = slope(age < 45), slope(old)
    return [
        ("nWBV at 20 (quadratic fit)", float(np.polyval(nwbv, 20)), "about 0.85"),
        ("nWBV at 90 (quadratic fit)", float(np.polyval(nwbv, 90)), "about 0.71"),
        ("lateral ventricles growth per decade, age < 50", per_decade.get("<50", np.nan), "about +20 %"),
        ("lateral ventricles growth per decade, age >= 50", per_decade.get(">=50", np.nan), "faster than before 50"),
        ("ICV men / women", float(icv.get("M", np.nan) / icv.get("F", np.nan)), "about 1.10 (1538 / 1393 mL)"),
        ("GM/ICV change per decade", float(10 * gm_slope), "falls from early adulthood"),
        ("WM/ICV change per decade, age < 45", float(10 * wm_young), "about 0 (plateau)"),
        ("WM/ICV change per decade, age >= 50", float(10 * wm_old), "falls"),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", type=Path)
    args = parser.parse_args(argv)
    table = pd.read_csv(args.cohort / "participants.tsv", sep="\t")
    print(f"{len(table)} subjects, ages {table['age'].min():.0f}-{table['age'].max():.0f}, "
          f"{(table['sex'] == 'F').sum()} women")
    print("| quantity | measured | literature |\n|---|---|---|")
    for name, value, lit in trends(table):
        print(f"| {name} | {value:.3f} | {lit} |")


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
