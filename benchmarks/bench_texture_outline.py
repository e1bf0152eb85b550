"""Where a model's texture gap sits: per contrast, the GLCM distance to the real held-out slices of the floor (matched
real train slices), the VAE's reconstruction and the generated slices, as `dallebrain evaluate` computes it, then
again with every slice's own outer rim removed (its > 0.05 mask, holes filled, eroded --rim px, set to background).

Why: the decoder smears the brain's outline into the background, which the GLCM reads as huge contrast; that made
the reconstruction of T2w and PDw slices look as far from real texture as the generated ones (BENCHMARKS.md, "Where
the texture gap sits"). Without the rim the two are told apart: what remains of the generated slices' distance is
the diffusion model's own texture. Reads an `evaluate` report folder (its samples_ldm.npz or samples_unclip.npz and
samples_reconstruction.npz, and the held-out draw recorded in metrics.json); no sampling. Prints a table, asserts
nothing. With --head, the table is instead each set as decoded against trimmed by a brain-outline head
(models/brain_outline.py), every contrast: what recipes/brain_outline.py chooses from, on held-out slices.

  python benchmarks/bench_texture_outline.py --report EVAL_OUT --data PREPARED [--route ldm] [--rim 2]
      [--head MODEL/vae/brain_outline.safetensors [--curves OLD/dallebrain.json]]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dallebrain.cli._common import OneLineParser

CONTRASTS = ("T1w", "T2w", "PDw", "FLAIR")
SETS = ("floor", "reconstruction", "synthetic")


def without_rim(images: np.ndarray, px: int, threshold: float) -> np.ndarray:
    """Copies of the slices with each one's outer `px` pixels of brain (pixels > threshold, holes filled) set to 0."""
    from scipy import ndimage

    out = np.array(images, dtype=np.float32, copy=True)
    if px <= 0:
        return out
    for image in out:
        brain = ndimage.binary_fill_holes(image > threshold)
        image[~ndimage.binary_erosion(brain, iterations=px)] = 0.0
    return out


def texture_rows(real: np.ndarray, sets: dict[str, np.ndarray], modality: np.ndarray, px: int) -> dict:
    """{contrast: {set: GLCM Frechet distance to the real slices of that contrast}} after removing a `px` rim."""
    from dallebrain.evaluation import metrics as M

    real_glcm = M.glcm_features(without_rim(real, px, M.BRAIN_THRESHOLD))
    glcm = {name: M.glcm_features(without_rim(x, px, M.BRAIN_THRESHOLD)) for name, x in sets.items()}
    return {c: {name: M.standardised_frechet(real_glcm[modality == c], g[modality == c]) for name, g in glcm.items()}
            for c in CONTRASTS if (modality == c).sum() >= 2}


def load_report(report: Path, data: Path, route: str):
    """(real held-out slices, {set: slices}, contrasts) of an evaluate report, the real draw rebuilt from its
    settings; SystemExit (one line) when the folder cannot serve."""
    import pandas as pd

    from dallebrain.evaluation import features as Fe
    from dallebrain.evaluation.reference import match_train, sample_heldout

    needed = [report / "metrics.json", report / f"samples_{route}.npz", report / "samples_reconstruction.npz"]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise SystemExit(f"error: {report} is not an evaluate report of the {route} route with its reconstruction "
                         f"column (missing {', '.join(missing)})")
    if not (data / "metadata.parquet").is_file():
        raise SystemExit(f"error: {data} is not a prepared data set (no metadata.parquet)")
    settings = json.loads(needed[0].read_text())["settings"]
    table = pd.read_parquet(data / "metadata.parquet")
    train = table[table["split"] == "train"].reset_index(drop=True)
    heldout = sample_heldout(table, settings["split"], settings["n"], settings["seed"], [])
    synthetic = np.load(needed[1])["images"].astype(np.float32)
    reconstruction = np.load(needed[2])["images"].astype(np.float32)
    if not len(heldout) == len(synthetic) == len(reconstruction):
        raise SystemExit(f"error: {report} holds {len(synthetic)} slices, its settings draw {len(heldout)} from {data}:"
                         " pass the data set it was evaluated on")
    real = Fe.load_slices(data, heldout["image_path"])
    floor = Fe.load_slices(data, train.loc[match_train(train, heldout, settings["seed"]), "image_path"])
    sets = {"floor": floor, "reconstruction": reconstruction, "synthetic": synthetic}
    return real, sets, heldout["modality"].to_numpy()


