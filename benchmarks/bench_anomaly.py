"""Anomaly detection benchmark (issue 15): prints tables, asserts nothing.

  tune   diffusion settings side by side on lesions PASTED into the healthy fit/val subjects of a prepared
         data set (never its test subjects): what the defaults in anomaly/methods.py were chosen from.
  run    `dallebrain evaluate-anomaly` with the given sizes: every method on the data set's own lesions;
         prints summary.md and the time per slice.
  prompts  pathology prompts through the shipped model (`dallebrain generate-lesion`): per prompt, the share
         of the drawn lesion's core inside the stated region (atlas) and inside the generated slice's brain,
         and its diameter against the stated one (issue targets: >= 90 % in the region, size within 30 %).

  python benchmarks/bench_anomaly.py tune --data PREPARED [--n-per-type 8 --modalities T2w,FLAIR]
  python benchmarks/bench_anomaly.py run  --data PREPARED --out DIR [--n-per-type 30 ...]
  python benchmarks/bench_anomaly.py prompts [--n 4 --steps 10]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from dallebrain.cli._common import OneLineParser

TUNE_SETTINGS = {  # name -> changes to PartialNoising()
    "single 0.5 raw": {"levels": (0.5,), "match_intensity": False, "normative": False},
    "single 0.5 matched": {"levels": (0.5,), "normative": False},
    "single 0.5 matched+normative": {"levels": (0.5,)},
    "single 0.3": {"levels": (0.3,)},
    "single 0.7": {"levels": (0.7,)},
    "single 0.7 guidance 3": {"levels": (0.7,), "guidance": 3.0},
    "multi 0.3/0.5/0.7": {"levels": (0.3, 0.5, 0.7)},
    "patch 16 at 0.7": {"levels": (0.7,), "patch": 16},
    "single 0.7 latent": {"levels": (0.7,), "compare": "latent"},
    "single 0.5 latent": {"levels": (0.5,), "compare": "latent"},
    "single 0.7 raw": {"levels": (0.7,), "match_intensity": False, "normative": False},
    "multi 0.5/0.7/0.85 raw g3": {"levels": (0.5, 0.7, 0.85), "match_intensity": False, "normative": False,
                                   "guidance": 3.0},
    "single 0.7 calibrated": {"levels": (0.7,), "calibrated": True},
    "single 0.5 calibrated": {"levels": (0.5,), "calibrated": True},
    "single 0.3 calibrated": {"levels": (0.3,), "calibrated": True},
    "multi 0.3/0.5/0.7 calibrated": {"levels": (0.3, 0.5, 0.7), "calibrated": True},
}


def _options(args, out: Path, **extra):
    from dallebrain.anomaly.benchmark import BenchmarkOptions
    from dallebrain.anomaly.selection import SelectionSizes

    split = (lambda s: tuple(s.split(",")) if s else None)  # noqa: E731
    return BenchmarkOptions(Path(args.data), out, Path(args.model) if args.model else None,
                            sizes=SelectionSizes(args.n_per_type, args.n_healthy, args.n_val, args.max_fit),
                            modalities=split(args.modalities), orientations=split(args.orientations),
                            steps=args.steps, fpr=args.fpr, max_calibration=args.max_calibration, **extra)


def tune(args) -> None:
    from dallebrain.anomaly.benchmark import run_one_method, score_method, setup
    from dallebrain.anomaly.cases import load_cohort
    from dallebrain.anomaly.diffusion import PartialNoising
    from dallebrain.anomaly.methods import BASELINES

    main = load_cohort(args.data)
    healthy = main.table[main.table["role"].isin(["fit", "val"])]["subject_id"].unique().tolist()
    options = _options(args, Path("/dev/null"), lesion_source="pasted")
    cohort, chosen, pipe, normal = setup(options, subjects=healthy)
    print(f"tuning on {len(healthy)} healthy fit/val subjects, lesions pasted: {len(chosen.lesions)} lesion, "
          f"{len(chosen.healthy)} healthy, {len(chosen.val)} val slices; {len(chosen.fit)} fit slices")
    test = chosen.healthy + chosen.lesions
    runs = {name: (name, None) for name in (*BASELINES, "latent_z")} | {
        name: ("diffusion", replace(PartialNoising(steps=args.steps, seed=0), **change))
        for name, change in TUNE_SETTINGS.items() if not args.only or name in args.only.split(";")}
    kinds = sorted({c.lesion_type for c in chosen.lesions})
    print("| setting | s/slice | AUPRC | best Dice | slice AUROC | " + " | ".join(f"AUPRC {k}" for k in kinds) + " |")
    print("|---" * (5 + len(kinds)) + "|")
    for label, (method, setting) in runs.items():
        start = time.time()
        run = run_one_method(method, options, pipe, normal, chosen.val, test, setting,
                             lambda: (cohort.case(r) for _, r in chosen.fit.iterrows()))
        m = score_method(run, chosen.healthy, chosen.lesions, cohort.grid.spacing_mm)
        per = (time.time() - start) / (len(test) + len(chosen.val))
        o = m["overall"]
        print(f"| {label} | {per:.2f} | {o['auprc']:.3f} | {o['dice_best']:.3f} | {o['slice_auroc']:.3f} | "
              + " | ".join(f"{m['by_type'][k]['auprc']:.3f}" for k in kinds) + " |", flush=True)


def run(args) -> None:
    from dallebrain.anomaly.benchmark import run_benchmark

    options = _options(args, Path(args.out), methods=tuple(args.methods.split(",")) if args.methods else
                       _options(args, Path(args.out)).methods)
    start = time.time()
    metrics = run_benchmark(options)
    s = metrics["settings"]
    n = s["n_val"] + s["n_healthy_test"] + s["n_lesion_test"]
    print(Path(args.out, "summary.md").read_text())
    for name, m in metrics["methods"].items():
        print(f"{name}: {m['seconds'] / n:.2f} s per slice ({n} slices)")
    print(f"total {time.time() - start:.0f} s (normal model fit {metrics['timing']['fit_s']:.0f} s)")


PROMPTS = [
    "axial T2-weighted slice of a 60-year-old woman with a 30 mm tumour in the right temporal lobe",
    "axial FLAIR slice of a 55-year-old man with a 40 mm glioblastoma in the left frontal lobe",
    "coronal T2-weighted slice with a 25 mm tumour in the left parietal lobe",
    "axial T1-weighted slice with a 20 mm tumour in the right occipital lobe",
    "sagittal FLAIR slice with a 35 mm tumour in the right frontal lobe",
    "axial FLAIR slice of a 70-year-old man with a 30 mm chronic infarct in the left middle cerebral artery territory",
    "coronal T2-weighted slice with a 20 mm infarct in the right posterior cerebral artery territory",
    "axial FLAIR slice of a 75-year-old woman with periventricular white-matter hyperintensities (Fazekas 2)",
    "axial FLAIR slice of an 80-year-old man with white-matter hyperintensities (Fazekas 3)",
    "axial T2-weighted slice of a 35-year-old woman with 6 MS lesions in the left frontal lobe",
]


def prompts(args) -> None:
    import torch

    from dallebrain.anomaly.maps import brain_mask
    from dallebrain.anomaly.pathology import CORE_LABELS, generate_with_lesion
    from dallebrain.api import load_pipeline

    pipe = load_pipeline(Path(args.model) if args.model else None, device="cpu")
    torch.manual_seed(0)
    print("| prompt | n | in stated region | in slice's brain | diameter (stated) | within 30 % | s/image |")
    print("|---|---|---|---|---|---|---|")
    placed, sized, n_placed, n_sized, shown = 0, 0, 0, 0, []
    for prompt in PROMPTS:
        start = time.time()
        slices, _, _ = generate_with_lesion(pipe, prompt, n=args.n, seed=0, steps=args.steps)
        kind = slices[0].record["requested"]["kind"]
        region = [s.record["measured"]["in_region"] for s in slices]
        in_brain = [float(brain_mask(s.image)[np.isin(s.mask, CORE_LABELS[kind])].mean()) for s in slices]
        stated = slices[0].record["requested"]["size_mm"]
        diameters = [s.record["measured"]["core_diameter_mm"] for s in slices]
        if region[0] is not None:
            n_placed += len(region)
            placed += sum(r >= 0.5 for r in region)
        within = [abs(d / stated - 1) <= 0.3 for d in diameters] if stated else []
        n_sized, sized = n_sized + len(within), sized + sum(within)
        print(f"| {prompt[:70]} | {len(slices)} | {_mean(region)} | {np.mean(in_brain):.2f} | "
              f"{np.mean(diameters):.1f} ({stated or '-'}) | {sum(within)}/{len(within) or '-'} | "
              f"{(time.time() - start) / len(slices):.1f} |", flush=True)
        shown.append((prompt, slices[0]))
    print(f"lesion core mostly (>= 50 %) in the stated region: {placed}/{n_placed}; diameter within 30 %: "
          f"{sized}/{n_sized}")
    if args.figure:
        _figure([shown[i] for i in (0, 5, 8, 9)], Path(args.figure))


def _figure(items, path: Path) -> None:
    """Each prompt's first slice, bare and with its mask outlined (a small PNG for the README)."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(items), figsize=(2.3 * len(items), 5.0))
    for col, (prompt, item) in enumerate(items):
        for row in range(2):
            axes[row, col].imshow(item.image, cmap="gray", vmin=0, vmax=1)
            axes[row, col].set_axis_off()
        axes[1, col].contour(item.mask > 0, levels=[0.5], colors="lime", linewidths=0.6)
        axes[0, col].set_title("\n".join(textwrap.wrap(prompt.split(" with ")[-1], 28)), fontsize=7)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def _mean(values) -> str:
    return "-" if values[0] is None else f"{np.mean(values):.2f}"


