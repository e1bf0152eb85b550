"""Anomaly detection benchmark (issue 15): prints tables, asserts nothing.

  tune   diffusion settings side by side on lesions PASTED into the healthy fit/val subjects of a prepared
         data set (never its test subjects): what the defaults in anomaly/methods.py were chosen from.
  run    `dallebrain evaluate-anomaly` with the given sizes: every method on the data set's own lesions;
         prints summary.md and the time per slice.

  python benchmarks/bench_anomaly.py tune --data PREPARED [--n-per-type 8 --modalities T2w,FLAIR]
  python benchmarks/bench_anomaly.py run  --data PREPARED --out DIR [--n-per-type 30 ...]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

TUNE_SETTINGS = {  # name -> changes to PartialNoising()
    "single 0.5 raw": {"levels": (0.5,), "match_intensity": False, "normative": False},
    "single 0.5 matched": {"levels": (0.5,), "normative": False},
    "single 0.5 matched+normative": {"levels": (0.5,)},
    "single 0.3": {"levels": (0.3,)},
    "single 0.7": {"levels": (0.7,)},
    "single 0.7 guidance 3": {"levels": (0.7,), "guidance": 3.0},
    "multi 0.3/0.5/0.7": {"levels": (0.3, 0.5, 0.7)},
    "patch 16 at 0.7": {"levels": (0.7,), "patch": 16},
    "single 0.7 latent": {"levels": (0.7,), "compare": "latent"},
    "single 0.5 latent": {"levels": (0.5,), "compare": "latent"},
    "single 0.7 raw": {"levels": (0.7,), "match_intensity": False, "normative": False},
    "multi 0.5/0.7/0.85 raw g3": {"levels": (0.5, 0.7, 0.85), "match_intensity": False, "normative": False,
                                   "guidance": 3.0},
    "single 0.7 calibrated": {"levels": (0.7,), "calibrated": True},
    "single 0.5 calibrated": {"levels": (0.5,), "calibrated": True},
    "single 0.3 calibrated": {"levels": (0.3,), "calibrated": True},
    "multi 0.3/0.5/0.7 calibrated": {"levels": (0.3, 0.5, 0.7), "calibrated": True},
}


def _options(args, out: Path, **extra):
    from dallebrain.anomaly.benchmark import BenchmarkOptions
    from dallebrain.anomaly.selection import SelectionSizes

    split = (lambda s: tuple(s.split(",")) if s else None)  # noqa: E731
    return BenchmarkOptions(Path(args.data), out, Path(args.model) if args.model else None,
                            sizes=SelectionSizes(args.n_per_type, args.n_healthy, args.n_val, args.max_fit),
                            modalities=split(args.modalities), orientations=split(args.orientations),
                            steps=args.steps, fpr=args.fpr, **extra)


def tune(args) -> None:
    from dallebrain.anomaly.benchmark import run_one_method, score_method, setup
    from dallebrain.anomaly.cases import load_cohort
    from dallebrain.anomaly.diffusion import PartialNoising
    from dallebrain.anomaly.methods import BASELINES

    main = load_cohort(args.data)
    healthy = main.table[main.table["role"].isin(["fit", "val"])]["subject_id"].unique().tolist()
    options = _options(args, Path("/dev/null"), lesion_source="pasted")
    cohort, chosen, pipe, normal = setup(options, subjects=healthy)
    print(f"tuning on {len(healthy)} healthy fit/val subjects, lesions pasted: {len(chosen.lesions)} lesion, "
          f"{len(chosen.healthy)} healthy, {len(chosen.val)} val slices; {len(chosen.fit)} fit slices")
    test = chosen.healthy + chosen.lesions
    runs = {name: (name, None) for name in (*BASELINES, "latent_z")} | {
        name: ("diffusion", replace(PartialNoising(steps=args.steps, seed=0), **change))
        for name, change in TUNE_SETTINGS.items() if not args.only or name in args.only.split(";")}
    kinds = sorted({c.lesion_type for c in chosen.lesions})
    print("| setting | s/slice | AUPRC | best Dice | slice AUROC | " + " | ".join(f"AUPRC {k}" for k in kinds) + " |")
    print("|---" * (5 + len(kinds)) + "|")
    for label, (method, setting) in runs.items():
        start = time.time()
        run = run_one_method(method, options, pipe, normal, chosen.val, test, setting,
                             lambda: (cohort.case(r) for _, r in chosen.fit.iterrows()))
        m = score_method(run, chosen.healthy, chosen.lesions, cohort.grid.spacing_mm)
        per = (time.time() - start) / (len(test) + len(chosen.val))
        o = m["overall"]
        print(f"| {label} | {per:.2f} | {o['auprc']:.3f} | {o['dice_best']:.3f} | {o['slice_auroc']:.3f} | "
              + " | ".join(f"{m['by_type'][k]['auprc']:.3f}" for k in kinds) + " |", flush=True)


def run(args) -> None:
    from dallebrain.anomaly.benchmark import run_benchmark

    options = _options(args, Path(args.out), methods=tuple(args.methods.split(",")) if args.methods else
                       _options(args, Path(args.out)).methods)
    start = time.time()
    metrics = run_benchmark(options)
    s = metrics["settings"]
    n = s["n_val"] + s["n_healthy_test"] + s["n_lesion_test"]
    print(Path(args.out, "summary.md").read_text())
    for name, m in metrics["methods"].items():
        print(f"{name}: {m['seconds'] / n:.2f} s per slice ({n} slices)")
    print(f"total {time.time() - start:.0f} s (normal model fit {metrics['timing']['fit_s']:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("tune", "run"))
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", default="anomaly-benchmark")
    parser.add_argument("--model", default=None)
    parser.add_argument("--methods", default=None)
    parser.add_argument("--only", default=None, help="tune: only these settings (';'-separated names)")
    parser.add_argument("--n-per-type", type=int, default=8)
    parser.add_argument("--n-healthy", type=int, default=16)
    parser.add_argument("--n-val", type=int, default=16)
    parser.add_argument("--max-fit", type=int, default=1500)
    parser.add_argument("--modalities", default=None)
    parser.add_argument("--orientations", default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--fpr", type=float, default=0.01)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    np.seterr(all="ignore")
    (tune if args.mode == "tune" else run)(args)


if __name__ == "__main__":
    main()
