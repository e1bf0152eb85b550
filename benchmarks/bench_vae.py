"""VAE benchmark (issue 12, "a sharper VAE"): held-out real slices through each VAE (encode to the posterior mean,
decode), per contrast: sharpness of the reconstruction over the real slice's (evaluation/sharpness.py, the
`evaluate` report's measure; target >= 0.9), PSNR and SSIM inside the brain. Prints a table, asserts nothing.
Faster than `dallebrain evaluate` (no sampling) when comparing decoders, e.g. before and after sharpening.

  OMP_NUM_THREADS=1 python benchmarks/bench_vae.py --data PREPARED VAE [VAE ...] [--n 256] [--split test]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dallebrain.evaluation.reconstruction import reconstruct
from dallebrain.evaluation.sharpness import sharpness


def held_out(data: Path, split: str, n: int, seed: int = 0):
    """n slices of the split, the same number per contrast (a seeded draw), with their contrasts."""
    import pandas as pd

    from dallebrain.data.slicing import load_png

    table = pd.read_parquet(data / "metadata.parquet")
    table = table[table["split"] == split]
    if table.empty:
        raise SystemExit(f"error: no {split} slices in {data}")
    per = max(1, n // table.modality.nunique())
    rows = pd.concat([g.sample(min(per, len(g)), random_state=seed) for _, g in table.groupby("modality")])
    images = np.stack([load_png(data / p) for p in rows.image_path]).astype(np.float32)
    return images, rows.modality.to_numpy()


def brain_scores(real: np.ndarray, recon: np.ndarray) -> tuple[float, float]:
    """Mean PSNR and SSIM over the brain (nonzero real pixels), as training/vae.reconstruction_metrics."""
    import torch

    from dallebrain.training.vae import reconstruction_metrics

    m = reconstruction_metrics(torch.from_numpy(real)[:, None], torch.from_numpy(recon)[:, None])
    return m["psnr_brain"], m["ssim_brain"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vaes", nargs="+", type=Path, help="VAE folders (or pipeline folders holding vae/)")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=256)
    args = parser.parse_args()
    from dallebrain.models.vae import load_vae

    images, contrast = held_out(args.data, args.split, args.n)
    real_sharp = sharpness(images)
    contrasts = list(dict.fromkeys(contrast.tolist()))
    print(f"{len(images)} {args.split} slices of {args.data}; sharpness = reconstruction / real (target >= 0.9)\n")
    print("| VAE | " + " | ".join(f"{c} sharpness" for c in contrasts) + " | PSNR brain (dB) | SSIM brain |")
    print("|---|" + "---|" * (len(contrasts) + 2))
    for folder in args.vaes:
        recon = reconstruct(load_vae(folder).eval(), images)
        sharp = sharpness(recon)
        ratios = []
        for c in contrasts:
            rows = (contrast == c) & np.isfinite(sharp) & np.isfinite(real_sharp)
            ratios.append(sharp[rows].mean() / real_sharp[rows].mean())
        psnr, ssim = brain_scores(images, recon)
        print(f"| {folder} | " + " | ".join(f"{r:.3f}" for r in ratios) + f" | {psnr:.2f} | {ssim:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
