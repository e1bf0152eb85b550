"""Does the sex word change head size as the cohort does? (issue 11: "men's generated head area larger than women's
by the cohort's own ratio within 3 %"). Same seeds, one word changed ("woman" / "man"), at a few positions; the
brain area of each image is what the tissue judge calls brain. Beside it the cohort's own men/women ratio at the
same positions: the judge on the real train slices of that plane and landmark. Prints a table, asserts nothing.

A paired comparison: `evaluate`'s head-size row compares the synthetic men and women of the held-out captions,
which differ in position, age and contrast as well (and had 15 women among 64 slices), so it mixes those in.

  OMP_NUM_THREADS=2 python benchmarks/bench_sex_area.py --real PREPARED [--model M] [--seeds 8]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _bench import check_at_least, check_prepared  # benchmarks/_bench.py, beside this script

from dallebrain.cli._common import OneLineParser

# (plane, landmark words of the prompt and of metadata.parquet)
CASES = (("axial", "at the level of the lateral ventricles"), ("coronal", "through the thalami"),
         ("axial", "at the level of the centrum semiovale"))
PROMPT = "{plane} T1-weighted MRI slice of a healthy {age}-year-old {sex} {landmark}"
AGE = 50
TARGET = 0.03


def cohort_ratio(real: Path, judge, plane: str, landmark: str, per_sex: int = 200, seed: int = 0) -> float:
    """Men's mean judged brain area over women's on the cohort's T1w train slices at that plane and landmark."""
    import pandas as pd

    from dallebrain.data.slicing import load_png

    table = pd.read_parquet(real / "metadata.parquet")
    rows = table[(table.split == "train") & (table.orientation == plane) & (table.landmark == landmark)
                 & (table.modality == "T1w")]
    areas = {}
    for sex in ("M", "F"):
        group = rows[rows.sex == sex]
        if group.empty:
            raise SystemExit(f"error: no {sex} T1w {plane} train slices '{landmark}' in {real}")
        group = group.sample(min(per_sex, len(group)), random_state=seed)
        images = np.stack([load_png(real / p) for p in group.image_path]).astype(np.float32)
        areas[sex] = (judge.segment(images) > 0).mean()
    return float(areas["M"] / areas["F"])


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, required=True, help="prepared cohort (the model's training data)")
    parser.add_argument("--model", type=Path, default=None, help="pipeline folder (default: the shipped model)")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--attribute-guidance", type=float, default=None, help="default: the model's")
    args = parser.parse_args()
    check_prepared("real", args.real)  # before the model samples for minutes
    check_at_least(1, seeds=args.seeds, steps=args.steps)
    from dallebrain.api import load_pipeline
    from dallebrain.judges.tissue import load_tissue_judge

    pipe = load_pipeline(args.model, device="cpu")
    if args.attribute_guidance is not None:
        pipe.attribute_guidance = args.attribute_guidance
    judge = load_tissue_judge()
    print(f"{args.seeds} seeds per prompt, T1w, age {AGE}, {args.steps} steps; brain area = tissue judge's brain\n")
    print("| position | synthetic men / women | cohort men / women | within 3 % |")
    print("|---|---|---|---|")
    for plane, landmark in CASES:
        area = {}
        for sex in ("woman", "man"):
            images = pipe(PROMPT.format(plane=plane, age=AGE, sex=sex, landmark=landmark), n=args.seeds, seed=100,
                          steps=args.steps).images
            area[sex] = (judge.segment(images) > 0).mean()
        synthetic = area["man"] / area["woman"]
        cohort = cohort_ratio(args.real, judge, plane, landmark)
        print(f"| {plane} {landmark} | {synthetic:.3f} | {cohort:.3f} | "
              f"{'yes' if abs(synthetic / cohort - 1) <= TARGET else 'no'} ({100 * (synthetic / cohort - 1):+.1f} %) |",
              flush=True)


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
