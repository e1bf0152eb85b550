"""Throughput and memory of `dallebrain synthesize` on the shipped model, and whether bf16 holds quality.

    python benchmarks/bench_synthesize.py --part speed --n 64                     # slices/s per batch and precision
    python benchmarks/bench_synthesize.py --part quality --n 64 --judge PREPARED  # bf16 vs fp32, same slices
    python benchmarks/bench_synthesize.py --part launch --n 64                    # 2 processes x 1 thread
    python benchmarks/bench_synthesize.py --part memory --sizes 16,1024 --steps 1 # peak RSS against n

speed: each (batch size, precision) makes the same n-slice data set (default mix, seed 0) in one process with
all torch threads; slices/s counts planning, denoising, decoding and writing, not model loading or the merge.
quality: the fp32 and bf16 data sets of the largest batch size, slice by slice: pixel differences, and with
--judge the share of slices the on-prompt judge (trained once on PREPARED) calls on-prompt in each.
launch: the same data set by `accelerate launch --multi_gpu --num_processes 2` (one thread each); slices/s
is n over the slowest process's generating time. memory: peak resident memory of a whole `synthesize`
process per n (a fresh process each, so every figure includes loading the model).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dallebrain.cli._common import OneLineParser


def options_of(out: Path, n: int, steps: int, batch: int, precision: str, judge: Path | None = None):
    from dallebrain.synthesize.mix import parse_mix
    from dallebrain.synthesize.options import SynthesisOptions

    return SynthesisOptions(n=n, out=out, mix=parse_mix(), seed=0, steps=steps, batch_size=batch,
                            precision=precision, judge=judge)


def make(out: Path, n: int, steps: int, batch: int, precision: str, judge: Path | None = None):
    from dallebrain.synthesize.run import synthesize

    return synthesize(options_of(out, n, steps, batch, precision, judge), progress=False)


def speed(args, work: Path) -> None:
    print(f"| batch | precision | slices | slices/s | s/slice |  (torch threads {_threads()}, steps {args.steps})")
    print("|---|---|---|---|---|")
    for batch in args.batch_sizes:
        for precision in args.precisions:
            result = make(work / f"b{batch}-{precision}", args.n, args.steps, batch, precision)
            rate = result.slices_per_second
            print(f"| {batch} | {precision} | {result.generated} | {rate:.2f} | {1 / rate:.3f} |", flush=True)


def _images(folder: Path) -> tuple[np.ndarray, object]:
    import pandas as pd

    from dallebrain.data.slicing import load_png

    table = pd.read_parquet(folder / "metadata.parquet")
    return np.stack([load_png(folder / p) for p in table["image_path"]]), table


def quality(args, work: Path) -> None:
    batch = max(args.batch_sizes)
    made = {p: make(work / f"q-{p}", args.n, args.steps, batch, p, args.judge if p == "fp32" else None)
            for p in ("fp32", "bf16")}
    (fp32, t32), (bf16, t16) = _images(work / "q-fp32"), _images(work / "q-bf16")
    diff = np.abs(fp32 - bf16)
    brain = fp32 > 0.05
    print(f"bf16 vs fp32, {len(diff)} slices, batch {batch}, steps {args.steps}:")
    print("| mean abs diff | in brain | 99th pct | max | fp32 slices/s | bf16 slices/s |")
    print("|---|---|---|---|---|---|")
    print(f"| {diff.mean():.4f} | {diff[brain].mean():.4f} | {np.percentile(diff, 99):.4f} | {diff.max():.3f} | "
          f"{made['fp32'].slices_per_second:.2f} | {made['bf16'].slices_per_second:.2f} |")
    if args.judge is not None:
        from dallebrain.synthesize.judge import Judge

        judge = Judge.prepare(args.judge, work / "q-fp32" / "judge", 600)  # trained by the fp32 run: reused
        print(f"judge on real held-out slices: {judge.heldout}")
        for name, images, table in (("fp32", fp32, t32), ("bf16", bf16, t16)):
            _, seen = judge.encoder.run(images)
            contrast = (seen["contrast"] == table["modality"].to_numpy()).mean()
            plane = (seen["orientation"] == table["orientation"].to_numpy()).mean()
            both = ((seen["contrast"] == table["modality"].to_numpy())
                    & (seen["orientation"] == table["orientation"].to_numpy())).mean()
            print(f"judge, {name}: on-prompt {both:.1%} (contrast {contrast:.1%}, plane {plane:.1%})")


def launch(args, work: Path) -> None:
    out = work / "launch"
    cmd = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "-m", "dallebrain.synthesize", "--n", str(args.n), "--out", str(out),
           "--steps", str(args.steps), "--batch-size", str(max(args.batch_sizes)), "--precision",
           args.precisions[-1], "--no-progress"]
    start = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    wall = time.time() - start
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    parts = [(int(m[1]), float(m[2])) for m in re.finditer(r"generated (\d+) slice\(s\) \(([\d.]+) slices/s\)",
                                                           done.stdout)]
    slowest = max(k / r for k, r in parts)
    print(f"2 processes x 1 thread, batch {max(args.batch_sizes)}, {args.precisions[-1]}, steps {args.steps}: "
          f"{sum(k for k, _ in parts)} slices, {sum(k for k, _ in parts) / slowest:.2f} slices/s while generating "
          f"(per process {', '.join(f'{r:.2f}' for _, r in parts)}); {wall:.0f} s wall with loading and merge")


def memory(args, work: Path) -> None:
    code = ("import resource, sys; from pathlib import Path; sys.path.insert(0, {bench!r}); "
            "from bench_synthesize import make; r = make(Path({out!r}), {n}, {steps}, {batch}, {precision!r}); "
            "print(r.generated, r.slices_per_second, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    print(f"| n | peak RSS (MiB) | slices/s |  (steps {args.steps}, batch {max(args.batch_sizes)}, "
          f"{args.precisions[-1]})")
    print("|---|---|---|")
    for n in args.sizes:
        src = code.format(bench=str(Path(__file__).parent), out=str(work / f"m{n}"), n=n, steps=args.steps,
                          batch=max(args.batch_sizes), precision=args.precisions[-1])
        done = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        generated, rate, rss_kib = done.stdout.split()[-3:]
        print(f"| {generated} | {int(rss_kib) / 1024:.0f} | {float(rate):.2f} |", flush=True)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def main() -> None:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("speed", "quality", "launch", "memory"), default="speed")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[1, 8, 16])
    parser.add_argument("--precisions", type=lambda s: s.split(","), default=["fp32", "bf16"])
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[16, 1024])
    parser.add_argument("--judge", type=Path, default=None, help="prepared data set for the on-prompt judge")
    parser.add_argument("--work", type=Path, default=None, help="keep the data sets here (default: a temp dir)")
    args = parser.parse_args()
    for batch in args.batch_sizes:  # every run's settings before the first run's minutes
        for precision in args.precisions:
            for n in {args.n, *args.sizes}:
                try:
                    options_of(Path("unused"), n, args.steps, batch, precision, args.judge).check()
                except ValueError as exc:
                    raise SystemExit(f"error: {exc}") from None
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        {"speed": speed, "quality": quality, "launch": launch, "memory": memory}[args.part](args, work)


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
