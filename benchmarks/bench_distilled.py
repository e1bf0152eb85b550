"""A guidance-distilled model (a student throughout, or beside its teacher for the low-noise steps) against its
teacher (recipes/guidance_distill.py): seconds per image in one process,
alternating rounds, one image per pass (the default) and 8 per pass; and how far the student's slices are from the
teacher's at the same prompt and seed (mean absolute difference, of 1), per contrast, beside the teacher's own
seed-to-seed difference and, for a student of the low-noise steps, the teacher with those steps unguided.

    python benchmarks/bench_distilled.py --student FOLDER [--teacher FOLDER] [--rounds 3] [--seeds 8] [--steps 20]

BENCHMARKS.md, "Guidance distilled into the UNet".
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
from _bench import check_holds  # benchmarks/_bench.py, beside this script

from dallebrain.cli._common import OneLineParser

PROMPT = "Axial {} brain MRI of a healthy {}-year-old woman at the level of the lateral ventricles (z = +23 mm), 1.5 T."
CONTRASTS = ("T1-weighted", "T2-weighted", "FLAIR", "PD-weighted")
PASSES = ((1, 4), (8, 16))  # (images per pass, images per timing)


def main(argv: list[str] | None = None) -> dict:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, required=True, help="the guidance-distilled pipeline folder")
    parser.add_argument("--teacher", type=Path, default=None, help="its teacher (default: the shipped model)")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (0: differences only)")
    parser.add_argument("--seeds", type=int, default=8, help="seeds per contrast and age for the differences")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (the default: 20)")
    args = parser.parse_args(argv)
    check_holds("--student", args.student, "dallebrain.json", "a pipeline folder")  # before the teacher loads
    check_holds("--teacher", args.teacher, "dallebrain.json", "a pipeline folder")
    if args.rounds < 0 or min(args.seeds, args.steps) < 1:
        parser.error(f"--rounds must be at least 0 (0: no timing), --seeds and --steps at least 1, got {args.rounds}, "
                     f"{args.seeds}, {args.steps}")
    from dallebrain.api import default_model, load_pipeline

    pipes = {"teacher": load_pipeline(args.teacher or default_model(), device="cpu"),
             "student": load_pipeline(args.student, device="cpu")}
    if pipes["student"].guidance_distilled is None and pipes["student"].student_unet is None:
        parser.error(f"{args.student} is not guidance-distilled (no sampling.guidance_distilled)")
    for pipe in pipes.values():
        pipe(PROMPT.format("T1-weighted", 46), n=1, seed=0)  # warm-up: first-call allocations out of the timings
    times: dict[tuple, list[float]] = {}
    for r in range(args.rounds):
        for contrast in CONTRASTS[:: 1 if r % 2 == 0 else -1]:
            for name, pipe in (pipes.items() if r % 2 == 0 else reversed(pipes.items())):
                for per_pass, n in PASSES:
                    pipe.images_per_pass = per_pass
                    start = time.perf_counter()
                    pipe(PROMPT.format(contrast, 46), n=n, seed=100 + r, steps=args.steps)
                    times.setdefault((name, contrast, per_pass), []).append((time.perf_counter() - start) / n)
    out: dict = {"seconds_per_image": {}, "difference": {}}
    print(f"{'model':8s} {'prompt':12s} {'per pass':>8s} {'s/image (median)':>16s}  rounds")
    for (name, contrast, per_pass), values in sorted(times.items()):
        median = statistics.median(values)
        out["seconds_per_image"][f"{name} {contrast} x{per_pass}"] = median
        print(f"{name:8s} {contrast:12s} {per_pass:8d} {median:16.3f}  " + ", ".join(f"{v:.3f}" for v in values))
    for pipe in pipes.values():
        pipe.images_per_pass = 8
    # a student beside its teacher replaces the guided rows below its timestep: the teacher with those steps
    # unguided instead (sampling.unguided_below_timestep) is what the student is measured against
    below = pipes["student"].student_below
    print(f"\n{'prompt':12s} {'age':>4s} {'student vs teacher':>19s} {'unguided vs teacher':>20s} "
          f"{'teacher seed vs seed':>21s}  (mean |difference|, of 1)")
    for contrast in CONTRASTS:
        for age in (20, 85):
            prompt = PROMPT.format(contrast, age)
            made = {name: pipe(prompt, n=args.seeds, seed=0, steps=args.steps).images for name, pipe in pipes.items()}
            record = {"student_vs_teacher": float(np.abs(made["student"] - made["teacher"]).mean())}
            if below is not None:
                pipes["teacher"].unguided_below = below
                unguided = pipes["teacher"](prompt, n=args.seeds, seed=0, steps=args.steps).images
                pipes["teacher"].unguided_below = None
                record["unguided_vs_teacher"] = float(np.abs(unguided - made["teacher"]).mean())
            # the scale of a difference: two seeds of the teacher itself
            record["teacher_seed_vs_seed"] = (float(np.abs(made["teacher"][1:] - made["teacher"][:-1]).mean())
                                              if args.seeds > 1 else float("nan"))
            out["difference"][f"{contrast} {age}"] = record
            print(f"{contrast:12s} {age:4d} {record['student_vs_teacher']:19.4f} "
                  f"{record.get('unguided_vs_teacher', float('nan')):20.4f} {record['teacher_seed_vs_seed']:21.4f}")
    return out


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
