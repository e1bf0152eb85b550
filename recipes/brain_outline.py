"""The recipe of the shipped brain-outline head: the VAE decoder's halo around the brain removed where that brings the
generated slices' texture closer to real (models/brain_outline.py says why and how).

    python recipes/brain_outline.py --work /path/to/cache/outline --data PREPARED [--slices 6000] [--steps 3000]
        [--n 256] [--route ldm|unclip] [--install]

1. Reconstructs --slices train slices (as many of each contrast) through the model's VAE (posterior mean), kept in
   --work/reconstructions.npz, and trains the head on them against their own brain masks (real > 0); 10 % of them
   held back give the halo removed and the brain pixels cut per contrast.
2. Samples the --route (grey-level maps and trimming off) for --n train captions, one slice each (caption i with
   seed SEED_BASE + i, kept in --work/samples_ROUTE.npz), and per contrast compares the GLCM Frechet distance to the
   captions' own real slices with and without the trim, both through the route's grey-level map as the pipeline
   does; the trim is kept for the contrasts where it lowers that distance by more than MARGIN.
3. Writes the head into a copy of the model (vae/brain_outline.safetensors), the choice and the measurements into
   its dallebrain.json (the route's sampling section: "sampling" -> "brain_outline" for the LDM, "unclip" ->
   "sampling" -> "brain_outline" for the unCLIP route; the other route's choice is kept), the fp16 release in
   --work/release, and with --install the package's default.

The head belongs to the VAE's decoder, which both routes share: where the base already has one (the LDM's choice was
made first), --route unclip measures that head rather than training another, so the LDM's trim is unchanged.
A route whose contrasts are all helped by less than MARGIN gets no record; the head goes when no route keeps one.
Refit the route's grey-level curves after (recipes/grey_level_map.py): they were fitted on untrimmed slices.

Nothing of the held-out splits is read, so `dallebrain evaluate` measures the choice on slices it never saw.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from dallebrain.cli._common import OneLineParser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
from grey_level_map import SEED_BASE, raw_samples, train_rows  # noqa: E402
from shipped_model import SHIPPED, check_prepared, check_work, model_with_parts, release_recipe  # noqa: E402

SLICES = 6000  # train slices reconstructed: 1500 per contrast of a four-contrast cohort
N = 256  # train captions sampled to choose the contrasts: about 64 per contrast
MARGIN = 0.10  # a contrast keeps the trim where its texture distance falls by more than this share
HELD_BACK = 0.1


def reconstructions(model: Path, data: Path, slices: int, work: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(real, reconstructed, contrast) of `slices` train slices, as many of each contrast (seeded), through the
    model's VAE; from work/reconstructions.npz when it holds these slices."""
    import pandas as pd
    import torch

    from dallebrain.data.io import atomic_path
    from dallebrain.evaluation.features import load_slices
    from dallebrain.evaluation.reconstruction import reconstruct
    from dallebrain.models.vae import load_vae

    table = pd.read_parquet(data / "metadata.parquet")
    train = table[table["split"] == "train"]
    contrasts = sorted(train["modality"].unique())
    per = slices // len(contrasts)
    picked = pd.concat([train[train["modality"] == c].sample(min(per, int((train["modality"] == c).sum())),
                                                             random_state=0) for c in contrasts])
    paths = picked["image_path"].tolist()
    from dallebrain.pipelines.folder import folder_hash

    cached = work / "reconstructions.npz"
    vae_hash = folder_hash(model / "vae")  # another --base's decoder: its own reconstructions
    if cached.is_file():
        with np.load(cached) as saved:
            if saved["paths"].tolist() == paths and "vae" in saved and str(saved["vae"]) == vae_hash:
                return (saved["real"].astype(np.float32), saved["rec"].astype(np.float32),
                        saved["modality"].astype(str))
    real = load_slices(data, picked["image_path"])
    print(f"reconstructing {len(real)} train slices through {model / 'vae'}", flush=True)
    with torch.inference_mode():
        rec = reconstruct(load_vae(model / "vae").eval(), real)
    modality = picked["modality"].to_numpy().astype(str)
    with atomic_path(cached) as tmp:
        np.savez_compressed(tmp, real=real.astype(np.float16), rec=rec.astype(np.float16), modality=modality,
                            paths=np.array(paths), vae=np.array(vae_hash))
    return real, rec, modality


def texture_by_contrast(real: np.ndarray, sets: dict[str, np.ndarray], modality: np.ndarray) -> dict:
    """{contrast: {set: GLCM Frechet distance to the real slices of that contrast}}, as `evaluate` computes it."""
    from dallebrain.evaluation import metrics as M

    real_glcm = M.glcm_features(real)
    glcm = {name: M.glcm_features(x) for name, x in sets.items()}
    return {str(c): {name: round(M.standardised_frechet(real_glcm[modality == c], g[modality == c]), 4)
                     for name, g in glcm.items()}
            for c in sorted(set(modality)) if (modality == c).sum() >= 2}


