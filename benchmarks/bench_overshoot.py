"""Why synthetic slices clip white, per contrast: clipped brain share, unclamped output and latent spread.

Per contrast, the share of brain pixels at the top of the range, the decoder's unclamped output and the spread of
the sampled latents, against real held-out slices (measured: PD-weighted and FLAIR slices overshoot).

    python benchmarks/bench_overshoot.py --data PREPARED [--model MODEL] [--per-contrast 16] [--n 256]

For each contrast, the first --per-contrast held-out slices of `evaluate`'s sample (same seed, so the same
captions and seeds as `dallebrain evaluate --n 256` uses for them) are generated at the default settings and with
no guidance at all (caption and attribute guidance 1), and the real slices are encoded by the model's VAE. Printed
as markdown: brain share >= 0.99 (clipped white after the decoder's clamp), the median brain intensity, the 99th
percentile of the decoder's output before the clamp, and the sampled latents' per-channel standard deviation over
the real slices' (1 = as real). The reconstruction (real -> VAE -> clamp) is printed too: it is the VAE's share.

With --trajectory, a second table: at the default settings, the clipped share of the slice the sampler is heading
for at each step (its clean-latent estimate from the guided UNet output, decoded), which shows the step where the
white patches appear (measured: at the first one, and the later steps keep them). With --one-step, a third: the
real slices' latents noised to a timestep and denoised in one conditional UNet call (no sampler, no guidance):
the spread of that clean estimate over the real latents' and its clipped share, decoded.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from dallebrain.cli._common import OneLineParser
from dallebrain.vocab import MODALITIES as CONTRASTS


class DecoderTap:
    """Records what the VAE's decoder is given (scaled latents) and returns before the clamp, around one pipeline's
    `vae.decode` (an instance attribute, removed again by `close`)."""

    def __init__(self, vae):
        self.vae, self.latents, self.raw = vae, [], []
        decode = vae.decode

        def tapped(z, *args, **kwargs):
            out = decode(z, *args, **kwargs)
            self.latents.append(z.detach().float() * vae.config.scaling_factor)
            self.raw.append(((out.sample.detach().float() + 1) / 2)[:, 0])
            return out

        vae.decode = tapped

    def clear(self) -> None:
        self.latents, self.raw = [], []

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The first n images' latents and unclamped outputs since the last take (a padded pass adds rows)."""
        import torch

        latents, raw = torch.cat(self.latents)[:n], torch.cat(self.raw)[:n]
        self.clear()
        return latents.numpy(), raw.numpy()

    def close(self) -> None:
        del self.vae.decode


def clean_estimate(scheduler, output, t, sample):
    """The clean latent a VP sampler's model output implies at timestep t: from a noise prediction
    (x - sqrt(1 - a) eps) / sqrt(a), from a velocity sqrt(a) x - sqrt(1 - a) v."""
    a = scheduler.alphas_cumprod.to(sample.device)[int(t)]
    if scheduler.config.prediction_type == "v_prediction":
        return a.sqrt() * sample - (1 - a).sqrt() * output
    return (sample - (1 - a).sqrt() * output) / a.sqrt()


class StepTap:
    """Records the clean-latent estimate at every step of every scheduler the pipeline makes while open (wraps
    `text2mri.make_scheduler`, put back by `close`). The default sampler's model input is the latent unscaled
    (DPM-Solver++), so the estimate needs no input scaling."""

    def __init__(self):
        import dallebrain.pipelines.text2mri as text2mri

        self.module, self.made, self.passes = text2mri, text2mri.make_scheduler, []

        def make(*args, **kwargs):
            scheduler, estimates = self.made(*args, **kwargs), []
            self.passes.append(estimates)
            step = scheduler.step

            def tapped(output, t, sample, *rest, **kw):
                estimates.append((int(t), clean_estimate(scheduler, output, t, sample).detach().float()))
                return step(output, t, sample, *rest, **kw)

            scheduler.step = tapped
            return scheduler

        text2mri.make_scheduler = make

    def take(self, n: int) -> list[tuple]:
        """(timestep, estimates of the first n images) per step since the last take, passes joined in order."""
        import torch

        passes = [p for p in self.passes if p]
        self.passes = []
        return [(t, torch.cat([p[k][1] for p in passes])[:n]) for k, (t, _) in enumerate(passes[0])]

    def close(self) -> None:
        self.module.make_scheduler = self.made


