"""Sampling speed and quality: seconds per 128x128 image end to end for our pipeline at several samplers and
step counts vs stock `diffusers.StableDiffusionPipeline` at its defaults (PNDM, 50 steps, guidance 7.5) on
the same weights, in one run; with --data, the Frechet distance of each setting's images to held-out real
slices in both feature spaces of `dallebrain evaluate`; plus peak memory.

    python benchmarks/bench_sampling.py                        # speed only, base-size untrained pipeline
    python benchmarks/bench_sampling.py --data PREPARED --eval EVAL_OUT [--model PIPELINE] [--n 128] [--per-pass 8]
    python benchmarks/bench_sampling.py --precision-table [--rounds 5] [--n 4] [--per-pass 1] [--threads 1]
    python benchmarks/bench_sampling.py --data PREPARED --eval EVAL_OUT --guidance-grid 2:6,1.5:6,3:6 [--n 128]

--guidance-grid G:A,...: at the default sampler and steps, the Frechet distances and the level judge's error
(mm, against the level each caption asks) of the same N (caption, seed) pairs at each caption guidance G and
attribute guidance A ("model": the model's own, per contrast where it has a table): what the default guidance is
chosen from. No timing, no stock pipeline.

--precision-table: images/s of the shipped (or --model) pipeline at its default settings, in fp32 and bf16, the
UNet in NCHW and in channels_last; the four settings alternate within each round (the order rotating) and the
table reports medians over rounds, so load from other jobs on shared cores falls on all of them alike.

--eval is the --out folder of an earlier `dallebrain evaluate` on the same data: its trained evaluation
encoder is reused (so every setting is scored in the same feature space as the report). Every setting
generates the same N (prompt, seed) pairs, the prompts being the captions of N held-out slices; time per
image is that whole run divided by N (ours: `sample`, in the pipeline's passes of `images_per_pass` images,
guided and unguided passes batched; stock: batches of 8 different prompts).
Without --model and --data it builds a pipeline of the base sizes with untrained weights: time per image does
not depend on what the weights have learned.
"""

from __future__ import annotations

import atexit
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _bench import check_at_least, check_holds, check_prepared  # benchmarks/_bench.py, beside this script

from dallebrain.cli._common import OneLineParser

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "axial T2-weighted slice of a healthy 70-year-old woman at the level of the lateral ventricles"
# (sampler, steps) rows of the speed/quality table, at the default guidance (the caption's D.GUIDANCE, the model's
# attribute guidance): DPM-Solver++ evenly spaced (the default before) and on Karras levels (the shipped model's
# choice now), UniPC for fewer steps, DDIM-50
SETTINGS = (("dpm", 10), ("dpm", 20), ("dpm-karras", 20), ("unipc", 8), ("unipc", 10), ("unipc", 12), ("unipc", 15),
            ("ddim", 50))
BATCH = 8


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


def stock_images(stock, prompts: list[str], seeds: list[int]) -> np.ndarray:
    """Stock StableDiffusionPipeline at its defaults, one generator per image, (N, H, W) in [0, 1]."""
    import torch

    out = []
    for start in range(0, len(prompts), BATCH):
        gens = [torch.Generator().manual_seed(s) for s in seeds[start:start + BATCH]]
        images = stock(prompts[start:start + BATCH], height=128, width=128, output_type="np", generator=gens).images
        out.append(np.asarray(images)[..., 0])
    return np.concatenate(out).astype(np.float32)


class Scorer:
    """Frechet distances of image sets to the held-out real slices, in the evaluation encoder's feature space
    and in Brain-CLIP's (when the model has clip/), plus the real/real floor at the same N."""

    def __init__(self, data: Path, eval_out: Path, model: Path, n: int, seed: int = 0):
        import pandas as pd

        from dallebrain.evaluation import features as Fe
        from dallebrain.evaluation.reference import match_train, sample_heldout

        table = pd.read_parquet(data / "metadata.parquet")
        train = table[table["split"] == "train"].reset_index(drop=True)
        heldout = sample_heldout(table, "test", n, seed, [])
        self.prompts = heldout["caption"].tolist()
        self.orientations = heldout["orientation"].tolist()
        self.levels = np.array([Fe.level_for_prediction(o, z)  # the level judge reads sagittal as |x|
                                for o, z in zip(heldout["orientation"], heldout["slice_mm"], strict=True)])
        self.seeds = [seed + i for i in range(len(self.prompts))]
        real = Fe.load_slices(data, heldout["image_path"])
        floor = Fe.load_slices(data, train.loc[match_train(train, heldout, seed), "image_path"])
        self.encoder = Fe.TrainedEncoder.load(eval_out / "encoder")
        self.clip = Fe.load_brain_clip(model)
        self.real = self._features(real)
        self.floor = self.score(floor)

    def _features(self, images: np.ndarray) -> dict[str, np.ndarray]:
        from dallebrain.evaluation import features as Fe

        feats = {"encoder": self.encoder.run(images)[0]}
        if self.clip is not None:
            feats["clip"] = Fe.clip_image_features(self.clip, images)
        return feats

    def score(self, images: np.ndarray) -> dict[str, float]:
        from dallebrain.evaluation.metrics import frechet_distance

        return {k: frechet_distance(self.real[k], v) for k, v in self._features(images).items()}