def main(argv: list[str] | None = None) -> Path:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="working folder (caches, model, release)")
    parser.add_argument("--base", type=Path, default=SHIPPED, help="the model whose decoder's halo is learned")
    parser.add_argument("--data", type=Path, required=True, help="the prepared set the model was trained on")
    parser.add_argument("--slices", type=int, default=SLICES, help="train slices reconstructed for the head")
    parser.add_argument("--steps", type=int, default=3000, help="the head's training steps")
    parser.add_argument("--n", type=int, default=N, help="train captions sampled to choose the contrasts")
    parser.add_argument("--route", choices=("ldm", "unclip"), default="ldm", help="the route whose choice is measured")
    parser.add_argument("--install", action="store_true", help="copy the result into the package as the default")
    args = parser.parse_args(argv)
    check_work(args.work)
    check_prepared(args.data)
    if not (args.base / "dallebrain.json").is_file():
        raise SystemExit(f"error: {args.base} is not a pipeline folder (no dallebrain.json)")
    for name, value, low in (("--slices", args.slices, 20), ("--steps", args.steps, 1), ("--n", args.n, 8)):
        if value < low:
            raise SystemExit(f"error: {name} must be at least {low}, got {value}")
    if args.route == "unclip" and not (args.base / "decoder").is_dir():
        raise SystemExit(f"error: {args.base} has no unCLIP decoder (decoder/): use --route ldm")
    from dallebrain.evaluation.features import load_slices
    from dallebrain.models import brain_outline as B
    from dallebrain.pipelines.grey_levels import grey_level_map_of, route_sampling

    args.work.mkdir(parents=True, exist_ok=True)
    real, rec, modality = reconstructions(args.base, args.data, args.slices, args.work)
    order = np.random.default_rng(0).permutation(len(real))
    held = order[:max(1, int(len(real) * HELD_BACK))]
    fit = order[len(held):]
    shared = args.base / "vae" / B.FILENAME
    reused = args.route == "unclip" and shared.is_file()
    if reused:  # the VAE's head, as the LDM's choice was measured with
        print(f"measuring the base's head ({shared})", flush=True)
        head = B.load_brain_outline(shared)
    else:
        head = B.fit_brain_outline(rec[fit], real[fit], steps=args.steps)
    errors = {str(c): {k: round(v, 3) for k, v in B.outline_errors(head, rec[held][modality[held] == c],
                                                                   real[held][modality[held] == c]).items()}
              for c in sorted(set(modality[held]))}
    print("held-back reconstructions:", json.dumps(errors), flush=True)

    rows = train_rows(args.data, args.n)
    seeds = [SEED_BASE + i for i in range(len(rows))]
    raw = raw_samples(args.base, args.route, rows["caption"].tolist(), seeds, args.work / f"samples_{args.route}.npz",
                      trim_outline=False)
    info = json.loads((args.base / "dallebrain.json").read_text())
    gmap = grey_level_map_of(route_sampling(info, args.route))
    contrasts, planes = rows["modality"].to_numpy().astype(str), rows["orientation"].to_numpy().astype(str)

    def mapped(images: np.ndarray) -> np.ndarray:  # as the pipeline finishes them: the grey-level map last
        if gmap is None:
            return images
        return np.stack([gmap.apply(x[None], c, p)[0][0] for x, c, p in zip(images, contrasts, planes, strict=True)])

    texture = texture_by_contrast(load_slices(args.data, rows["image_path"]),
                                  {"as decoded": mapped(raw), "trimmed": mapped(head.trim(raw))}, contrasts)
    chosen = [c for c, d in texture.items() if d["trimmed"] < (1 - MARGIN) * d["as decoded"]]
    print("train captions, GLCM Frechet distance per contrast:", json.dumps(texture), flush=True)
    print(f"{args.route}: trimmed: {', '.join(chosen) or 'no contrast'}", flush=True)

    model = model_with_parts(args.base, args.work, {})
    if not reused:  # a reused head is the copy's own file already
        head.save(model / "vae" / B.FILENAME)
    measured = {"held_back_reconstructions": errors, "train_captions_glcm_frechet": texture, "margin": MARGIN,
                "slices": int(len(fit)), "steps": args.steps, "captions": int(len(rows)),
                "command": f"python recipes/brain_outline.py --data PREPARED --slices {args.slices} "
                           f"--steps {args.steps} --n {args.n}" + (" --route unclip" if args.route == "unclip" else "")}
    if reused:
        measured["head"] = "the base's (trained for the LDM's choice)"
    write_choice(model, args.route, B.record(chosen, measured) if chosen else None)
    return release_recipe(model, args.work, args.steps, [json.dumps(measured)], args.install)


def write_choice(model: Path, route: str, entry: dict | None) -> None:
    """Set (or, for None, remove) the route's brain_outline record in the model's dallebrain.json; the other route's
    stays. The head file goes when no route keeps a record (a head that trims nothing is not shipped)."""
    from dallebrain.data.io import write_json_atomic
    from dallebrain.models import brain_outline as B
    from dallebrain.pipelines.grey_levels import route_sampling

    path = model / "dallebrain.json"
    info = json.loads(path.read_text())
    section = info.setdefault("sampling", {}) if route == "ldm" else \
        info.setdefault("unclip", {}).setdefault("sampling", {})
    section.pop(B.INFO_KEY, None)
    if entry is not None:
        section[B.INFO_KEY] = entry
    write_json_atomic(path, info)
    if not any(B.INFO_KEY in route_sampling(info, r) for r in ("ldm", "unclip")):
        B.drop_brain_outline(model)


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
