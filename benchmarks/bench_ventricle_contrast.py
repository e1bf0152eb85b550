"""Whether a route's slices of one contrast follow age where the tissue judge cannot read them: the contrast of the
old brain's ventricle region against steady white matter, either polarity, at the lateral ventricles.

    python benchmarks/bench_ventricle_contrast.py --real PREPARED [--model MODEL] [--route unclip] [--contrast PDw]
        [--scales 6,3] [--seeds 16]

Why: the cohort's PD-weighted scans draw CSF dark at short TR and bright at long TR (data/mr_physics.py, TR
3,000-6,000 ms), and the tissue judge, trained to find CSF darker or brighter than tissue by contrast, reads few
ventricles in PDw slices: bench_age_sweep.py --contrasts PDw then says little (its judge's own 85/20 ratio on real
PDw slices is 3.45 against 4.92 on the ground truth). Here the region is fixed from the cohort's own label maps (the
pixels that are ventricle in at least half of the real axial slices of subjects 75 and older within 6 mm of
z = +23 mm), so a young brain's slice has mostly tissue there and an old one's mostly CSF, whatever its polarity:
score = |mean(region) - mean(white matter)| / mean(white matter), white matter being the pixels that are white matter
in at least 80 % of those slices at every age. Printed: the real slices' Spearman rank correlation of the score with
age and the 85/20 ratio of a line through it (the ceiling), then per attribute guidance scale the prompts' same-seed
sweep (ages 20, 40, 60, 85, bench_age_sweep.py's prompt): the share of seeds whose score rises with age (Spearman >
0), the mean Spearman, and the 85/20 ratio of the mean scores. A table; asserts nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from dallebrain.cli._common import OneLineParser

ROOT = Path(__file__).resolve().parents[1]
OLD_AGE = 75  # the subjects whose ventricles define the region
WINDOW_MM = 6.0  # as bench_age_sweep.cohort_ratio's


def regions(labels: np.ndarray, ages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the old brains' ventricle region, steady white matter) from class-index label maps [N, H, W]."""
    from dallebrain.judges.network import CLASSES

    old = ages >= OLD_AGE
    if old.sum() < 2:
        raise SystemExit(f"error: {old.sum()} real slice(s) of subjects {OLD_AGE} or older near the level: need 2")
    ventricles = (labels[old] == CLASSES.index("ventricles")).mean(axis=0) >= 0.5
    white = (labels == CLASSES.index("wm")).mean(axis=0) >= 0.8
    if ventricles.sum() < 10 or white.sum() < 10:
        raise SystemExit(f"error: the label maps give {ventricles.sum()} ventricle and {white.sum()} white-matter "
                         "pixels of the region: need 10 of each")
    return ventricles, white


def scores(images: np.ndarray, region: np.ndarray, white: np.ndarray) -> np.ndarray:
    """|mean(region) - mean(white)| / mean(white) per slice."""
    inside, reference = images[:, region].mean(axis=1), images[:, white].mean(axis=1)
    return np.abs(inside - reference) / np.maximum(reference, 1e-6)


def main(argv: list[str] | None = None) -> dict:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, required=True, help="prepared real data with label slices")
    parser.add_argument("--model", type=Path, default=None, help="pipeline folder (default: the shipped model)")
    parser.add_argument("--route", choices=("ldm", "unclip"), default="unclip")
    parser.add_argument("--contrast", choices=("T1w", "T2w", "PDw", "FLAIR"), default="PDw")
    parser.add_argument("--scales", default="6,3", help="attribute guidance scales, comma-separated")
    parser.add_argument("--seeds", type=int, default=16)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_age_sweep import AGES, LEVEL_MM, prompt, ratio_85_20, spearman
    from bench_contrast_guidance import scales_of

    scales = scales_of(args.scales)
    if args.seeds < 2:
        raise SystemExit(f"error: --seeds must be at least 2, got {args.seeds}")
    if not (args.real / "metadata.parquet").is_file():
        raise SystemExit(f"error: {args.real} is not a prepared data set (no metadata.parquet)")
    import pandas as pd
    from PIL import Image

    from dallebrain.data.slicing import load_png
    from dallebrain.judges.train import label_classes

    table = pd.read_parquet(args.real / "metadata.parquet")
    rows = table[(table.orientation == "axial") & ((table.slice_mm - LEVEL_MM).abs() <= WINDOW_MM)
                 & (table.modality == args.contrast)].reset_index(drop=True)
    if len(rows) < 4 or "label_path" not in rows or rows.label_path.isna().any():
        raise SystemExit(f"error: need labelled axial {args.contrast} slices near z = {LEVEL_MM:g} mm in {args.real}, "
                         f"found {len(rows)}")
    labels = np.stack([label_classes(np.asarray(Image.open(args.real / p))) for p in rows.label_path])
    ages = rows.age.to_numpy(float)
    region, white = regions(labels, ages)
    real = scores(np.stack([load_png(args.real / p) for p in rows.image_path]), region, white)
    out = {"real": {"slices": len(rows), "spearman": spearman(ages, real), "ratio_85_20": ratio_85_20(ages, real)}}
    print(f"{args.contrast}, axial near z = {LEVEL_MM:+g} mm: region {region.sum()} px, white matter {white.sum()} px; "
          f"real slices ({len(rows)}): Spearman with age {out['real']['spearman']:.2f}, 85/20 "
          f"{out['real']['ratio_85_20']:.2f}\n")
    print("| attribute guidance | rising | mean Spearman | 85/20 | mean score by age |")
    print("|---|---|---|---|---|")
    from dallebrain.api import load_pipeline

    pipe = load_pipeline(args.model, route=args.route)
    prompts = [prompt(args.contrast, a) for _ in range(args.seeds) for a in AGES]
    seeds = [s for s in range(args.seeds) for _ in AGES]
    for scale in scales:
        pipe.attribute_guidance = scale
        synthetic = scores(pipe.sample(prompts, seeds, batch_size=32), region, white).reshape(args.seeds, len(AGES))
        rho = np.array([spearman(np.asarray(AGES, float), s) for s in synthetic])
        mean = synthetic.mean(axis=0)
        out[f"{scale:g}"] = {"rising_share": float((rho > 0).mean()), "spearman_mean": float(rho.mean()),
                             "ratio_85_20": float(mean[-1] / max(mean[0], 1e-6)), "mean_by_age": mean.tolist()}
        print(f"| {scale:g} | {(rho > 0).mean():.0%} | {rho.mean():.2f} | {mean[-1] / max(mean[0], 1e-6):.2f} | "
              + " / ".join(f"{a}: {m:.3f}" for a, m in zip(AGES, mean, strict=True)) + " |", flush=True)
    return out


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