def trimmed_table(args, real: np.ndarray, sets: dict[str, np.ndarray], modality: np.ndarray) -> dict:
    """Per contrast, each set's GLCM distance as decoded and with every slice trimmed by --head (the generated ones
    through the inverse of their grey-level curve first, then the curve again)."""
    import pandas as pd

    from dallebrain.evaluation.reference import sample_heldout
    from dallebrain.models.brain_outline import BrainOutlineError, load_brain_outline
    from dallebrain.pipelines.grey_levels import grey_level_map_of, remap

    try:
        head = load_brain_outline(args.head)
    except BrainOutlineError as exc:
        raise SystemExit(f"error: {exc}") from None
    settings = json.loads((args.report / "metrics.json").read_text())["settings"]
    curves_file = args.curves or Path(settings["model"]) / "dallebrain.json"
    if not curves_file.is_file():
        raise SystemExit(f"error: no dallebrain.json at {curves_file}: pass --curves")
    info = json.loads(curves_file.read_text())
    sampling = info.get("sampling") if args.route == "ldm" else (info.get("unclip") or {}).get("sampling")
    curves = grey_level_map_of(sampling or {})
    heldout = sample_heldout(pd.read_parquet(args.data / "metadata.parquet"), settings["split"], settings["n"],
                             settings["seed"], [])
    found = [curves.curve_for(c, p) if curves else None
             for c, p in zip(modality, heldout["orientation"].astype(str), strict=True)]

    def through(images: np.ndarray, back: bool) -> np.ndarray:
        out = np.array(images, dtype=np.float32, copy=True)
        for i, f in enumerate(found):
            if f is not None:
                source, target = f[1]
                out[i] = remap(out[i][None], target, source)[0] if back else remap(out[i][None], source, target)[0]
        return out

    trimmed = {"floor": sets["floor"], "reconstruction": head.trim(sets["reconstruction"]),
               "synthetic": through(head.trim(through(sets["synthetic"], back=True)), back=False)}
    as_decoded, cut = texture_rows(real, sets, modality, 0), texture_rows(real, trimmed, modality, 0)
    print(f"GLCM Frechet distance to the real held-out slices per contrast ({args.report}, route {args.route}), "
          f"as decoded / trimmed by {args.head}:")
    print("| contrast | reconstruction | synthetic |\n|---|---|---|")
    for c in as_decoded:
        print(f"| {c} | " + " | ".join(f"{as_decoded[c][s]:.2f} / {cut[c][s]:.2f}"
                                       for s in ("reconstruction", "synthetic")) + " |")
    return {"as decoded": as_decoded, "trimmed": cut}


def main(argv: list[str] | None = None) -> dict:
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", type=Path, required=True, help="a `dallebrain evaluate` --out folder")
    parser.add_argument("--data", type=Path, required=True, help="the prepared set it was evaluated on")
    parser.add_argument("--route", choices=("ldm", "unclip"), default="ldm")
    parser.add_argument("--rim", type=int, default=2, help="pixels of each slice's outline removed (>= 1)")
    parser.add_argument("--head", type=Path, default=None,
                        help="a brain-outline head (a model's vae/brain_outline.safetensors): instead, every set as "
                             "decoded against trimmed by it, every contrast (the report's slices must be untrimmed)")
    parser.add_argument("--curves", type=Path, default=None,
                        help="with --head: the dallebrain.json whose grey-level curves made the report's slices "
                             "(default: the report's model's); the synthetic slices are taken back through them, "
                             "trimmed, and mapped again, as the pipeline trims before its curves")
    args = parser.parse_args(argv)
    for option, path in (("head", args.head), ("curves", args.curves)):  # before the report's slices load
        if path is not None and not path.exists():
            raise SystemExit(f"error: --{option} {path} is not there")
    if args.rim < 1:
        raise SystemExit(f"error: --rim must be at least 1, got {args.rim}")
    real, sets, modality = load_report(args.report, args.data, args.route)
    if args.head is not None:
        return trimmed_table(args, real, sets, modality)
    out = {f"rim {px}": texture_rows(real, sets, modality, px) for px in (0, args.rim)}
    print(f"GLCM Frechet distance to the real held-out slices per contrast ({args.report}, route {args.route}):")
    print("| contrast | " + " | ".join(f"{s}, whole / rim {args.rim} px removed" for s in SETS) + " |")
    print("|---|" + "---|" * len(SETS))
    whole, rimless = out["rim 0"], out[f"rim {args.rim}"]
    for c in whole:
        print(f"| {c} | " + " | ".join(f"{whole[c][s]:.2f} / {rimless[c][s]:.2f}" for s in SETS) + " |")
    return out


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
