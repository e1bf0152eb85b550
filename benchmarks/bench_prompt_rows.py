"""One seed, one word changed: the README's table of what a user sees, measured by the shipped judges.

    python benchmarks/bench_prompt_rows.py [--model MODEL] [--seed 7] [--figure rows.png]

Axial T1w prompts at one seed, default sampling; for each group (age, sex, landmark level, number-only level)
the tissue judge's lateral-ventricle fraction of the brain and the level judge's MNI z of every image, printed
as the README's markdown rows. --figure writes the images in the same rows, to look at them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dallebrain.cli._common import OneLineParser

BASE = "axial T1-weighted MRI slice of a healthy {age}-year-old {sex} {where}"
LV = "at the level of the lateral ventricles"
GROUPS = [  # (row label, [(column label, prompt)])
    ("age 20 / 50 / 85 (woman, at the lateral ventricles)",
     [(f"{a} y", BASE.format(age=a, sex="woman", where=LV)) for a in (20, 50, 85)]),
    ("woman / man (50)", [(s, BASE.format(age=50, sex=s, where=LV)) for s in ("woman", "man")]),
    ("at the cerebellum / lateral ventricles / centrum semiovale",
     [(w, BASE.format(age=50, sex="woman", where=f"at the level of the {w}"))
      for w in ("cerebellum", "lateral ventricles", "centrum semiovale")]),
    ("at z = 0 / 23 / 45 mm", [(f"z = {z}", BASE.format(age=50, sex="woman", where=f"at z = {z} mm"))
                               for z in (0, 23, 45)]),
]


def measure(pipe, seed: int) -> list[tuple[str, list[str], np.ndarray, np.ndarray, np.ndarray]]:
    from dallebrain.judges.level import estimate_levels
    from dallebrain.judges.tissue import load_tissue_judge

    judge = load_tissue_judge()
    rows = []
    for label, columns in GROUPS:
        prompts = [p for _, p in columns]
        images = pipe.sample(prompts, [seed] * len(prompts))
        ventricles = judge.fractions(images)["ventricles"]
        levels = estimate_levels(images, ["axial"] * len(images), judge)
        rows.append((label, [c for c, _ in columns], images, ventricles, levels))
    return rows


def markdown(rows, seed: int) -> str:
    lines = [f"| one seed ({seed}), one word changed; axial T1w | ventricles (% of brain) | judged level (mm) |",
             "|---|---|---|"]
    for label, _, _, ventricles, levels in rows:
        lines.append(f"| {label} | {' / '.join(f'{100 * v:.1f}' for v in ventricles)} | "
                     f"{' / '.join(f'{z:+.0f}' for z in levels)} |")
    return "\n".join(lines)


def figure(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(len(rows), width, figsize=(2.0 * width, 2.2 * len(rows)), squeeze=False)
    for r, (_, columns, images, ventricles, levels) in enumerate(rows):
        for c in range(width):
            ax = axes[r, c]
            ax.set_axis_off()
            if c < len(columns):
                ax.imshow(images[c], cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{columns[c]}\nvent. {100 * ventricles[c]:.1f} %, z {levels[c]:+.0f}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"figure: {path}")


def main(argv: list[str] | None = None) -> str:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="pipeline folder (default: the shipped model)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-leak-table", action="store_true", help="sample from pure noise, as before the table")
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args(argv)
    from dallebrain.api import default_model, load_pipeline

    pipe = load_pipeline(args.model or default_model(), device="cpu")
    if args.no_leak_table:
        pipe.leak_table = None
        pipe.latent_mean = None
    rows = measure(pipe, args.seed)
    table = markdown(rows, args.seed)
    print(table)
    if args.figure:
        figure(rows, args.figure)
    return table


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