def parse_grid(grid: str) -> list[tuple[float, float | None]]:
    """"2:6,1.5:6,3:model" -> [(2.0, 6.0), (1.5, 6.0), (3.0, None)]: A "model" (None) is the model's own attribute
    guidance, per contrast where its dallebrain.json has a table; a clear error for anything else."""
    try:
        pairs = [(float(g), None if a == "model" else float(a))
                 for g, a in (item.split(":") for item in grid.split(","))]
        if pairs and all(g >= 0 and (a is None or a >= 0) for g, a in pairs):
            return pairs
    except ValueError:
        pass
    raise SystemExit(f"error: --guidance-grid wants G:A pairs (non-negative numbers, A may be 'model'), "
                     f"comma-separated, got {grid!r}")


def guidance_grid(scorer: Scorer, folder: Path, pairs: list[tuple[float, float]]) -> None:
    """FD (both spaces) and level error of the same captions and seeds at each caption:attribute guidance."""
    from dallebrain.api import load_pipeline
    from dallebrain.judges.level import estimate_levels
    from dallebrain.pipelines import defaults as D

    pipe = load_pipeline(folder, device="cpu")
    print(f"model {folder}; {len(scorer.prompts)} held-out captions; {D.SAMPLER} {D.STEPS} steps; start: "
          f"{pipe.start_kind}")
    print("| caption guidance | attribute guidance | FD (encoder) | FD (Brain-CLIP) | level error mean / median (mm) "
          "| within 1.5 mm |")
    print("|---|---|---|---|---|---|")
    for g, a in pairs:
        pipe.attribute_guidance = a  # None: the model's own (per contrast where it has a table)
        images = pipe.sample(scorer.prompts, scorer.seeds, guidance=g, batch_size=BATCH)
        fd = scorer.score(images)
        error = np.abs(estimate_levels(images, scorer.orientations) - scorer.levels)
        print(f"| {g:g} | {'model' if a is None else f'{a:g}'} | {fd['encoder']:.3f} | "
              f"{fd.get('clip', float('nan')):.4f} | {error.mean():.2f} / {np.median(error):.2f} | "
              f"{(error <= 1.5).mean():.0%} |", flush=True)
    print(f"| real/real floor | | {scorer.floor['encoder']:.3f} | {scorer.floor.get('clip', float('nan')):.4f} | | |")


