"""A README figure comparing models or routes on the same prompts and seeds: one row per (model, route), one column
per prompt, every image drawn with seed 0 at the default sampler settings.

    python recipes/route_figure.py --out docs/unclip_decoder.png \
        --row "LDM=DEFAULT:ldm" --row "unCLIP, old decoder=OLD:unclip" --row "unCLIP, new decoder=NEW:unclip"

MODEL is a pipeline folder, or DEFAULT for the shipped model. A same-seed comparison shows what a change did to
the images themselves, which the evaluation's distances summarise but do not show.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dallebrain.cli._common import OneLineParser

PROMPTS = (
    "axial T1-weighted slice of a healthy 30-year-old man at the level of the lateral ventricles",
    "axial T2-weighted slice of a healthy 70-year-old woman at the level of the lateral ventricles",
    "axial FLAIR slice of a healthy 50-year-old woman at the level of the lateral ventricles",
    "axial PD-weighted slice of a healthy 40-year-old man at the level of the lateral ventricles",
    "coronal T1-weighted slice of a healthy 60-year-old woman through the hippocampi",
    "coronal T2-weighted slice of a healthy 25-year-old man through the hippocampi",
    "sagittal T1-weighted slice of a healthy 45-year-old woman near the midline",
)
ROUTES = ("ldm", "unclip")


def parse_row(spec: str) -> tuple[str, str | None, str]:
    """("label", model folder or None for the shipped model, route) from "LABEL=MODEL:ROUTE"."""
    label, sep, rest = spec.partition("=")
    model, colon, route = rest.rpartition(":")
    if not sep or not colon or not label.strip() or not model or route not in ROUTES:
        raise ValueError(f"--row: expected LABEL=MODEL:ROUTE with ROUTE one of {', '.join(ROUTES)}, got {spec!r}")
    if model != "DEFAULT" and not Path(model).is_dir():
        raise ValueError(f"--row {spec!r}: no model folder {model}")
    return label.strip(), None if model == "DEFAULT" else model, route


def main(argv: list[str] | None = None) -> Path:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", action="append", required=True, help="LABEL=MODEL:ROUTE (MODEL: folder or DEFAULT)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        rows = [parse_row(spec) for spec in args.row]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dallebrain.api import load_pipeline
    from dallebrain.data.io import atomic_path

    fig, axes = plt.subplots(len(rows), len(PROMPTS), figsize=(1.9 * len(PROMPTS), 2.0 * len(rows) + 0.4),
                             squeeze=False)
    for r, (label, model, route) in enumerate(rows):
        pipe = load_pipeline(model, route=route, device="cpu")
        for c, prompt in enumerate(PROMPTS):
            ax = axes[r][c]
            ax.imshow(pipe(prompt, n=1, seed=args.seed).images[0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(prompt.replace("slice of a healthy ", "").replace(" at the level of the", "\n")
                             .replace(" through the", "\n").replace(" near the", "\n"), fontsize=6)
        axes[r][0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=110)
        from PIL import Image

        Image.open(tmp).convert("L").save(tmp, optimize=True)  # a grey figure: one channel is 0.57x the file
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
