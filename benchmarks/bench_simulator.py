"""Simulator v2 measured: throughput with lesions on, lesion sizes and counts beside the cited ones, and the
longitudinal ageing rate beside the cohort's cross-sectional trend. Prints three tables.

    python benchmarks/bench_simulator.py --subjects 40 --workers 2 --out /tmp/bench-sim
    python benchmarks/bench_simulator.py --part trend --trend-subjects 200   # anatomy only, 3 mm grid

A volume is one image of one contrast. CPU seconds include the worker processes (the cores are shared).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

CITED = {  # what lesion_plans cites, in the units printed
    "wmh": "Fazekas 1: 0.5-4, 2: 4-12, 3: 12-50 mL; grade rises with age (de Leeuw 2001)",
    "ms": "about 15 ovoid lesions >= 3 mm (median long axis ~8 mm) (MAGNIMS 2016)",
    "infarct": "MCA ~70 %, PCA ~20 %, ACA ~10 % of territorial infarcts (Bogousslavsky 1988); median ~20 mL",
    "tumour": "frontal 40 %, temporal 29 %, parietal 14 %, occipital 3 % (Larjavaara 2007); ~40 mm",
}


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def throughput(out: Path, subjects: int, workers: int, lesions: tuple[str, ...], fraction: float) -> pd.DataFrame:
    from dallebrain.data.simulate import SimulationOptions, simulate_cohort

    shutil.rmtree(out, ignore_errors=True)
    options = SimulationOptions(subjects, seed=0, lesions=lesions, lesion_fraction=fraction)
    wall, cpu = time.perf_counter(), _cpu_seconds()
    table = simulate_cohort(out, options, workers, progress=False)
    wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    volumes = subjects * len(options.contrasts)
    print(f"\n### Throughput ({subjects} subjects x {len(options.contrasts)} contrasts, lesions "
          f"{','.join(lesions) or 'none'} in {fraction:.0%}, {workers} workers, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f})")
    print("| volumes | wall s | volumes/min | CPU s per volume |\n|---|---|---|---|")
    print(f"| {volumes} | {wall:.0f} | {volumes / wall * 60:.1f} | {cpu / volumes:.2f} |")
    return table


def lesion_distributions(table: pd.DataFrame) -> None:
    """Measured on the masks of the throughput cohort: count and volume per lesion type."""
    print("\n### Lesions measured on the masks (per subject)")
    print("| type | subjects | count median (range) | volume mL median (IQR) | where | cited |")
    print("|---|---|---|---|---|---|")
    for kind, rows in table[~table["healthy"]].groupby("lesion_type"):
        q = rows["lesion_ml"].quantile([0.25, 0.5, 0.75]).to_numpy()
        sites = rows["lesion_site"].str.replace("left |right ", "", regex=True).value_counts(normalize=True)
        where = ", ".join(f"{s} {v:.0%}" for s, v in sites.head(4).items())
        print(f"| {kind} | {len(rows)} | {rows['lesion_count'].median():.0f} ({rows['lesion_count'].min()}-"
              f"{rows['lesion_count'].max()}) | {q[1]:.1f} ({q[0]:.1f}-{q[2]:.1f}) | {where} | {CITED[kind]} |")
    if "wmh" in set(table["lesion_type"]):
        wmh = table[table["lesion_type"] == "wmh"]
        print("\nFazekas grade by age band (measured):",
              wmh.groupby(pd.cut(wmh["age"], [0, 45, 60, 75, 100]), observed=True)["fazekas"].mean().round(2).to_dict())


def trend(subjects: int, spacing_mm: float) -> None:
    """Per-year change over 0/5/10-year sessions against the cross-sectional fit of the same people's
    baseline scans: GM/ICV (linear in age) and log ventricles/ICV after 50 (the model's faster phase)."""
    from dallebrain.data.anatomy import AgeingModel, draw_traits
    from dallebrain.data.grid import VolumeGrid
    from dallebrain.data.longitudinal import sessions

    n = int(round(192 / spacing_mm))
    grid = VolumeGrid((n, int(n * 152 / 128), n), spacing_mm, (-96.0, -132.0, -78.0))
    rows = []
    for i in range(subjects):
        rng = np.random.default_rng([0, i])
        age, sex = float(np.round(rng.uniform(18, 90), 1)), "F" if rng.random() < 0.5 else "M"
        traits = draw_traits(grid, sex, rng, AgeingModel())
        for s in sessions(grid, age, traits, (0.0, 5.0, 10.0), np.random.default_rng([0, i, 2])):
            rows.append({"subject": i, "years": s.years, "age": s.age, **s.anatomy.volumes_ml()})
    t = pd.DataFrame(rows)
    t["gm_icv"], t["log_vent"] = t["gm_ml"] / t["icv_ml"], np.log(t["lateral_ventricles_ml"] / t["icv_ml"])
    base = t[t["years"] == 0]
    slope = {k: t.groupby("subject").apply(lambda g, k=k: np.polyfit(g["years"], g[k], 1)[0]) for k in
             ("gm_icv", "log_vent")}
    old = base["age"] >= 50
    cross = {"gm_icv": np.polyfit(base["age"], base["gm_icv"], 1)[0],
             "log_vent": np.polyfit(base["age"][old], base["log_vent"][old], 1)[0]}
    longitudinal = {"gm_icv": slope["gm_icv"].mean(), "log_vent": slope["log_vent"][old.to_numpy()].mean()}
    print(f"\n### Longitudinal vs cross-sectional ageing ({subjects} subjects x 3 sessions, {spacing_mm:g} mm grid)")
    print("| quantity (per year) | longitudinal (mean of subjects) | cross-sectional fit | ratio |\n|---|---|---|---|")
    for key, name in (("gm_icv", "GM/ICV"), ("log_vent", "log lateral ventricles/ICV, age >= 50")):
        print(f"| {name} | {longitudinal[key]:+.5f} | {cross[key]:+.5f} | {longitudinal[key] / cross[key]:.2f} |")
    rising = t.groupby("subject")["lateral_ventricles_ml"].apply(lambda v: v.is_monotonic_increasing).mean()
    falling = t.groupby("subject")["gm_ml"].apply(lambda v: v.is_monotonic_decreasing).mean()
    print(f"\nsubjects whose ventricles rise at every session: {rising:.0%}; whose GM falls at every session: "
          f"{falling:.0%}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "throughput", "trend"), default="all")
    parser.add_argument("--subjects", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lesions", default="wmh,ms,infarct,tumour")
    parser.add_argument("--lesion-fraction", type=float, default=1.0)
    parser.add_argument("--trend-subjects", type=int, default=200)
    parser.add_argument("--trend-spacing-mm", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/dallebrain-bench-simulator"))
    args = parser.parse_args(argv)
    if args.part in ("all", "throughput"):
        from dallebrain.data.lesions import parse_lesions

        lesions = parse_lesions(args.lesions) if args.lesions else ()
        table = throughput(args.out, args.subjects, args.workers, lesions, args.lesion_fraction)
        if lesions:
            lesion_distributions(table)
    if args.part in ("all", "trend"):
        trend(args.trend_subjects, args.trend_spacing_mm)


if __name__ == "__main__":
    main()