def trajectory(pipe, sets: dict, seed: int, at: tuple[int, ...] = (0, 1, 4, 9, -1)) -> list[dict]:
    """Per contrast: (timestep, clipped brain share of the decoded clean estimate) at the steps `at` (indices into
    the default sampler's steps), at the default settings."""
    import torch

    from dallebrain.evaluation.metrics import top_share
    from dallebrain.models.vae import decode_latents

    tap = StepTap()
    rows = []
    try:
        for contrast, (numbers, prompts, _) in sets.items():
            images = pipe.sample(prompts, [seed + int(i) for i in numbers])
            steps = tap.take(len(images))
            chosen = sorted({k % len(steps) for k in at})
            with torch.no_grad():
                shares = [(steps[k][0], top_share(decode_latents(pipe.vae, steps[k][1])[:, 0].float().numpy()))
                          for k in chosen]
            rows.append({"contrast": contrast, "n": len(images), "steps": [k + 1 for k in chosen],
                         "shares": shares, "final": top_share(images)})
    finally:
        tap.close()
    return rows


ONE_STEP_TIMESTEPS = (999, 900, 800, 700, 500, 300, 100)


def one_step(pipe, sets: dict, seed: int, timesteps: tuple[int, ...] = ONE_STEP_TIMESTEPS) -> list[dict]:
    """Per contrast and timestep: (clean estimate's latent std / the real latents', mean over channels; clipped
    brain share of it decoded), from the real slices noised with seeded noise and one conditional UNet call."""
    import torch

    from dallebrain.evaluation.metrics import top_share
    from dallebrain.models.unet import make_scheduler
    from dallebrain.models.vae import decode_latents, encode_images

    scheduler = make_scheduler("ddim", pipe.scheduler_config)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for contrast, (_, prompts, real) in sets.items():
        with torch.no_grad():
            clean = encode_images(pipe.vae, torch.as_tensor(real)[:, None]).float()
            states = torch.cat([pipe.encode_prompt(p)[0] for p in prompts])
            attributes = [pipe.encode_attributes(p) for p in prompts]
            extra = {} if attributes[0] is None else {"class_labels": torch.cat(attributes)}
            cells = []
            for t in timesteps:
                noise = torch.randn(clean.shape, generator=generator)
                noisy = scheduler.add_noise(clean, noise, torch.tensor([t]))
                output = pipe.unet(noisy, torch.tensor(t), encoder_hidden_states=states, **extra).sample.float()
                estimate = clean_estimate(scheduler, output, t, noisy)
                spread = float((channel_std(estimate.numpy()) / channel_std(clean.numpy())).mean())
                cells.append((t, spread, top_share(decode_latents(pipe.vae, estimate)[:, 0].float().numpy())))
        rows.append({"contrast": contrast, "n": len(real), "cells": cells})
    return rows


def one_step_markdown(rows: list[dict]) -> str:
    lines = ["| contrast (n) | " + " | ".join(f"t = {t}" for t, _, _ in rows[0]["cells"]) + " |",
             "|---" * (len(rows[0]["cells"]) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r['contrast']} ({r['n']}) | " + " | ".join(f"{spread:.2f} / {share:.3f}"
                                                                    for _, spread, share in r["cells"]) + " |")
    return "\n".join(lines)


def trajectory_markdown(rows: list[dict]) -> str:
    steps = rows[0]["steps"]
    head = " | ".join(f"step {k} (t = {t})" for k, (t, _) in zip(steps, rows[0]["shares"], strict=True))
    lines = [f"| contrast (n) | {head} | slice |", "|---" * (len(steps) + 2) + "|"]
    for r in rows:
        lines.append(f"| {r['contrast']} ({r['n']}) | " + " | ".join(f"{s:.3f}" for _, s in r["shares"])
                     + f" | {r['final']:.3f} |")
    return "\n".join(lines)


def held_out_by_contrast(data: Path, n: int, per_contrast: int, seed: int):
    """{contrast: (row numbers in `evaluate --n N`'s sample, captions, slices)} of the test split."""
    import pandas as pd

    from dallebrain.evaluation.features import load_slices
    from dallebrain.evaluation.reference import sample_heldout

    table = pd.read_parquet(data / "metadata.parquet")
    heldout = sample_heldout(table, "test", n, seed, [])
    out = {}
    for contrast in CONTRASTS:
        rows = np.flatnonzero(heldout["modality"].to_numpy() == contrast)[:per_contrast]
        if len(rows):
            part = heldout.iloc[rows]
            out[contrast] = (rows, part["caption"].tolist(), load_slices(data, part["image_path"]))
    return out


def channel_std(latents: np.ndarray) -> np.ndarray:
    return latents.transpose(1, 0, 2, 3).reshape(latents.shape[1], -1).std(axis=1)


