"""Seconds per image with and without guidance on the low-noise steps (sampling.unguided_below_timestep,
generate's --unguided-below), in one process, alternating rounds, one image per pass (the default) and 8 per pass.

    python benchmarks/bench_unguided_steps.py [--model FOLDER] [--rounds 3] [--steps N]

Cases: a PDw prompt at its model's setting and guided on every step (unguided_below 0), a T1w prompt at its model's
setting and unguided below 400. BENCHMARKS.md, "Guidance off on the low-noise steps".
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from dallebrain.cli._common import OneLineParser

PROMPT = "Axial {} brain MRI of a healthy 46-year-old woman at the level of the lateral ventricles (z = +23 mm), 1.5 T."
CASES = (("PD-weighted", None), ("PD-weighted", 0), ("T1-weighted", None), ("T1-weighted", 400))
PASSES = ((1, 4), (8, 16))  # (images per pass, images per timing)


def main(argv: list[str] | None = None) -> dict:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="pipeline folder (default: the shipped model)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    from dallebrain.api import default_model, load_pipeline

    pipe = load_pipeline(args.model or default_model(), device="cpu")
    # warm-up: first-call allocations out of the timings
    pipe(PROMPT.format("PD-weighted"), n=1, seed=0, steps=args.steps)
    times: dict[tuple, list[float]] = {}
    for r in range(args.rounds):
        for contrast, below in CASES:
            pipe.unguided_below = below
            for per_pass, n in PASSES:
                pipe.images_per_pass = per_pass
                start = time.perf_counter()
                result = pipe(PROMPT.format(contrast), n=n, seed=100 + r, steps=args.steps)
                times.setdefault((contrast, below, per_pass), []).append((time.perf_counter() - start) / n)
                times.setdefault(("ran", contrast, below), [result.settings.get("unguided_below_timestep")])
    print(f"{'prompt':12s} {'unguided below':>22s} {'per pass':>8s} {'s/image (median)':>16s}  rounds")
    out = {}
    for (contrast, below, per_pass), values in ((k, v) for k, v in times.items() if k[0] != "ran"):
        ran = times[("ran", contrast, below)][0]
        label = f"{ran if ran is not None else 'none'} ({'model' if below is None else 'set'})"
        median = statistics.median(values)
        out[f"{contrast} {label} x{per_pass}"] = median
        print(f"{contrast:12s} {label:>22s} {per_pass:8d} {median:16.3f}  " + ", ".join(f"{v:.3f}" for v in values))
    return out


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
