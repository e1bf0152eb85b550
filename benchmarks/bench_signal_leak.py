"""The signal leak at the first sampling step (pipelines/signal_leak.py, pipelines/leak_table.py): sampling
from pure noise, from the noised per-channel mean of the training latents, and from the leak table's per-prompt
mean, on the same held-out captions and seeds.

    python benchmarks/bench_signal_leak.py --data PREPARED [--model PIPELINE] [--n 64] [--per-group 128]
        [--band-mm 12] [--write]

Encodes up to --per-group random train-split slices of every (plane, contrast, 12 mm level band) group with the
model's VAE, fits the leak table on them (its marginals weighted by each group's size in the whole train split)
and takes the per-channel mean over them (each group weighted the same way); then generates one image per caption
of --n random held-out slices (seed i for caption i, the model's default sampling) each way and prints, beside
the real slices: the background (mean of the four 8x8 corners), the level judge's error against the level the
caption asked (mm; sagittal as |x|) and the brain area (pixels > 0.05) over the real slice's. --write records the
channel mean in the model's dallebrain.json ("sampling": "latent_mean") and the table as its
signal_leak.safetensors, which is how the shipped model got them (`dallebrain train ldm` writes both itself).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from _bench import check_at_least  # benchmarks/_bench.py, beside this script

from dallebrain.cli._common import OneLineParser


def corners(images: np.ndarray) -> np.ndarray:
    c = [images[:, :8, :8], images[:, :8, -8:], images[:, -8:, :8], images[:, -8:, -8:]]
    return np.concatenate([x.reshape(len(images), -1) for x in c], axis=1).mean(axis=1)


def record_leak(model: Path, mean: list[float], table) -> None:
    """Write the channel mean into the model's dallebrain.json and the table beside it; a release folder (the
    shipped one) also gets its SHA256SUMS.json entries renewed and keeps no lock file behind (it must hold
    weights and configs only)."""
    import hashlib
    import json

    from dallebrain.data.io import write_json_atomic
    from dallebrain.pipelines.export import update_model_info
    from dallebrain.pipelines.leak_table import FILENAME

    table.save(model / FILENAME)
    update_model_info(model, {"sampling": {"latent_mean": [round(m, 4) for m in mean]}})
    (model / ".dallebrain.json.lock").unlink(missing_ok=True)  # one writer here: nothing races for it
    sums_path = model / "SHA256SUMS.json"
    if sums_path.is_file():
        sums = json.loads(sums_path.read_text())
        for name in ("dallebrain.json", FILENAME):
            sums[name] = hashlib.sha256((model / name).read_bytes()).hexdigest()
        write_json_atomic(sums_path, dict(sorted(sums.items())))


def stratified_train(table, per_group: int, band_mm: float):
    """Up to per_group random train slices of each (plane, contrast, level band), and each group's train size."""
    import pandas as pd

    train = table[table.split == "train"]
    keys = [train.orientation, train.modality, np.floor(train.slice_mm / band_mm).astype(int)]
    picked = pd.concat([g.sample(min(len(g), per_group), random_state=0) for _, g in train.groupby(keys)])
    sizes = train.groupby(keys).size()
    return picked.reset_index(drop=True), {(o, m, int(b)): int(n) for (o, m, b), n in sizes.items()}


