"""The README's real-vs-synthetic grid: for every contrast (rows) and orientation, a held-out real slice beside a
slice the model generates from that real slice's own caption.

    python recipes/real_vs_synthetic.py --data PREPARED --out docs/real_vs_synthetic.png [--model PIPELINE]

Real slices come from the test split (subjects the model never saw), one per contrast and orientation, at
the level nearest the middle of the brain's extent in that plane; the synthetic slice uses seed 0 and the
default sampler settings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dallebrain.cli._common import OneLineParser

CONTRASTS = ("T1w", "T2w", "PDw", "FLAIR")
ORIENTATIONS = ("axial", "coronal", "sagittal")
# A level per plane that shows the landmarks readers check first (ventricles, hippocampi, midline).
LEVELS_MM = {"axial": 15.0, "coronal": -20.0, "sagittal": 0.0}


def pick_real(table, contrast: str, orientation: str, seed: int = 0):
    rows = table[(table["split"] == "test") & (table["modality"] == contrast) & (table["orientation"] == orientation)]
    if rows.empty:
        raise ValueError(f"no test slice of {contrast} {orientation}")
    gap = (rows["slice_mm"] - LEVELS_MM[orientation]).abs()
    nearest = rows[(gap - gap.min()).abs() < 1e-6]
    return nearest.iloc[int(np.random.default_rng(seed).integers(len(nearest)))]


def main(argv: list[str] | None = None) -> Path:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared data set (with a test split)")
    parser.add_argument("--model", type=Path, default=None, help="pipeline folder (default: the shipped model)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from dallebrain.api import load_pipeline
    from dallebrain.data.io import atomic_path
    from dallebrain.evaluation.features import load_slices

    table = pd.read_parquet(args.data / "metadata.parquet")
    pipe = load_pipeline(args.model, device="cpu")
    fig, axes = plt.subplots(len(CONTRASTS), 2 * len(ORIENTATIONS), figsize=(2 * len(ORIENTATIONS) * 1.6,
                                                                            len(CONTRASTS) * 1.75))
    captions = []
    for i, contrast in enumerate(CONTRASTS):
        for j, orientation in enumerate(ORIENTATIONS):
            row = pick_real(table, contrast, orientation, args.seed)
            real = load_slices(args.data, [row["image_path"]])[0]
            fake = pipe(row["caption"], n=1, seed=args.seed).images[0]
            captions.append(row["caption"])
            for k, (image, kind) in enumerate(((real, "real"), (fake, "synthetic"))):
                ax = axes[i, 2 * j + k]
                ax.imshow(image, cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(f"{orientation}\n{kind}", fontsize=8)
            axes[i, 0].set_ylabel(contrast, fontsize=9)
    fig.tight_layout(pad=0.3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    with atomic_path(args.out.with_suffix(".txt")) as tmp:
        Path(tmp).write_text("\n".join(captions) + "\n")
    print(f"wrote {args.out} (prompts in {args.out.with_suffix('.txt')})")
    return args.out


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
