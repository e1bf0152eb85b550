"""Variations benchmark (issue 12, "variations keep the source's plane/level/contrast"): unCLIP variations of
held-out real slices, each judged as the sidecar records it (pipelines/variation_check.py: Brain-CLIP zero-shot
contrast and plane, the level judge's level). Prints, per model, the share of variations that keep their source's
contrast, plane and level (within LEVEL_TOLERANCE_MM), and how often the judges read the source itself right
(its true contrast, plane and level from metadata.parquet): the ceiling of what "kept" can show. Asserts nothing.

  OMP_NUM_THREADS=2 python benchmarks/bench_variations.py --data PREPARED MODEL [MODEL ...] [--sources 24] [--n 4]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _bench import check_at_least, check_holds, check_prepared  # benchmarks/_bench.py, beside this script

from dallebrain.cli._common import OneLineParser


def sources(data: Path, count: int, seed: int = 0):
    """`count` test slices, spread over contrast x plane, with their true labels."""
    import pandas as pd

    from dallebrain.data.slicing import load_png

    table = pd.read_parquet(data / "metadata.parquet")
    table = table[table["split"] == "test"]
    groups = list(table.groupby(["modality", "orientation"]))
    per = max(1, count // len(groups))
    rows = pd.concat([g.sample(min(per, len(g)), random_state=seed) for _, g in groups])
    images = np.stack([load_png(data / p) for p in rows.image_path]).astype(np.float32)
    return images, rows


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--sources", type=int, default=24)
    parser.add_argument("--n", type=int, default=4, help="variations per source")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    check_prepared("data", args.data)  # every model before the first one's run
    for model in args.models:
        check_holds("model", model, "decoder", "a pipeline with an unCLIP decoder")
    check_at_least(1, sources=args.sources, n=args.n, steps=args.steps)
    from dallebrain.api import load_pipeline
    from dallebrain.pipelines.variation_check import LEVEL_TOLERANCE_MM, describe

    images, rows = sources(args.data, args.sources)
    print(f"{len(images)} test slices of {args.data} ({rows.modality.nunique()} contrasts x "
          f"{rows.orientation.nunique()} planes), {args.n} variations each, {args.steps} steps; "
          f"level kept = same plane and within {LEVEL_TOLERANCE_MM:g} mm\n")
    print("| model | source read right: contrast / plane / level | variations keeping contrast / plane / level |")
    print("|---|---|---|")
    for folder in args.models:
        pipe = load_pipeline(folder, route="unclip", device="cpu")
        read = describe(pipe.clip, images)
        truth = [(m, o, abs(float(z))) if o == "sagittal" else (m, o, float(z))
                 for m, o, z in zip(rows.modality, rows.orientation, rows.slice_mm, strict=True)]
        right = np.array([[r["contrast"] == t[0], r["orientation"] == t[1],
                           r["orientation"] == t[1] and abs(r["level_mm"] - t[2]) <= LEVEL_TOLERANCE_MM]
                          for r, t in zip(read, truth, strict=True)])
        kept = []
        for i, image in enumerate(images):
            result = pipe.variations(image, n=args.n, seed=i * args.n, steps=args.steps)
            kept += [[r["kept"]["contrast"], r["kept"]["orientation"], r["kept"]["level"]] for r in result.per_image]
        kept = np.array(kept)
        print(f"| {folder} | " + " / ".join(f"{v:.0%}" for v in right.mean(0)) + " | "
              + " / ".join(f"{v:.0%}" for v in kept.mean(0)) + " |", flush=True)


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
