"""Throughput of `data simulate` and `data prepare` (volumes per minute), printed as a table.

    python benchmarks/bench_data.py --subjects 100 --workers 2 --out /tmp/bench-data

A volume is one subject's image of one contrast (a subject with 4 contrasts counts 4).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from _bench import fresh_scratch  # benchmarks/_bench.py, beside this script

from dallebrain.cli._common import OneLineParser


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--contrasts", default="t1,t2,pd,flair")
    parser.add_argument("--out", type=Path, default=Path("/tmp/dallebrain-bench-data"))
    args = parser.parse_args(argv)

    from dallebrain.data.prepare import PrepareOptions, prepare
    from dallebrain.data.simulate import SimulationOptions, parse_contrasts, simulate_cohort

    contrasts = parse_contrasts(args.contrasts)
    fresh_scratch(args.out)
    volumes = args.subjects * len(contrasts)
    t0 = time.perf_counter()
    simulate_cohort(args.out / "cohort", SimulationOptions(args.subjects, 0, contrasts), args.workers)
    t_sim = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = prepare(PrepareOptions("simulated", args.out / "cohort", args.out / "prepared",
                                    workers=args.workers))
    t_prep = time.perf_counter() - t0
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"workers {args.workers}; {args.subjects} subjects x {len(contrasts)} contrasts")
    print("| stage    | volumes | seconds | volumes/min | slices |")
    print("|----------|---------|---------|-------------|--------|")
    print(f"| simulate | {volumes:7d} | {t_sim:7.1f} | {volumes / t_sim * 60:11.1f} |      - |")
    print(f"| prepare  | {volumes:7d} | {t_prep:7.1f} | {volumes / t_prep * 60:11.1f} | {result.n_slices:6d} |")


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