def main() -> None:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("tune", "run", "prompts"))
    parser.add_argument("--data", default=None)
    parser.add_argument("--n", type=int, default=4, help="prompts: images per prompt")
    parser.add_argument("--figure", default=None, help="prompts: write a figure of four of them here")
    parser.add_argument("--out", default="anomaly-benchmark")
    parser.add_argument("--model", default=None)
    parser.add_argument("--methods", default=None)
    parser.add_argument("--only", default=None, help="tune: only these settings (';'-separated names)")
    parser.add_argument("--n-per-type", type=int, default=8)
    parser.add_argument("--n-healthy", type=int, default=16)
    parser.add_argument("--n-val", type=int, default=16)
    parser.add_argument("--max-fit", type=int, default=1500)
    parser.add_argument("--modalities", default=None)
    parser.add_argument("--orientations", default=None)
    parser.add_argument("--steps", type=int, default=10, help="diffusion steps (prompts: of the healthy slice)")
    parser.add_argument("--fpr", type=float, default=0.01)
    parser.add_argument("--max-calibration", type=int, default=400)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    np.seterr(all="ignore")
    if args.mode != "prompts" and not args.data:
        parser.error(f"{args.mode} needs --data")
    if not 1 <= args.steps <= 1000:  # before the cohort loads and the normal model is fitted
        parser.error(f"--steps must be between 1 and 1000, got {args.steps}")
    unknown = set(args.only.split(";")) - set(TUNE_SETTINGS) if args.only else set()
    if unknown:
        parser.error(f"--only: no tuning setting {', '.join(sorted(unknown))} (choose from {', '.join(TUNE_SETTINGS)})")
    {"tune": tune, "run": run, "prompts": prompts}[args.mode](args)


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