def precision_table(folder: Path | None, n: int, rounds: int, per_pass: int) -> None:
    """images/s at the default sampler, steps and guidance: fp32 / bf16 x NCHW / channels_last UNet."""
    import statistics

    import torch

    from dallebrain.api import load_pipeline

    pipe = load_pipeline(folder, device="cpu")
    pipe.images_per_pass = per_pass
    settings = [(p, f) for p in ("fp32", "bf16") for f in ("NCHW", "channels_last")]

    def layout_of(layout: str):
        return torch.channels_last if layout == "channels_last" else torch.contiguous_format

    def run(precision: str, layout: str) -> tuple[float, np.ndarray]:
        pipe.precision = precision
        pipe.unet.to(memory_format=layout_of(layout))
        start = time.perf_counter()
        images = pipe(PROMPT, n=n, seed=0).images
        return n / (time.perf_counter() - start), images

    for precision, layout in settings:  # warm-up: first calls allocate and pick kernels
        pipe.precision = precision
        pipe.unet.to(memory_format=layout_of(layout))
        pipe(PROMPT, n=1, seed=0, steps=2)
    rates = {s: [] for s in settings}
    images = {}
    for r in range(rounds):
        for setting in settings[r % len(settings):] + settings[:r % len(settings)]:
            rate, images[setting] = run(*setting)
            rates[setting].append(rate)
            print(f"round {r + 1}: {setting[0]} {setting[1]} {rate:.3f} images/s", flush=True)
    base = statistics.median(rates[("fp32", "NCHW")])
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} at the end; model {folder or 'shipped'}; "
          f"{n} images per run, {per_pass} per pass, medians of {rounds} alternating rounds")
    print("| precision | UNet layout | images/s (median) | range | vs fp32 NCHW | mean abs diff vs fp32 NCHW |")
    print("|---|---|---|---|---|---|")
    for setting in settings:
        diff = float(np.abs(images[setting] - images[("fp32", "NCHW")]).mean())
        print(f"| {setting[0]} | {setting[1]} | {statistics.median(rates[setting]):.3f} | "
              f"{min(rates[setting]):.3f}-{max(rates[setting]):.3f} | "
              f"{statistics.median(rates[setting]) / base:.2f}x | {diff:.4f} |")


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="pipeline folder (default: the shipped model "
                        "with --data, an untrained base-size pipeline without)")
    parser.add_argument("--data", type=Path, default=None, help="prepared data set: adds Frechet distances")
    parser.add_argument("--eval", type=Path, default=None, help="--out of an earlier `dallebrain evaluate`")
    parser.add_argument("--n", type=int, default=None, help="images per setting (default 128 with --data, else 8)")
    parser.add_argument("--precision-table", action="store_true", help="fp32 vs bf16, NCHW vs channels_last")
    parser.add_argument("--rounds", type=int, default=5, help="--precision-table: alternating rounds")
    parser.add_argument("--per-pass", type=int, default=1,
                        help="images per pass (generate: 1; synthesize: its --batch-size)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--guidance-grid", default=None, help="G:A,... caption:attribute guidance pairs to score")
    args = parser.parse_args(argv)
    check_at_least(1, n=args.n, rounds=args.rounds, per_pass=args.per_pass, threads=args.threads)
    check_holds("--model", args.model, "dallebrain.json", "a pipeline folder")  # before the real slices load
    check_prepared("data", args.data)
    if args.threads:
        __import__("torch").set_num_threads(args.threads)
    if args.precision_table:
        precision_table(args.model, args.n or 4, args.rounds, args.per_pass)
        return
    if args.data is not None and args.eval is None:
        parser.error("--data needs --eval (the folder of an earlier `dallebrain evaluate`, for its encoder)")
    if args.guidance_grid:
        if args.data is None:
            parser.error("--guidance-grid needs --data and --eval")
        from dallebrain.api import default_model

        pairs = parse_grid(args.guidance_grid)
        folder = args.model or default_model()
        guidance_grid(Scorer(args.data, args.eval, folder, args.n or 128), folder, pairs)
        return

    import torch
    from diffusers import StableDiffusionPipeline

    from dallebrain.api import default_model, load_pipeline
    from dallebrain.pipelines import defaults as D
    from dallebrain.pipelines.export import export_stock_folder

    tmp = Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # a base pipeline and a stock export: not kept
    folder = args.model or (default_model() if args.data else build_base_pipeline(tmp / "base"))
    scorer = Scorer(args.data, args.eval, folder, args.n or 128) if args.data else None
    prompts = scorer.prompts if scorer else [PROMPT] * (args.n or 8)
    seeds = scorer.seeds if scorer else list(range(len(prompts)))
    n = len(prompts)

    ours = load_pipeline(folder, device="cpu")
    ours.images_per_pass = args.per_pass
    ours.sample(prompts[:BATCH], seeds[:BATCH], 2)  # warm-up: first calls allocate
    rows = []
    for sampler, steps in SETTINGS:
        start = time.perf_counter()
        images = ours.sample(prompts, seeds, steps, D.GUIDANCE, sampler, batch_size=BATCH)
        rows.append((f"ours, {sampler} {steps} steps", (time.perf_counter() - start) / n,
                     scorer.score(images) if scorer else {}))
    stock = StableDiffusionPipeline.from_pretrained(str(export_stock_folder(folder, tmp / "stock")),
                                                    safety_checker=None)
    stock.set_progress_bar_config(disable=True)
    stock_images(stock, prompts[:BATCH], seeds[:BATCH])  # warm-up
    start = time.perf_counter()
    images = stock_images(stock, prompts, seeds)
    t_stock = (time.perf_counter() - start) / n
    rows.append(("stock StableDiffusionPipeline defaults (PNDM 50 steps, guidance 7.5)", t_stock,
                 scorer.score(images) if scorer else {}))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    spaces = list(rows[0][2])
    print(f"\nmodel: {folder}\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads {torch.get_num_threads()}; UNet {sum(p.numel() for p in ours.unet.parameters()) / 1e6:.1f} M "
          f"parameters; {n} images per setting, ours {ours.images_per_pass} per pass, stock batches of {BATCH}")
    head = "| sampling | s / image | speed vs stock |" + "".join(f" FD ({s}) |" for s in spaces)
    print(head + "\n|" + "---|" * (3 + len(spaces)))
    for name, t, fd in rows:
        print(f"| {name} | {t:.3f} | {t_stock / t:.1f}x |" + "".join(f" {fd[s]:.3f} |" for s in spaces))
    if scorer:
        print("| real/real floor (train slices matched to the held-out ones) | | |"
              + "".join(f" {scorer.floor[s]:.3f} |" for s in spaces))
    print(f"\npeak resident memory of the process (both pipelines loaded): {peak_mb:.0f} MB")


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
