"""The README's simulator figures: one subject at three time points, and one slice of each lesion type in
each contrast with its mask outlined.

    python recipes/simulator_figures.py --out docs

Rendered with the simulator's own functions (the cohort's 1.5 mm grid, seed 0 draws, 3 T protocols drawn as
the cohort draws them), axial slices in radiological display. Writes simulator_longitudinal.png and
simulator_lesions.png (8-bit grey, small: each well under 400 KB).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dallebrain.cli._common import OneLineParser

CONTRASTS = ("T1w", "T2w", "PDw", "FLAIR")
LESION_TYPES = ("wmh", "ms", "infarct", "tumour")
OUTLINE = {1: "#ffd400", 2: "#00e5ff", 3: "#ff4fd8", 4: "#ff3b30", 5: "#ff9500", 6: "#34c759"}


def _render(anatomy, modality: str, field: float, seed: int) -> np.ndarray:
    from dallebrain.data.mr_physics import draw_sequence
    from dallebrain.data.simulate import synthesize

    rng = np.random.default_rng(seed)
    seq = draw_sequence(modality, field, rng)
    image = synthesize(anatomy, seq, field, rng, 0.1, 0.02, np.zeros(anatomy.gm.shape, np.float32))
    # Display window: the brain's 0.5-99.5th percentiles (PDw, whose tissues differ by ~10 %, stays readable).
    low, high = np.percentile(image[anatomy.intracranial > 0.5], [0.5, 99.5])
    return np.clip((image - low) / max(float(high - low), 1e-6), 0, 1) * (anatomy.intracranial > 0.5)


def _show(ax, image: np.ndarray, title: str | None = None) -> None:
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def longitudinal_figure(out: Path, grid, years=(0.0, 5.0, 10.0), age: float = 68.0) -> Path:
    """Rows T1w and FLAIR, columns the sessions of one subject (ventricles grow, cortex thins)."""
    import matplotlib.pyplot as plt

    from dallebrain.data.anatomy import draw_traits
    from dallebrain.data.grid import extract_slice
    from dallebrain.data.longitudinal import sessions

    traits = draw_traits(grid, "M", np.random.default_rng([0, 3]))
    scans = list(sessions(grid, age, traits, years, np.random.default_rng([0, 3, 2])))
    level = grid.index_of("axial", 20.0)
    fig, axes = plt.subplots(2, len(scans), figsize=(2.2 * len(scans), 4.6), dpi=110)
    for col, scan in enumerate(scans):
        volumes = scan.anatomy.volumes_ml()
        for row, modality in enumerate(("T1w", "FLAIR")):
            image = extract_slice(_render(scan.anatomy, modality, 3.0, seed=1 + row), "axial", level)
            title = (f"+{scan.years:g} y (age {scan.age:g})\nventricles {volumes['lateral_ventricles_ml']:.0f} mL, "
                     f"GM {volumes['gm_ml']:.0f} mL") if row == 0 else None
            _show(axes[row, col], image, title)
        axes[0, 0].set_ylabel("T1w (MPRAGE/SPGR)", fontsize=8)
        axes[1, 0].set_ylabel("FLAIR", fontsize=8)
    fig.suptitle("One anatomy, three sessions (native space, new head pose per visit)", fontsize=9)
    fig.tight_layout()
    path = out / "simulator_longitudinal.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def _lesion_subject(kind: str, grid, seed: int):
    from dallebrain.data.anatomy import age_template, draw_traits, place_in_native
    from dallebrain.data.lesion_atlas import lesion_atlas
    from dallebrain.data.lesion_plans import DRAW, add_lesions
    from dallebrain.data.lesions import full_mask

    rng = np.random.default_rng([seed, 7])
    traits = draw_traits(grid, "F", rng)
    plan = None
    while plan is None:
        plan = DRAW[kind](rng, 72.0, lesion_atlas(grid), grid)
    ml = grid.spacing_mm ** 3 / 1000 * traits.scale ** 3
    anatomy = place_in_native(grid, add_lesions(age_template(grid, 72.0, traits), plan, grid, ml, 72.0), traits,
                              traits.to_mni())
    return anatomy, full_mask(grid.shape, anatomy.lesions, anatomy.lesion_mask)


def lesions_figure(out: Path, grid, seed: int = 0) -> Path:
    """Rows the lesion types, columns the contrasts; the axial slice with the most lesion, mask outlined."""
    import matplotlib.pyplot as plt

    from dallebrain.data.grid import extract_slice
    from dallebrain.data.lesions import MASK_LABELS

    fig, axes = plt.subplots(len(LESION_TYPES), len(CONTRASTS), figsize=(2.0 * len(CONTRASTS), 2.2 * 4), dpi=110)
    for row, kind in enumerate(LESION_TYPES):
        anatomy, mask = _lesion_subject(kind, grid, seed)
        level = int(np.argmax((mask > 0).sum(axis=(0, 1))))
        plane = extract_slice(mask, "axial", level)
        for col, modality in enumerate(CONTRASTS):
            ax = axes[row, col]
            _show(ax, extract_slice(_render(anatomy, modality, 3.0, seed=10 + col), "axial", level),
                  modality if row == 0 else None)
            for value in np.unique(plane[plane > 0]):
                ax.contour(plane == value, levels=[0.5], colors=OUTLINE[int(value)], linewidths=0.6)
        labels = ", ".join(MASK_LABELS[int(v)] for v in np.unique(plane[plane > 0]))
        axes[row, 0].set_ylabel(f"{kind}\n({labels})", fontsize=8)
    fig.suptitle("Simulated lesions at 3 T, mask outlines (label colours per lesion tissue)", fontsize=9)
    fig.tight_layout()
    path = out / "simulator_lesions.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    from dallebrain.data.simulate import SIMULATION_GRID

    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [longitudinal_figure(args.out, SIMULATION_GRID), lesions_figure(args.out, SIMULATION_GRID)]
    for path in paths:
        print(f"{path}: {path.stat().st_size / 1024:.0f} KB")
    return paths


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
