"""The signal leak at the first sampling step (pipelines/signal_leak.py): sampling from pure noise against
sampling from the noised mean of the training latents, on the same held-out captions and seeds.

    python benchmarks/bench_signal_leak.py --data PREPARED [--model PIPELINE] [--n 64] [--train-slices 4096] [--write]

Measures the per-channel mean of the model VAE's latents over --train-slices random train-split slices, then
generates one image per caption of --n random held-out slices (seed i for caption i, the model's default
sampling) both ways and prints, beside the real slices: the background (mean of the four 8x8 corners), the level
judge's error against the level the caption asked (mm; sagittal as |x|) and the brain area (pixels > 0.05) over
the real slice's. --write records the measured mean in the model's dallebrain.json ("sampling": "latent_mean"),
which is how the shipped model got it (`dallebrain train ldm` records it itself).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def corners(images: np.ndarray) -> np.ndarray:
    c = [images[:, :8, :8], images[:, :8, -8:], images[:, -8:, :8], images[:, -8:, -8:]]
    return np.concatenate([x.reshape(len(images), -1) for x in c], axis=1).mean(axis=1)


def record_latent_mean(model: Path, mean: list[float]) -> None:
    """Write the mean into the model's dallebrain.json; a release folder (the shipped one) also gets its
    SHA256SUMS.json entry renewed and keeps no lock file behind (it must hold weights and configs only)."""
    import hashlib
    import json

    from dallebrain.data.io import write_json_atomic
    from dallebrain.pipelines.export import update_model_info

    update_model_info(model, {"sampling": {"latent_mean": [round(m, 4) for m in mean]}})
    (model / ".dallebrain.json.lock").unlink(missing_ok=True)  # one writer here: nothing races for it
    sums_path = model / "SHA256SUMS.json"
    if sums_path.is_file():
        sums = json.loads(sums_path.read_text())
        sums["dallebrain.json"] = hashlib.sha256((model / "dallebrain.json").read_bytes()).hexdigest()
        write_json_atomic(sums_path, sums)


def main(argv: list[str] | None = None) -> dict:
    import pandas as pd
    import torch

    from dallebrain.api import default_model, load_pipeline
    from dallebrain.data.slicing import load_png
    from dallebrain.judges.level import estimate_levels
    from dallebrain.models.vae import encode_images
    from dallebrain.pipelines.signal_leak import training_latent_mean

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared data set (its train and test splits)")
    parser.add_argument("--model", type=Path, default=None, help="pipeline folder (default: the shipped model)")
    parser.add_argument("--n", type=int, default=64, help="held-out captions (one image each, per setting)")
    parser.add_argument("--train-slices", type=int, default=4096, help="train slices the latent mean is taken over")
    parser.add_argument("--write", action="store_true", help="record the measured mean in the model's dallebrain.json")
    args = parser.parse_args(argv)
    if not (args.data / "metadata.parquet").is_file():
        parser.exit(2, f"error: no metadata.parquet in {args.data}: pass a `dallebrain data prepare` folder\n")
    if args.n < 1 or args.train_slices < 1:
        parser.exit(2, "error: --n and --train-slices must be at least 1\n")
    model = args.model or default_model()
    table = pd.read_parquet(args.data / "metadata.parquet")
    train = table[table.split == "train"].sample(min(args.train_slices, (table.split == "train").sum()), random_state=0)
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
    mean = training_latent_mean(latents)
    # its precision: the spread of per-slice means over sqrt(slices)
    sem = (latents.double().mean(dim=(2, 3)).std(dim=0) / len(latents) ** 0.5).tolist()
    print(f"latent mean over {len(train)} train slices ({time.perf_counter() - start:.0f} s): "
          + ", ".join(f"{m:+.3f} (+-{s:.3f})" for m, s in zip(mean, sem, strict=True)))

    real = np.stack([load_png(args.data / p) for p in test.image_path])
    prompts, seeds = test.caption.tolist(), list(range(len(test)))
    orientations = test.orientation.tolist()
    asked = test.slice_mm.to_numpy(float)
    asked = np.where(test.orientation.to_numpy() == "sagittal", np.abs(asked), asked)
    area_real = (real > 0.05).sum(axis=(1, 2))
    rows = {"real held-out slices": real}
    for name, value in (("pure noise (before)", None), ("signal leak (now)", torch.tensor(mean))):
        pipe.latent_mean = value
        tick = time.perf_counter()
        rows[name] = pipe.sample(prompts, seeds)
        print(f"{name}: {time.perf_counter() - tick:.0f} s", flush=True)
    print(f"\nmodel {model.name if args.model else 'shipped'}, {len(test)} held-out captions of {args.data.name}, "
          "seed i for caption i, default sampling")
    print("| start | background (corners) | level error, mean / median mm | > 25 mm off | brain area / real |")
    print("|---|---|---|---|---|")
    out = {"latent_mean": mean}
    for name, images in rows.items():
        error = np.abs(estimate_levels(images, orientations) - asked)
        area = float(np.median((images > 0.05).sum(axis=(1, 2)) / np.maximum(area_real, 1)))
        out[name] = {"background": float(corners(images).mean()), "level_mae_mm": float(error.mean()),
                     "level_median_mm": float(np.median(error)), "off_25mm": int((error > 25).sum()), "area": area}
        print(f"| {name} | {out[name]['background']:.3f} | {error.mean():.1f} / {np.median(error):.1f} | "
              f"{(error > 25).sum()}/{len(error)} | {area:.2f} |")
    if args.write:
        record_latent_mean(model, mean)
        print(f"recorded sampling.latent_mean in {model / 'dallebrain.json'}")
    return out


if __name__ == "__main__":
    main()
