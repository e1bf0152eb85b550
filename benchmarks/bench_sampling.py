"""Sampling speed: seconds per 128x128 image end to end, our pipeline at several samplers and step counts
vs stock `diffusers.StableDiffusionPipeline` at its defaults (50 steps, guidance 7.5) on the same weights,
in one run; plus peak memory.

    python benchmarks/bench_sampling.py [--model PIPELINE] [--n 4] [--repeats 2]

Without --model it builds a pipeline of the base sizes (configs/vae.base.json, configs/ldm.base.json) with
untrained weights: time per image does not depend on what the weights have learned (image quality does: the
Frechet distance per sampler needs a trained model, `dallebrain evaluate`).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "axial T2-weighted slice of a healthy 70-year-old woman at the level of the lateral ventricles"


def build_base_pipeline(folder: Path) -> Path:
    from dallebrain.models.text import load_text_encoder, load_tokenizer
    from dallebrain.models.unet import build_unet
    from dallebrain.models.vae import VaeConfig, build_vae
    from dallebrain.pipelines.export import write_ldm_pipeline
    from dallebrain.training.config import load_config
    from dallebrain.training.ldm import LdmTrainConfig, unet_config_of
    from dallebrain.training.vae import VaeTrainConfig

    vcfg = load_config(VaeTrainConfig, ROOT / "configs" / "vae.base.json")
    vae = build_vae(VaeConfig(block_out_channels=tuple(vcfg.block_out_channels), layers_per_block=vcfg.layers_per_block,
                              sample_size=128))
    lcfg = load_config(LdmTrainConfig, ROOT / "configs" / "ldm.base.json")
    unet = build_unet(unet_config_of(lcfg, vae.config.latent_channels, 128 // 2 ** (len(vcfg.block_out_channels) - 1)))
    write_ldm_pipeline(folder, unet, vae, load_text_encoder(), load_tokenizer(), info={"image_size": 128})
    return folder


def seconds_per_image(fn, n: int, repeats: int) -> float:
    fn()  # warm-up (first call allocates)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--n", type=int, default=4, help="images per call")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    import torch
    from diffusers import StableDiffusionPipeline

    from dallebrain.api import load_pipeline

    folder = args.model or build_base_pipeline(Path(tempfile.mkdtemp()) / "base")
    ours = load_pipeline(folder, device="cpu")
    rows = []
    for sampler, steps in (("dpm", 10), ("dpm", 15), ("dpm", 20), ("dpm", 25), ("ddim", 50)):
        t = seconds_per_image(lambda s=sampler, k=steps: ours(PROMPT, n=args.n, steps=k, sampler=s), args.n,
                              args.repeats)
        rows.append((f"ours, {sampler} {steps} steps, guidance 4", t))
    stock = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None)
    stock.set_progress_bar_config(disable=True)
    t_stock = seconds_per_image(lambda: stock([PROMPT] * args.n, height=128, width=128, output_type="np",
                                              generator=torch.Generator().manual_seed(0)), args.n, args.repeats)
    rows.append(("stock StableDiffusionPipeline defaults (50 steps, guidance 7.5)", t_stock))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}; UNet {sum(p.numel() for p in ours.unet.parameters()) / 1e6:.1f} M parameters; "
          f"batches of {args.n}")
    print("| sampling | s / image | vs stock defaults |\n|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.3f} | {t_stock / t:.1f}x faster |" if t < t_stock else f"| {name} | {t:.3f} | 1.0x |")
    print(f"\npeak resident memory of the process (both pipelines loaded): {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
