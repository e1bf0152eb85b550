"""Simulator v2 measured: throughput with lesions on, lesion sizes and counts beside the cited ones, and the
longitudinal ageing rate beside the cohort's cross-sectional trend. Prints three tables.

    python benchmarks/bench_simulator.py --subjects 40 --workers 2 --out /tmp/bench-sim
    python benchmarks/bench_simulator.py --part trend --trend-subjects 200   # anatomy only, 3 mm grid
    python benchmarks/bench_simulator.py --part dice --dice-subjects 3

A volume is one image of one contrast. CPU seconds include the worker processes (the cores are shared).
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _bench import check_at_least, fresh_scratch  # benchmarks/_bench.py, beside this script

from dallebrain.cli._common import OneLineParser

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

    fresh_scratch(out)
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
        # Share of subjects with a lesion in each place (an MS subject has several places).
        places = rows["lesion_site"].str.replace("left |right ", "", regex=True).str.split(", ").explode()
        where = ", ".join(f"{p} {v / len(rows):.0%}" for p, v in places.value_counts().head(4).items())
        print(f"| {kind} | {len(rows)} | {rows['lesion_count'].median():.0f} ({rows['lesion_count'].min()}-"
              f"{rows['lesion_count'].max()}) | {q[1]:.1f} ({q[0]:.1f}-{q[2]:.1f}) | {where} | {CITED[kind]} |")
    tumours = table[table["lesion_type"] == "tumour"]
    if len(tumours):
        core = 2 * (3 * (tumours["tumour_ml"] + tumours["necrosis_ml"]) * 1000 / (4 * np.pi)) ** (1 / 3)
        q = core.quantile([0.25, 0.5, 0.75]).to_numpy()
        print(f"\ntumour core (solid + necrosis), diameter: median {q[1]:.0f} mm (IQR {q[0]:.0f}-{q[2]:.0f}); "
              f"oedema {tumours['oedema_ml'].median():.0f} mL median")
    if "wmh" in set(table["lesion_type"]):
        fazekas_by_age()


def fazekas_by_age(draws: int = 400) -> None:
    """Mean Fazekas grade drawn per age band (plans only, no rendering) beside the table it follows."""
    from dallebrain.data.lesion_atlas import lesion_atlas
    from dallebrain.data.lesion_plans import FAZEKAS_BY_AGE, draw_wmh, fazekas_grade
    from dallebrain.data.simulate import SIMULATION_GRID as grid

    print("\n| age | mean Fazekas grade drawn | table (de Leeuw 2001, STRIVE; [check]) |\n|---|---|---|")
    for age in (40, 55, 70, 85):
        plans = [draw_wmh(np.random.default_rng([age, i]), age, lesion_atlas(grid), grid) for i in range(draws)]
        drawn = np.mean([0 if p is None else fazekas_grade(p.volume_ml) for p in plans])
        table = sum(g * p for g, p in enumerate(next(p for upper, p in FAZEKAS_BY_AGE if age < upper)))
        print(f"| {age} | {drawn:.2f} | {table:.2f} |")


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


def dice(per_type: int) -> None:
    """Mask vs the voxels that depart from the lesion-free rendering (same noise) by more than the noise
    sigma in any of the 4 contrasts, on the cohort's 1.5 mm grid, 3 T protocols."""
    from dallebrain.data.anatomy import age_template, draw_traits, place_in_native
    from dallebrain.data.lesion_atlas import lesion_atlas
    from dallebrain.data.lesion_plans import DRAW, add_lesions
    from dallebrain.data.lesions import full_mask
    from dallebrain.data.mr_physics import draw_sequence, tissue_signals
    from dallebrain.data.simulate import SIMULATION_GRID as grid
    from dallebrain.data.simulate import synthesize

    print(f"\n### Lesion masks vs rendered abnormal voxels ({per_type} subjects per type, 1.5 mm, 3 T)")
    print("| type | Dice (min over subjects) | mask voxels (median) |\n|---|---|---|")
    flat = np.zeros(grid.shape, np.float32)
    for kind in DRAW:
        scores, sizes = [], []
        for i in range(per_type):
            rng = np.random.default_rng([i, 5])
            traits, plan = draw_traits(grid, "F", rng), None
            while plan is None:
                plan = DRAW[kind](rng, 72.0, lesion_atlas(grid), grid)
            ml = grid.spacing_mm ** 3 / 1000 * traits.scale ** 3
            anatomy = place_in_native(grid, add_lesions(age_template(grid, 72.0, traits), plan, grid, ml, 72.0),
                                      traits, traits.to_mni())
            healthy, mask = anatomy.without_lesions(), full_mask(grid.shape, anatomy.lesions, anatomy.lesion_mask) > 0
            abnormal = np.zeros(grid.shape, bool)
            for modality in ("T1w", "T2w", "PDw", "FLAIR"):
                seq = draw_sequence(modality, 3.0, np.random.default_rng(i))
                a, b = (synthesize(x, seq, 3.0, np.random.default_rng(9), 0.2, 0.03, flat) for x in (anatomy, healthy))
                abnormal |= np.abs(a - b) > 0.03 * max(tissue_signals(seq, 3.0).values())
            scores.append(2 * (abnormal & mask).sum() / (abnormal.sum() + mask.sum()))
            sizes.append(int(mask.sum()))
        print(f"| {kind} | {min(scores):.3f} | {int(np.median(sizes))} |")


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "throughput", "trend", "dice"), default="all")
    parser.add_argument("--dice-subjects", type=int, default=3)
    parser.add_argument("--subjects", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lesions", default="wmh,ms,infarct,tumour")
    parser.add_argument("--lesion-fraction", type=float, default=1.0)
    parser.add_argument("--trend-subjects", type=int, default=200)
    parser.add_argument("--trend-spacing-mm", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/dallebrain-bench-simulator"))
    args = parser.parse_args(argv)
    # every part's numbers before the first part's minutes
    check_at_least(1, subjects=args.subjects, workers=args.workers, dice_subjects=args.dice_subjects,
                   trend_subjects=args.trend_subjects)
    check_at_least(0.1, trend_spacing_mm=args.trend_spacing_mm)
    if args.part in ("all", "throughput"):
        from dallebrain.data.lesions import parse_lesions

        lesions = parse_lesions(args.lesions) if args.lesions else ()
        table = throughput(args.out, args.subjects, args.workers, lesions, args.lesion_fraction)
        if lesions:
            lesion_distributions(table)
    if args.part in ("all", "dice"):
        dice(args.dice_subjects)
    if args.part in ("all", "trend"):
        trend(args.trend_subjects, args.trend_spacing_mm)


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