def measure(pipe, sets: dict, seed: int) -> list[dict]:
    import torch

    from dallebrain.evaluation.metrics import BRAIN_THRESHOLD, brain_values, top_share
    from dallebrain.models.vae import decode_latents, encode_images

    tap = DecoderTap(pipe.vae)
    asked = pipe.attribute_guidance  # set back afterwards: "default" is whatever the pipeline was given
    rows = []
    try:
        for contrast, (numbers, prompts, real) in sets.items():
            seeds = [seed + int(i) for i in numbers]
            with torch.no_grad():
                real_latents = encode_images(pipe.vae, torch.as_tensor(real)[:, None])
                recon = decode_latents(pipe.vae, real_latents)[:, 0].float().numpy()
            tap.clear()  # the reconstruction went through the decoder too
            real_std = channel_std(real_latents.float().numpy())
            row = {"contrast": contrast, "n": len(real),
                   "real": (top_share(real), float(np.median(brain_values(real)))),
                   "reconstruction": (top_share(recon), float(np.median(brain_values(recon))))}
            for name, guidance, attribute in (("default", None, asked), ("no guidance", 1.0, 1.0)):
                pipe.attribute_guidance = attribute
                kwargs = {} if guidance is None else {"guidance": guidance}
                images = pipe.sample(prompts, seeds, **kwargs)
                latents, raw = tap.take(len(images))
                brain = raw[images > BRAIN_THRESHOLD]
                row[name] = (top_share(images), float(np.median(brain_values(images))),
                             float(np.percentile(brain, 99)), channel_std(latents) / real_std)
            rows.append(row)
    finally:
        pipe.attribute_guidance = asked
        tap.close()
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| contrast (n) | brain >= 0.99: real / reconstruction / default / no guidance | median brain: real / "
             "default / no guidance | unclamped 99th pct: default / no guidance | latent std / real, per channel: "
             "default; no guidance |", "|---|---|---|---|---|"]
    for r in rows:
        d, g = r["default"], r["no guidance"]
        lines.append(f"| {r['contrast']} ({r['n']}) | {r['real'][0]:.3f} / {r['reconstruction'][0]:.3f} / "
                     f"{d[0]:.3f} / {g[0]:.3f} | {r['real'][1]:.3f} / {d[1]:.3f} / {g[1]:.3f} | {d[2]:.3f} / "
                     f"{g[2]:.3f} | {' '.join(f'{v:.2f}' for v in d[3])}; {' '.join(f'{v:.2f}' for v in g[3])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a prepared data set with a test split")
    parser.add_argument("--model", type=Path, default=None, help="pipeline folder (default: the shipped model)")
    parser.add_argument("--per-contrast", type=int, default=16)
    parser.add_argument("--n", type=int, default=256, help="evaluate's --n: its held-out sample, taken from")
    parser.add_argument("--seed", type=int, default=0, help="evaluate's seed: held-out sample and seed + row")
    parser.add_argument("--trajectory", action="store_true", help="also the clipped share of the clean estimate "
                        "along the default sampler's steps")
    parser.add_argument("--one-step", action="store_true", help="also the one-call clean estimate from noised "
                        "real latents, per timestep")
    args = parser.parse_args(argv)
    if not (args.data / "metadata.parquet").is_file():
        print(f"error: {args.data} is not a prepared data set (no metadata.parquet)", file=sys.stderr)
        return 2
    if args.n < 2:
        print(f"error: --n must be at least 2, got {args.n}", file=sys.stderr)
        return 2
    if args.per_contrast < 2:
        print(f"error: --per-contrast must be at least 2, got {args.per_contrast}", file=sys.stderr)
        return 2
    from dallebrain.api import default_model, load_pipeline

    try:
        sets = held_out_by_contrast(args.data, args.n, args.per_contrast, args.seed)
        pipe = load_pipeline(args.model or default_model())
    except ValueError as error:  # no test split, a folder that is not a model: what the loaders say, in one line
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not sets:
        print(f"error: {args.data} has no test-split slices of {', '.join(CONTRASTS)}", file=sys.stderr)
        return 2
    print(markdown(measure(pipe, sets, args.seed)))
    if args.trajectory:
        print()
        print("brain >= 0.99 of the decoded clean-latent estimate, default settings:")
        print(trajectory_markdown(trajectory(pipe, sets, args.seed)))
    if args.one_step:
        print()
        print("one conditional UNet call from real latents noised to t: clean estimate's latent std / real "
              "(channel mean) / brain >= 0.99 decoded:")
        print(one_step_markdown(one_step(pipe, sets, args.seed)))
    return 0


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(lambda: sys.exit(main()))
