"""Short prompts of one contrast at explicit levels, models side by side: where does each draw the slice?

    python benchmarks/bench_explicit_levels.py MODEL [MODEL ...] [--contrast PDw] [--seeds 8]

For each plane, "PLANE CONTRAST MRI slice of a healthy AGE-year-old SEX at AXIS = LEVEL mm" at fixed levels (axial z
-30..60, coronal y every 10 mm from -70 to 40, sagittal x +-10..50; age and sex taking turns over the seeds 0..S-1,
apart from recipes/level_map.py's), each model with its own level map as shipped; the level judge reads every slice.
Printed per model: the mean absolute error against the level asked (sagittal as |x|) and the mean signed error, per
plane. What it is for: a level map remeasured for one contrast (`recipes/level_map.py --contrasts C`) against the
map it replaces, on prompts the map was not measured on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dallebrain.cli._common import OneLineParser

LEVELS = {"axial": (-30, -10, 0, 15, 30, 45, 60), "coronal": tuple(range(-70, 45, 10)),
          "sagittal": (-50, -30, -10, 10, 30, 50)}
SUBJECTS = ("25-year-old woman", "45-year-old man", "65-year-old woman", "85-year-old man")


def main(argv: list[str] | None = None) -> dict:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+", help="pipeline folders")
    parser.add_argument("--contrast", default="PDw")
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args(argv)
    from dallebrain.vocab import CONTRAST_LONG, ORIENTATION_AXIS

    if args.contrast not in CONTRAST_LONG:
        raise SystemExit(f"error: --contrast {args.contrast!r}: choose from {', '.join(CONTRAST_LONG)}")
    if args.seeds < 1:
        raise SystemExit(f"error: --seeds must be at least 1, got {args.seeds}")
    for model in args.models:
        if not (model / "dallebrain.json").is_file():
            raise SystemExit(f"error: {model} is not a pipeline folder (no dallebrain.json)")
    from dallebrain.api import load_pipeline
    from dallebrain.evaluation.features import level_for_prediction
    from dallebrain.judges.level import estimate_levels

    rows = [(plane, mm, s) for plane, levels in LEVELS.items() for mm in levels for s in range(args.seeds)]
    prompts = [f"{plane} {CONTRAST_LONG[args.contrast]} MRI slice of a healthy {SUBJECTS[s % len(SUBJECTS)]} at "
               f"{ORIENTATION_AXIS[plane]} = {mm} mm" for plane, mm, s in rows]
    planes = [plane for plane, _, _ in rows]
    asked = np.array([level_for_prediction(plane, mm) for plane, mm, _ in rows])  # sagittal as |x|, as judged
    print(f"{args.contrast}: {len(rows)} prompts ({args.seeds} seeds per level)")
    print("| model | MAE all (mm) | " + " | ".join(f"{p} MAE / bias" for p in LEVELS) + " |")
    print("|---|---|" + "---|" * len(LEVELS))
    results = {}
    for model in args.models:
        images = load_pipeline(model).sample(prompts, [s for _, _, s in rows], batch_size=32)
        error = estimate_levels(images, planes) - asked
        of_plane = {p: error[np.array(planes) == p] for p in LEVELS}
        by_plane = {p: (float(np.abs(e).mean()), float(e.mean())) for p, e in of_plane.items()}
        results[str(model)] = {"mae": float(np.abs(error).mean()), "planes": by_plane}
        print(f"| {model} | {np.abs(error).mean():.2f} | "
              + " | ".join(f"{m:.2f} / {b:+.2f}" for m, b in by_plane.values()) + " |", flush=True)
    return results


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
