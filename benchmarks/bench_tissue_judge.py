"""Tissue judge benchmark (issue 11): how well the slice tissue segmenter sees anatomy on REAL held-out slices of a
prepared simulated cohort (its val and test subjects, never trained on). Prints tables, asserts nothing.

  1. Dice per class (CSF outside the ventricles, ventricles, GM, WM) per contrast, pixels pooled.
  2. Per slice, the judged ventricle fraction of the brain area against the true one (Pearson r, mean error).
  3. Axial slices at the level of the lateral ventricles (z 18..27 mm), per subject (all 40: the fractions are
     judged, the train subjects' labels were seen in training, hence also the held-out ones alone): the ventricle
     fraction against age, true and judged; its 85/20 ratio from a log-linear fit (fraction = a * exp(b * age)).
  4. The age judge (fitted on the train slices): MAE in years on held-out slices per plane and 30 mm level band
     (every axial slice at the level of the lateral ventricles, a random --age-slices of the others), beside chance
     (always answering the train mean age), per slice and per subject (its slices' predictions averaged).

  OMP_NUM_THREADS=1 python benchmarks/bench_tissue_judge.py --data PREPARED [--weights DIR] [--age DIR]
                                                            [--max-slices 1200]
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from _bench import check_at_least, check_prepared  # benchmarks/_bench.py, beside this script

from dallebrain.cli._common import OneLineParser
from dallebrain.judges.network import CLASSES
from dallebrain.judges.tissue import FRACTIONS, label_fractions, load_tissue_judge
from dallebrain.judges.train import labelled_rows, load_pairs

LEVEL = "at the level of the lateral ventricles"
HELD_OUT = ("val", "test")


def dice_table(judge, data: Path, rows) -> None:
    images, truth = load_pairs(data, rows)
    start = time.time()
    predicted = judge.segment(images)
    seconds = time.time() - start
    print(f"\n## Dice on {len(rows)} held-out slices ({rows.subject_id.nunique()} subjects, "
          f"{1000 * seconds / len(rows):.0f} ms per 128x128 slice on this CPU)")
    print("| contrast | " + " | ".join(FRACTIONS) + " | slices |")
    print("|---" * (len(FRACTIONS) + 2) + "|")
    for contrast in [*sorted(rows.modality.unique()), "all"]:
        keep = np.ones(len(rows), bool) if contrast == "all" else (rows.modality == contrast).to_numpy()
        p, t = predicted[keep], truth[keep]
        scores = []
        for name in FRACTIONS:
            c = CLASSES.index(name)
            inter, total = np.sum((p == c) & (t == c)), np.sum(p == c) + np.sum(t == c)
            scores.append(f"{2 * inter / total:.3f}" if total else "-")
        print(f"| {contrast} | " + " | ".join(scores) + f" | {int(keep.sum())} |")
    true_vent, judged = label_fractions(truth)["ventricles"], label_fractions(predicted)["ventricles"]
    shown = (true_vent > 0) | (judged > 0)
    print(f"\nventricle fraction per slice (slices showing ventricles, true or judged: {int(shown.sum())}): "
          f"Pearson r {np.corrcoef(true_vent[shown], judged[shown])[0, 1]:.3f}, "
          f"mean |error| {np.nanmean(np.abs(true_vent - judged)[shown]):.4f} "
          f"(true mean {np.nanmean(true_vent[shown]):.4f})")
    for contrast in sorted(rows.modality.unique()):
        k = shown & (rows.modality == contrast).to_numpy()
        print(f"  {contrast}: r {np.corrcoef(true_vent[k], judged[k])[0, 1]:.3f}")


def _ratio_85_20(age: np.ndarray, fraction: np.ndarray) -> tuple[float, float]:
    """(85/20 ratio of a log-linear fit, Spearman rho of fraction with age)."""
    from scipy.stats import spearmanr

    slope = np.polyfit(age, np.log(np.maximum(fraction, 1e-4)), 1)[0]
    return float(np.exp(slope * (85 - 20))), float(spearmanr(age, fraction).statistic)


def ageing_table(judge, data: Path) -> None:
    rows = labelled_rows(data, ("train", "val", "test"))
    rows = rows[(rows.orientation == "axial") & (rows.landmark == LEVEL)].reset_index(drop=True)
    images, truth = load_pairs(data, rows)
    rows = rows.assign(true=label_fractions(truth)["ventricles"], judged=judge.fractions(images)["ventricles"])
    print(f"\n## Ventricle fraction of axial slices {LEVEL} against age ({len(rows)} slices, "
          f"{rows.subject_id.nunique()} subjects, ages {rows.age.min():.0f}-{rows.age.max():.0f})")
    print("| subjects | contrast | true 85/20 | judged 85/20 | true rho(age) | judged rho(age) | r(true, judged) |")
    print("|---|---|---|---|---|---|---|")
    for who, splits in (("all", ("train", "val", "test")), ("held-out", HELD_OUT)):
        for contrast in [*sorted(rows.modality.unique()), "all"]:
            part = rows[rows.split.isin(splits) & ((rows.modality == contrast) | (contrast == "all"))]
            per_subject = part.groupby("subject_id")[["age", "true", "judged"]].mean()
            (tr, trho), (jr, jrho) = (_ratio_85_20(per_subject.age.to_numpy(), per_subject[k].to_numpy())
                                      for k in ("true", "judged"))
            r = np.corrcoef(per_subject.true, per_subject.judged)[0, 1]
            print(f"| {who} ({len(per_subject)}) | {contrast} | {tr:.2f} | {jr:.2f} | {trho:.2f} | {jrho:.2f} | "
                  f"{r:.3f} |")


def age_table(data: Path, weights: Path | None, age_folder: Path | None, max_others: int) -> None:
    import pandas as pd

    from dallebrain.data.slicing import load_png
    from dallebrain.judges.age import load_age_judge

    judge = load_age_judge(age_folder, weights)
    table = pd.read_parquet(data / "metadata.parquet")
    held_out = table[table.split.isin(HELD_OUT)]
    target = held_out[(held_out.orientation == "axial") & (held_out.landmark == LEVEL)]
    others = held_out.drop(target.index)  # every slice of the target band, a random sample of the rest
    rows = pd.concat([target, others.sample(min(max_others, len(others)), random_state=0)]).reset_index(drop=True)
    images = np.stack([load_png(data / p) for p in rows.image_path])
    rows = rows.assign(predicted=judge.predict(images, rows.orientation.to_numpy(), rows.slice_mm.to_numpy()))
    rows = rows[np.isfinite(rows.predicted)]
    mean_age = judge.model["training"]["train_mean_age"]
    rows = rows.assign(error=(rows.predicted - rows.age).abs(), chance=(mean_age - rows.age).abs(),
                       band=(np.floor(rows.slice_mm / 30) * 30).astype(int))
    print(f"\n## Age judge on {len(rows)} held-out slices ({rows.subject_id.nunique()} subjects, ages "
          f"{rows.age.min():.0f}-{rows.age.max():.0f}); chance = the train mean age {mean_age:.1f}")
    print("| plane | level band (mm) | slices | MAE (years) | chance MAE | per-subject MAE |")
    print("|---|---|---|---|---|---|")

    def line(plane: str, band: str, part) -> None:
        subject = part.groupby("subject_id")[["predicted", "age"]].mean()
        print(f"| {plane} | {band} | {len(part)} | {part.error.mean():.1f} | {part.chance.mean():.1f} | "
              f"{(subject.predicted - subject.age).abs().mean():.1f} |")

    for plane, per_plane in rows.groupby("orientation"):
        for band, part in per_plane.groupby("band"):
            line(plane, f"{band:+d}..{band + 30:+d}", part)
        line(plane, "all", per_plane)
    target = rows[(rows.orientation == "axial") & (rows.landmark == LEVEL)]  # the issue's <= 8 years
    line("axial", LEVEL.removeprefix("at the level of "), target)
    for contrast, part in target.groupby("modality"):
        line("axial", f"lateral ventricles, {contrast}", part)


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="Prepared simulated cohort with label_path.")
    parser.add_argument("--weights", type=Path, default=None, help="judge train folder (default: shipped).")
    parser.add_argument("--age", type=Path, default=None, help="judge fit-age folder (default: shipped).")
    parser.add_argument("--max-slices", type=int, default=1200, help="Held-out slices for the Dice table.")
    parser.add_argument("--age-slices", type=int, default=1500, help="Held-out slices outside the target band.")
    parser.add_argument("--only", choices=("tissue", "age"), default=None, help="Run one half.")
    args = parser.parse_args()
    check_prepared("data", args.data)  # the paths and numbers before minutes of segmenting
    for option, path in (("weights", args.weights), ("age", args.age)):
        if path is not None and not path.exists():
            raise SystemExit(f"error: --{option} {path} is not there")
    check_at_least(1, max_slices=args.max_slices, age_slices=args.age_slices)
    if args.only != "age":
        judge = load_tissue_judge(args.weights)
        print(f"tissue judge: {judge.net.config.training}")
        dice_table(judge, args.data, labelled_rows(args.data, HELD_OUT, args.max_slices, seed=0))
        ageing_table(judge, args.data)
    if args.only != "tissue":
        age_table(args.data, args.weights, args.age, args.age_slices)


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
