"""Does an unCLIP decoder use its image embedding? Two measurements per model folder, the prior left out:

- decoding the *true* Brain-CLIP embeddings of held-out slices (20 steps, guidance 2): the Pearson correlation of
  each decoded slice with its source (a decoder that ignores the embedding draws some other slice);
- on training slices' latents noised to fixed timesteps, the decoder's loss (MSE to its target: the noise or the
  velocity, as its schedule says) with the true embedding and with the zero embedding it learnt as "no condition"
  (a decoder that uses the embedding does better with it at every noise level).

    python benchmarks/bench_decoder_conditioning.py --data PREPARED MODEL [MODEL ...]

Written after a compiled bf16 training run logged a falling loss and learnt nothing (BENCHMARKS.md, "The unCLIP
decoder from the velocity LDM"). MODEL is a pipeline folder with clip/, vae/ and decoder/, or DEFAULT.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dallebrain.cli._common import OneLineParser

TIMESTEPS = (999, 700, 400, 100)


def conditioning_report(model: str | None, data: Path, sources: int, latents_n: int, seed: int) -> dict:
    import numpy as np
    import torch
    from diffusers import DDPMScheduler

    from dallebrain.api import load_pipeline
    from dallebrain.data.dataset import SliceDataset
    from dallebrain.models.conditioning import fine_level_of, unstated_features, uses_attributes
    from dallebrain.models.decoder import decoder_inputs
    from dallebrain.models.vae import encode_images

    pipe = load_pipeline(model, route="unclip", device="cpu", precision="fp32")
    test = SliceDataset(data, "test", seed=seed)
    rows = np.linspace(0, len(test) - 1, sources).round().astype(int).tolist()
    images = test.batch(rows)[0]
    with torch.no_grad():
        embeds = pipe.clip.encode_image(images).float()
    decoded = pipe.decode_embeddings(embeds, list(range(len(rows))), 20, 2.0)
    correlations = [float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
                    for a, b in zip(images[:, 0].numpy(), decoded, strict=True)]

    train = SliceDataset(data, "train", max_rows=latents_n, seed=seed)
    train_images = train.batch(range(len(train)))[0]
    unet, schedule = pipe.unet, pipe.scheduler_config
    noise = DDPMScheduler.from_config(schedule)
    generator = torch.Generator().manual_seed(seed)
    losses = {}
    with torch.no_grad():
        latents = encode_images(pipe.vae, train_images).float()
        train_embeds = pipe.clip.encode_image(train_images).float()
        # a decoder with attributes: every attribute unstated, so the embedding's own effect is measured
        attributes = unstated_features(len(latents), fine_level_of(unet)) if uses_attributes(unet) else None
        for t in TIMESTEPS:
            eps = torch.randn(latents.shape, generator=generator)
            steps = torch.full((len(latents),), t)
            noisy = noise.add_noise(latents, eps, steps)
            target = eps if schedule["prediction_type"] == "epsilon" else noise.get_velocity(latents, eps, steps)
            with_embedding = unet(noisy, steps, **decoder_inputs(train_embeds, attributes)).sample
            without = unet(noisy, steps, **decoder_inputs(torch.zeros_like(train_embeds), attributes)).sample
            losses[t] = (float(((with_embedding - target) ** 2).mean()), float(((without - target) ** 2).mean()))
    return {"prediction_type": schedule["prediction_type"], "correlations": correlations, "losses": losses}


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared data set (train and test splits)")
    parser.add_argument("models", nargs="+", help="pipeline folders (DEFAULT: the shipped model)")
    parser.add_argument("--sources", type=int, default=6, help="held-out slices decoded from their embedding")
    parser.add_argument("--latents", type=int, default=64, help="training slices for the loss")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not (args.data / "metadata.parquet").is_file():
        sys.exit(f"error: {args.data} is not a prepared data set (no metadata.parquet)")
    if args.sources < 2 or args.latents < 1:
        sys.exit("error: --sources must be at least 2 and --latents at least 1")
    for model in args.models:
        if model != "DEFAULT" and not (Path(model) / "decoder").is_dir():
            sys.exit(f"error: {model} has no decoder/ (an unCLIP pipeline folder, or DEFAULT)")
    print("| model | predicts | true embedding -> slice: correlation with the source (min / median / max) | "
          + " | ".join(f"loss t={t}: embedding / zero" for t in TIMESTEPS) + " |")
    print("|---|---|---|" + "---|" * len(TIMESTEPS))
    for model in args.models:
        report = conditioning_report(None if model == "DEFAULT" else model, args.data, args.sources, args.latents,
                                     args.seed)
        c = sorted(report["correlations"])
        losses = " | ".join(f"{a:.4f} / {b:.4f}" for a, b in report["losses"].values())
        print(f"| {model} | {report['prediction_type']} | {c[0]:.2f} / {c[len(c) // 2]:.2f} / {c[-1]:.2f} | "
              f"{losses} |", flush=True)


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