def main(argv: list[str] | None = None) -> dict:
    import pandas as pd
    import torch

    from dallebrain.api import default_model, load_pipeline
    from dallebrain.data.slicing import load_png
    from dallebrain.evaluation.features import level_for_prediction
    from dallebrain.judges.level import estimate_levels
    from dallebrain.models.vae import encode_images
    from dallebrain.pipelines.leak_table import BAND_MM, fit_leak_table

    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared data set (its train and test splits)")
    parser.add_argument("--model", type=Path, default=None, help="pipeline folder (default: the shipped model)")
    parser.add_argument("--n", type=int, default=64, help="held-out captions (one image each, per setting)")
    parser.add_argument("--per-group", type=int, default=128, help="train slices encoded per (plane, contrast, "
                        "level band) group")
    parser.add_argument("--band-mm", type=float, default=None, help="level band of a group (default: the "
                        "package's, pipelines/leak_table.BAND_MM)")
    parser.add_argument("--write", action="store_true", help="record the channel mean in the model's "
                        "dallebrain.json and the table as its signal_leak.safetensors")
    args = parser.parse_args(argv)
    check_at_least(1, n=args.n, per_group=args.per_group)
    if args.write and args.model is not None and not os.access(args.model, os.W_OK):
        raise SystemExit(f"error: --write: {args.model} is not writable")
    if not (args.data / "metadata.parquet").is_file():
        parser.exit(2, f"error: no metadata.parquet in {args.data}: pass a `dallebrain data prepare` folder\n")
    if args.n < 1 or args.per_group < 1:
        parser.exit(2, "error: --n and --per-group must be at least 1\n")
    model = args.model or default_model()
    table = pd.read_parquet(args.data / "metadata.parquet")
    args.band_mm = BAND_MM if args.band_mm is None else args.band_mm
    if not 0 < args.band_mm <= 100:
        parser.exit(2, "error: --band-mm must be in (0, 100]\n")
    if not (table.split == "test").any():  # before every stratified train slice is encoded
        parser.exit(2, f"error: {args.data} has no test split to score against\n")
    train, sizes = stratified_train(table, args.per_group, args.band_mm)
    test = table[table.split == "test"].sample(min(args.n, (table.split == "test").sum()), random_state=0)
    pipe = load_pipeline(model, device="cpu")
    pipe.images_per_pass = 8

    start = time.perf_counter()
    latents = []
    with torch.no_grad():
        for i in range(0, len(train), 64):
            images = np.stack([load_png(args.data / p) for p in train.image_path.iloc[i:i + 64]])
            latents.append(encode_images(pipe.vae, torch.from_numpy(images)[:, None].float()))
    latents = torch.cat(latents)
    try:
        leak = fit_leak_table(latents, train, band_mm=args.band_mm)
    except ValueError as exc:  # too few subjects per group: raise --per-group
        parser.exit(2, f"error: {exc} (--per-group {args.per_group})\n")
    # the marginals of the whole train split: each group weighs what it holds there, not what was encoded
    leak.counts = torch.tensor([sizes[key] for key in leak.keys])
    weight = leak.counts.double() / leak.counts.sum()
    mean = (leak.mean.double().mean(dim=(2, 3)) * weight[:, None]).sum(0).tolist()
    print(f"{len(train)} train slices encoded ({time.perf_counter() - start:.0f} s), {len(leak.keys)} groups; "
          "channel mean " + ", ".join(f"{m:+.3f}" for m in mean))

    real = np.stack([load_png(args.data / p) for p in test.image_path])
    prompts, seeds = test.caption.tolist(), list(range(len(test)))
    orientations = test.orientation.tolist()
    asked = np.array([level_for_prediction(o, z) for o, z in zip(orientations, test.slice_mm, strict=True)])
    area_real = (real > 0.05).sum(axis=(1, 2))
    rows = {"real held-out slices": real}
    starts = (("pure noise", None, None), ("channel mean", torch.tensor(mean), None),
              ("leak table (now)", torch.tensor(mean), leak))
    for name, value, per_prompt in starts:
        pipe.latent_mean, pipe.leak_table = value, per_prompt
        tick = time.perf_counter()
        rows[name] = pipe.sample(prompts, seeds)
        print(f"{name}: {time.perf_counter() - tick:.0f} s", flush=True)
    print(f"\nmodel {model.name if args.model else 'shipped'}, {len(test)} held-out captions of {args.data.name}, "
          "seed i for caption i, default sampling")
    print("| start | background (corners) | level error, mean / median mm | > 25 mm off | brain area / real |")
    print("|---|---|---|---|---|")
    out = {"latent_mean": mean, "groups": len(leak.keys)}
    for name, images in rows.items():
        error = np.abs(estimate_levels(images, orientations) - asked)
        area = float(np.median((images > 0.05).sum(axis=(1, 2)) / np.maximum(area_real, 1)))
        out[name] = {"background": float(corners(images).mean()), "level_mae_mm": float(error.mean()),
                     "level_median_mm": float(np.median(error)), "off_25mm": int((error > 25).sum()), "area": area}
        print(f"| {name} | {out[name]['background']:.3f} | {error.mean():.1f} / {np.median(error):.1f} | "
              f"{(error > 25).sum()}/{len(error)} | {area:.2f} |")
    if args.write:
        record_leak(model, mean, leak)
        print(f"recorded sampling.latent_mean in {model / 'dallebrain.json'} and the table in {model}")
    return out


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
