"""One contrast's attribute guidance scale against its realism: for each scale, a route's slices of that contrast
for `evaluate`'s held-out captions (test split, seed 0: slice i with seed i) and for recipes/grey_level_map.py's
train captions, a grey-level curve refitted on the train samples as the recipe fits it, and the held-out slices
scored as `evaluate` scores them against the real held-out slices of the contrast: Frechet distances (evaluation
encoder, Brain-CLIP), grey levels, GLCM texture, sharpness.

    python benchmarks/bench_contrast_guidance.py --data PREPARED --eval EVAL --work W [--route unclip]
        [--contrast PDw] [--scales 2,3,4.5,6] [--train 96] [--n 256] [--model MODEL]

Why: v2.6's unCLIP decoder, trained four times longer, drew PDw slices whose texture distance doubled (BENCHMARKS.md,
"The unCLIP decoder, four times longer") and bench_grey_levels.py placed the loss in the decoder's raw slices, not
the curve. PDw is the one contrast whose unCLIP attribute guidance was never measured (it takes the model's 6.0);
the others were chosen from age sweeps. A scale changes the raw slices, so each gets its own curve, fitted as the
shipped ones are. EVAL is an `evaluate` output folder of --data (its encoder, EVAL/encoder, is reused); W keeps the
samples (W/SCALE_{heldout,train}.npz), so a rerun scores without sampling. Prints a table, asserts nothing; the
age sweep of a scale is bench_age_sweep.py's (--contrasts PDw --attribute-guidance S).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from dallebrain.cli._common import OneLineParser

ROOT = Path(__file__).resolve().parents[1]
CONTRASTS = ("T1w", "T2w", "PDw", "FLAIR")


def scales_of(text: str) -> list[float]:
    """'2,3,4.5' -> [2.0, 3.0, 4.5]; a one-line SystemExit for anything else."""
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError as error:
        raise SystemExit(f"error: --scales takes comma-separated numbers ({text!r}): {error}") from None
    if not scales or not all(math.isfinite(s) and 0 <= s <= 50 for s in scales):  # the pipeline's own range
        raise SystemExit(f"error: --scales takes one or more scales in [0, 50], got {text!r}")
    return scales


def main(argv: list[str] | None = None) -> list[dict]:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the prepared set the model was trained on")
    parser.add_argument("--eval", type=Path, required=True, help="an evaluate --out folder of --data (its encoder)")
    parser.add_argument("--work", type=Path, required=True, help="folder for the samples (kept between runs)")
    parser.add_argument("--model", type=Path, default=None, help="pipeline folder (default: the shipped model)")
    parser.add_argument("--route", choices=("ldm", "unclip"), default="unclip")
    parser.add_argument("--contrast", choices=CONTRASTS, default="PDw")
    parser.add_argument("--scales", default="2,3,4.5,6", help="attribute guidance scales, comma-separated")
    parser.add_argument("--train", type=int, default=96, help="train captions of the contrast for each curve")
    parser.add_argument("--n", type=int, default=256, help="held-out slices of all contrasts, as evaluate's --n")
    args = parser.parse_args(argv)
    scales = scales_of(args.scales)
    if args.train < 16:
        raise SystemExit(f"error: --train must be at least 16, got {args.train}")
    for path, what in ((args.data / "metadata.parquet", "a prepared data set"),
                       (args.eval / "encoder" / "config.json", "an evaluate folder with its encoder")):
        if not path.is_file():
            raise SystemExit(f"error: {path} is missing: need {what}")
    import pandas as pd

    from dallebrain.evaluation import columns as C
    from dallebrain.evaluation import features as Fe
    from dallebrain.evaluation import metrics as M
    from dallebrain.evaluation.reference import sample_heldout
    from dallebrain.evaluation.sharpness import sharpness, sharpness_column
    from dallebrain.pipelines.grey_levels import fit_grey_level_map

    sys.path.insert(0, str(ROOT / "recipes"))
    from grey_level_map import SEED_BASE, N, train_rows
    from shipped_model import SHIPPED

    model = args.model or SHIPPED
    if args.route == "unclip" and not (model / "decoder").is_dir():
        raise SystemExit(f"error: {model} has no unCLIP decoder (decoder/): use --route ldm")
    table = pd.read_parquet(args.data / "metadata.parquet")
    heldout = sample_heldout(table, "test", args.n, 0, [])
    seeds_heldout = [i for i, c in enumerate(heldout["modality"]) if c == args.contrast]
    heldout = heldout.iloc[seeds_heldout].reset_index(drop=True)
    train = train_rows(args.data, N)
    train = train[train["modality"] == args.contrast].reset_index(drop=True).iloc[:args.train]
    if len(heldout) < 2 or len(train) < 2:
        raise SystemExit(f"error: {args.contrast} has {len(heldout)} held-out and {len(train)} train captions in "
                         f"{args.data}: need at least 2 of each")
    real, real_train = Fe.load_slices(args.data, heldout["image_path"]), Fe.load_slices(args.data, train["image_path"])
    planes = heldout["orientation"].tolist()
    contrast = [args.contrast] * len(heldout)
    encoder = Fe.TrainedEncoder.load(args.eval / "encoder")
    clip = Fe.load_brain_clip(model)
    real_enc, real_glcm, real_sharp = encoder.run(real)[0], M.glcm_features(real), sharpness(real)
    real_clip = Fe.clip_image_features(clip, real) if clip is not None else None

    from dallebrain.api import load_pipeline
    from dallebrain.data.io import atomic_path

    pipe = load_pipeline(model, route=args.route)
    pipe.standardise_grey_levels = False  # each scale gets its own curve, below
    args.work.mkdir(parents=True, exist_ok=True)

    def draw(scale: float, name: str, prompts: list[str], seeds: list[int]) -> np.ndarray:
        path = args.work / f"{args.route}_{args.contrast}_{scale:g}_{name}.npz"
        if path.is_file():
            with np.load(path) as saved:
                if saved["prompts"].tolist() == prompts and saved["seeds"].tolist() == seeds:
                    return saved["images"].astype(np.float32)
        pipe.attribute_guidance = scale
        images = pipe.sample(prompts, seeds, progress=True)
        with atomic_path(path) as tmp:
            np.savez_compressed(tmp, images=images.astype(np.float16), prompts=np.array(prompts),
                                seeds=np.array(seeds))
        return images

    print(f"{args.route}, {args.contrast}: {len(heldout)} held-out slices (evaluate --n {args.n}, seed 0), curves "
          f"fitted on {len(train)} train captions (seeds from {SEED_BASE})\n")
    print("| attribute guidance | FD encoder | FD Brain-CLIP | W1 | JS | GLCM FD | GLCM FD raw | sharpness / real |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for scale in scales:
        raw_train = draw(scale, "train", train["caption"].tolist(), [SEED_BASE + i for i in range(len(train))])
        raw = draw(scale, "heldout", heldout["caption"].tolist(), seeds_heldout)
        curves = fit_grey_level_map(real_train, raw_train, train["modality"], train["orientation"])
        images = np.stack([curves.apply(image[None], args.contrast, plane)[0][0]
                           for image, plane in zip(raw, planes, strict=True)])
        grey = C.grey_levels(real, images, contrast)["all"]
        glcm = C.texture(real_glcm, M.glcm_features(images), contrast)["frechet"]
        glcm_raw = C.texture(real_glcm, M.glcm_features(raw), contrast)["frechet"]
        sharp = sharpness_column(real_sharp, sharpness(images), contrast, planes)["all"]["ratio"]
        fd_clip = M.frechet_distance(real_clip, Fe.clip_image_features(clip, images)) if clip is not None else None
        row = {"scale": scale, "fd_encoder": M.frechet_distance(real_enc, encoder.run(images)[0]),
               "fd_clip": fd_clip, "w1": grey["wasserstein1"], "js": grey["jensen_shannon"], "glcm": glcm,
               "glcm_raw": glcm_raw, "sharpness": sharp}
        rows.append(row)
        clip_text = "-" if fd_clip is None else f"{fd_clip:.4f}"
        print(f"| {scale:g} | {row['fd_encoder']:.3f} | {clip_text} | {row['w1']:.4f} | {row['js']:.4f} | "
              f"{glcm:.2f} | {glcm_raw:.2f} | {sharp:.2f} |", flush=True)
    return rows


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
