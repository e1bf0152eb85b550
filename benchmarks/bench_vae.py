"""VAE benchmark (issue 12, "a sharper VAE"): held-out real slices through each VAE (encode to the posterior mean,
decode), per contrast: sharpness of the reconstruction over the real slice's (evaluation/sharpness.py, the
`evaluate` report's measure; target >= 0.9), PSNR and SSIM inside the brain; then the grey-level and GLCM texture
distances to the real slices (`evaluate`'s measures) and the outline's spill: the reconstruction's mean in the
one-pixel ring just outside the real brain, which is 0 in a skull-stripped slice (a smeared outline is what most
of T2w's and PDw's GLCM distance is). Prints two tables, asserts nothing.
Faster than `dallebrain evaluate` (no sampling) when comparing decoders, e.g. before and after sharpening.

  OMP_NUM_THREADS=1 python benchmarks/bench_vae.py --data PREPARED VAE [VAE ...] [--n 256] [--split test]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _bench import check_at_least, check_holds, check_prepared  # benchmarks/_bench.py, beside this script

from dallebrain.cli._common import OneLineParser
from dallebrain.evaluation.reconstruction import reconstruct
from dallebrain.evaluation.sharpness import sharpness


def held_out(data: Path, split: str, n: int, seed: int = 0):
    """n slices of the split, the same number per contrast (a seeded draw), with their contrasts."""
    import pandas as pd

    from dallebrain.data.slicing import load_png

    if not (data / "metadata.parquet").is_file():
        raise SystemExit(f"error: {data} is not a prepared data set (no metadata.parquet)")
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


def outline_spill(real: np.ndarray, recon: np.ndarray) -> float:
    """Mean reconstruction in the one-pixel ring outside each real slice's brain (nonzero pixels); real: 0."""
    from scipy import ndimage

    values = []
    for a, b in zip(real, recon, strict=True):
        brain = a > 0
        ring = ndimage.binary_dilation(brain) & ~brain
        if ring.any():
            values.append(float(b[ring].mean()))
    return float(np.mean(values)) if values else float("nan")


def texture_row(name, images, recon, contrast, contrasts, real_glcm) -> str:
    """Grey levels (W1, JS) and GLCM Frechet distance, pooled and per contrast, and the outline spill."""
    from dallebrain.evaluation import metrics as M

    grey = M.histogram_distances(images, recon)
    glcm = M.glcm_features(recon)
    per = [M.standardised_frechet(real_glcm[contrast == c], glcm[contrast == c]) for c in contrasts]
    return (f"| {name} | {grey['wasserstein1']:.4f} | {grey['jensen_shannon']:.4f} | "
            f"{M.standardised_frechet(real_glcm, glcm):.2f} | " + " | ".join(f"{v:.1f}" for v in per)
            + f" | {outline_spill(images, recon):.3f} |")


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("vaes", nargs="+", type=Path, help="VAE folders (or pipeline folders holding vae/)")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=256)
    args = parser.parse_args()
    check_prepared("data", args.data)  # every VAE before the first one's reconstructions
    for vae in args.vaes:
        check_holds("VAE", vae, "config.json", "a VAE folder")
    check_at_least(1, n=args.n)
    from dallebrain.models.vae import load_vae

    images, contrast = held_out(args.data, args.split, args.n)
    real_sharp = sharpness(images)
    contrasts = list(dict.fromkeys(contrast.tolist()))
    print(f"{len(images)} {args.split} slices of {args.data}; sharpness = reconstruction / real (target >= 0.9)\n")
    print("| VAE | " + " | ".join(f"{c} sharpness" for c in contrasts) + " | PSNR brain (dB) | SSIM brain |")
    print("|---|" + "---|" * (len(contrasts) + 2))
    textures = []
    for folder in args.vaes:
        recon = reconstruct(load_vae(folder).eval(), images)
        textures.append((folder, recon))
        sharp = sharpness(recon)
        ratios = []
        for c in contrasts:
            rows = (contrast == c) & np.isfinite(sharp) & np.isfinite(real_sharp)
            ratios.append(sharp[rows].mean() / real_sharp[rows].mean())
        psnr, ssim = brain_scores(images, recon)
        print(f"| {folder} | " + " | ".join(f"{r:.3f}" for r in ratios) + f" | {psnr:.2f} | {ssim:.3f} |",
              flush=True)
    from dallebrain.evaluation import metrics as M

    real_glcm = M.glcm_features(images)
    print("\n| VAE | grey W1 | grey JS (bits) | GLCM Frechet | " + " | ".join(f"{c} GLCM" for c in contrasts)
          + " | outline spill |")
    print("|---|" + "---|" * (len(contrasts) + 4))
    for folder, recon in textures:
        print(texture_row(folder, images, recon, contrast, contrasts, real_glcm), flush=True)


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
