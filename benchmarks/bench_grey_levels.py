"""Which grey-level curve: per contrast or per contrast and plane, and how many landmarks (pipelines/grey_levels.py).

    python benchmarks/bench_grey_levels.py --data PREPARED --work W --eval EVAL [--route ldm] [--n 256]

W is recipes/grey_level_map.py's working folder (its samples of train-split captions, standardisation off); EVAL
an evaluate output folder of the same data (its evaluation encoder, EVAL/encoder, is reused). The route's raw
slices for `evaluate`'s held-out captions (test split, seed 0: slice i with seed i) are sampled once into
W/heldout_ROUTE.npz (`evaluate`'s own samples_ROUTE.npz of a model without curves can be copied there: the same
captions and seeds). Each curve family is fitted on W's train samples and scored on the held-out slices as
`evaluate` scores them: Frechet distances (evaluation encoder, Brain-CLIP), grey levels, GLCM texture and
sharpness per contrast. "deciles, per plane" is what the recipe ships (checked against the package's fit).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from dallebrain.cli._common import OneLineParser

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {"127 quantiles": np.linspace(0, 1, 129)[1:-1], "deciles": None,  # None: the package's LANDMARKS
            "quartiles": np.array([0.01, 0.25, 0.5, 0.75, 0.99]), "gain and offset": "linear"}


def fit(real, synthetic, keys, inner) -> dict:
    """{key: (from, to)} per key: landmarks at `inner` quantiles plus the pinned ends, or a least-squares line."""
    from dallebrain.evaluation.metrics import brain_values
    from dallebrain.pipelines.grey_levels import BRAIN_THRESHOLD, fit_grey_level_map

    if inner is None:  # the package's own fit, per key as a "contrast" with one plane
        table = fit_grey_level_map(real, synthetic, keys, ["axial"] * len(keys))
        return {k: v["all"] for k, v in table.maps.items()}
    maps = {}
    for key in dict.fromkeys(keys.tolist()):
        r, f = brain_values(real[keys == key]), brain_values(synthetic[keys == key])
        if isinstance(inner, str):
            q = np.linspace(0.02, 0.98, 49)
            a, b = np.polyfit(np.quantile(f, q), np.quantile(r, q), 1)
            ends = np.array([BRAIN_THRESHOLD, 1.0])
            maps[key] = (ends, np.clip(a * ends + b, BRAIN_THRESHOLD, 1.0))
        else:
            q = np.concatenate([[0.0], inner, [1.0]])
            source, target = np.quantile(f, q), np.quantile(r, q)
            source[0] = target[0] = BRAIN_THRESHOLD
            source[-1] = target[-1] = 1.0
            maps[key] = (np.maximum.accumulate(source), np.maximum.accumulate(target))
    return maps


def apply(images, keys, maps) -> np.ndarray:
    from dallebrain.pipelines.grey_levels import remap

    out = np.array(images, dtype=np.float32, copy=True)
    for key, curve in maps.items():
        rows = keys == key
        if rows.any():
            out[rows] = remap(out[rows], *curve)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the prepared set (as the recipe's --data)")
    parser.add_argument("--work", type=Path, required=True, help="recipes/grey_level_map.py's --work")
    parser.add_argument("--eval", type=Path, required=True, help="an evaluate --out folder of --data (its encoder)")
    parser.add_argument("--model", type=Path, default=None, help="the model the recipe sampled (default: shipped)")
    parser.add_argument("--route", choices=("ldm", "unclip"), default="ldm")
    parser.add_argument("--n", type=int, default=256, help="held-out slices, as evaluate's --n")
    args = parser.parse_args(argv)
    train_file = args.work / f"samples_{args.route}.npz"
    for path, what in ((args.data / "metadata.parquet", "a prepared data set"), (train_file, "the recipe's samples"),
                       (args.eval / "encoder" / "config.json", "an evaluate folder with its encoder")):
        if not path.is_file():
            sys.exit(f"error: {path} is missing: need {what}")
    import pandas as pd

    from dallebrain.evaluation import columns as C
    from dallebrain.evaluation import features as Fe
    from dallebrain.evaluation import metrics as M
    from dallebrain.evaluation.reference import sample_heldout
    from dallebrain.evaluation.sharpness import sharpness, sharpness_column

    sys.path.insert(0, str(ROOT / "recipes"))
    from grey_level_map import raw_samples, train_rows

    with np.load(train_file) as saved:
        synthetic_train, n_train = saved["images"].astype(np.float32), len(saved["prompts"])
    rows = train_rows(args.data, n_train)
    real_train = Fe.load_slices(args.data, rows["image_path"])
    table = pd.read_parquet(args.data / "metadata.parquet")
    heldout = sample_heldout(table, "test", args.n, 0, [])
    real = Fe.load_slices(args.data, heldout["image_path"])
    # evaluate's slices of seed 0 (slice i with seed i), as drawn; evaluate's samples_ROUTE.npz of a model without
    # curves can be copied to W/heldout_ROUTE.npz: the same captions and seeds
    raw = raw_samples(args.model, args.route, heldout["caption"].tolist(), list(range(len(heldout))),
                      args.work / f"heldout_{args.route}.npz")
    contrast, plane = heldout["modality"].to_numpy(), heldout["orientation"].to_numpy()
    keys_train = {"per contrast": rows["modality"].to_numpy(),
                  "per plane": (rows["modality"] + " " + rows["orientation"]).to_numpy()}
    keys = {"per contrast": contrast, "per plane": np.char.add(np.char.add(contrast.astype(str), " "),
                                                               plane.astype(str))}
    encoder = Fe.TrainedEncoder.load(args.eval / "encoder")
    clip = Fe.load_brain_clip(args.model or ROOT / "src" / "dallebrain" / "weights" / "default")
    real_enc, real_glcm, real_sharp = encoder.run(real)[0], M.glcm_features(real), sharpness(real)
    real_clip = Fe.clip_image_features(clip, real) if clip is not None else None
    sets = {"as sampled": raw}
    for family, inner in FAMILIES.items():
        for how in ("per contrast", "per plane"):
            sets[f"{family}, {how}"] = apply(raw, keys[how], fit(real_train, synthetic_train, keys_train[how], inner))
    print(f"{args.route}: curves fitted on {n_train} train-split samples, scored on {len(real)} held-out slices\n")
    print("| curve | FD encoder | FD Brain-CLIP | W1 | JS | GLCM FD (T1w / T2w / PDw / FLAIR) | sharpness / real "
          "(T1w / T2w / PDw / FLAIR) |")
    print("|---|---|---|---|---|---|---|")
    order = ("T1w", "T2w", "PDw", "FLAIR")
    for name, images in sets.items():
        grey = C.grey_levels(real, images, list(contrast))["all"]
        texture = C.texture(real_glcm, M.glcm_features(images), list(contrast))
        sharp = sharpness_column(real_sharp, sharpness(images), list(contrast), list(plane))
        fd_clip = f"{M.frechet_distance(real_clip, Fe.clip_image_features(clip, images)):.4f}" if clip else "-"
        by_glcm = " / ".join(f"{texture['by_contrast'][c]['frechet']:.1f}" if c in texture["by_contrast"] else "-"
                             for c in order)
        by_sharp = " / ".join(f"{sharp['by_contrast'][c]['ratio']:.2f}" if c in sharp["by_contrast"] else "-"
                              for c in order)
        print(f"| {name} | {M.frechet_distance(real_enc, encoder.run(images)[0]):.3f} | {fd_clip} | "
              f"{grey['wasserstein1']:.4f} | {grey['jensen_shannon']:.4f} | {texture['frechet']:.2f} ({by_glcm}) | "
              f"{sharp['all']['ratio']:.2f} ({by_sharp}) |", flush=True)


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
