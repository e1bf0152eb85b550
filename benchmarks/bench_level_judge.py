"""The level judge (judges/level.py) on REAL held-out slices: its error per plane beside chance.

    python benchmarks/bench_level_judge.py --data PREPARED [--per-plane 300]

Chance is the error of always answering the train split's mean level of that plane. Sagittal levels are
compared as |x| (a sagittal slice does not show its hemisphere).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from _bench import check_at_least, check_prepared  # benchmarks/_bench.py, beside this script

from dallebrain.cli._common import OneLineParser


def main(argv: list[str] | None = None) -> dict:
    import pandas as pd

    from dallebrain.data.slicing import load_png
    from dallebrain.judges.level import estimate_levels

    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--per-plane", type=int, default=300)
    parser.add_argument("--judge", type=Path, default=None, help="a tissue judge folder (default: the shipped one)")
    args = parser.parse_args(argv)
    check_prepared("data", args.data)
    check_at_least(1, per_plane=args.per_plane)
    from dallebrain.judges.tissue import load_tissue_judge

    judge = load_tissue_judge(args.judge)
    table = pd.read_parquet(args.data / "metadata.parquet")
    heldout, train = table[table.split != "train"], table[table.split == "train"]
    out = {}
    print(f"{'plane':9s} {'n':>5s} {'MAE mm':>7s} {'chance':>7s} {'median':>7s}  s/slice")
    for orientation in ("axial", "coronal", "sagittal"):
        rows = heldout[heldout.orientation == orientation]
        rows = rows.sample(min(args.per_plane, len(rows)), random_state=0)
        truth = rows.slice_mm.to_numpy(float)
        mean = train[train.orientation == orientation].slice_mm.to_numpy(float)
        if orientation == "sagittal":
            truth, mean = np.abs(truth), np.abs(mean)
        images = np.stack([load_png(args.data / p) for p in rows.image_path])
        start = time.perf_counter()
        estimate = estimate_levels(images, [orientation] * len(images), judge)
        seconds = (time.perf_counter() - start) / len(images)
        error = np.abs(estimate - truth)
        chance = float(np.abs(truth - mean.mean()).mean())
        out[orientation] = {"mae_mm": float(error.mean()), "chance_mm": chance, "median_mm": float(np.median(error)),
                            "n": len(rows)}
        print(f"{orientation:9s} {len(rows):5d} {error.mean():7.1f} {chance:7.1f} {np.median(error):7.1f}  "
              f"{seconds:.3f}")
    return out


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
