"""What `dallebrain evaluate` costs at the default size, piece by piece, and the total it implies.

    python benchmarks/bench_evaluate.py --n 64 --steps 20 --size 128

Generation is timed on a base-size LDM (UnetConfig() / VaeConfig() defaults, random weights: the cost does not
depend on the weights) through the pipeline's batched `sample` (as the evaluation does), on a sample of images and
extrapolated to n + 16 diversity samples; the evaluation encoder is timed per training step; the image metrics
(GLCM, histograms, MS-SSIM, band-pass privacy search against `--train` slices) on random slices of the size.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np
from _bench import check_at_least  # benchmarks/_bench.py, beside this script

from dallebrain.cli._common import OneLineParser


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--sample", type=int, default=8, help="images actually generated (then extrapolated)")
    parser.add_argument("--train", type=int, default=5000, help="train slices in the privacy search")
    args = parser.parse_args()
    check_at_least(1, n=args.n, steps=args.steps, size=args.size, sample=args.sample, train=args.train)

    import torch

    from dallebrain.evaluation import metrics as M
    from dallebrain.evaluation.features import AttributeEncoder, EncoderConfig, to_size
    from dallebrain.models.text import load_text_encoder, shared_tokenizer
    from dallebrain.models.unet import UnetConfig, build_unet, noise_scheduler_config
    from dallebrain.models.vae import VaeConfig, build_vae
    from dallebrain.pipelines.text2mri import Text2MRIPipeline

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    unet = build_unet(UnetConfig(sample_size=args.size // 4)).eval()
    pipe = Text2MRIPipeline(build_vae(VaeConfig(sample_size=args.size)).eval(), load_text_encoder().eval(),
                            shared_tokenizer(), unet, noise_scheduler_config())
    prompts = [f"Axial T1-weighted brain MRI of a healthy {30 + i}-year-old man" for i in range(args.sample)]
    t = time.time()
    pipe.sample(prompts, list(range(args.sample)), steps=args.steps)
    per_image = (time.time() - t) / args.sample
    generation = per_image * (args.n + 16)

    config = EncoderConfig()
    model = AttributeEncoder(config)
    optimiser = torch.optim.AdamW(model.parameters())
    x = torch.rand(config.batch_size, 1, config.input_size, config.input_size)
    t = time.time()
    for _ in range(10):
        loss = sum(v.sum() for v in model(x).values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    encoder = (time.time() - t) / 10 * config.steps

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (3 * args.n, args.size, args.size)).astype(np.float32)
    t = time.time()
    M.glcm_features(images)
    M.histogram_distances(images[:args.n], images[args.n:2 * args.n])
    M.mean_pairwise_ms_ssim(images[:4])
    train = M.correlation_vectors(M.bandpass(rng.uniform(0, 1, (args.train, 64, 64)).astype(np.float32)))
    M.nearest_neighbours(M.correlation_vectors(M.bandpass(to_size(images[:2 * args.n], 64))), train, 6)
    image_metrics = time.time() - t

    print(f"generation: {per_image:.1f} s/image at {args.size}px, {args.steps} steps "
          f"-> {generation / 60:.1f} min for {args.n} + 16 diversity images (per route)")
    print(f"evaluation encoder: {encoder:.0f} s for {config.steps} steps (once; cached in the report folder)")
    print(f"image metrics: {image_metrics:.0f} s (GLCM, histograms, MS-SSIM, privacy vs {args.train} train slices)")
    print(f"total, one route: about {(generation + encoder + image_metrics) / 60 + 0.5:.0f} min "
          "(+ reading the train split, about 1-2 ms a slice, and ~10 s of figures)")


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
