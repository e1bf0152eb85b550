"""The signal leak at the first sampling step (Everaert et al., "Exploiting the signal-leak bias in diffusion
models", WACV 2024; Lin et al., "Common diffusion noise schedules and sample steps are flawed", WACV 2024).

The training noise schedule (scaled_linear, as Stable Diffusion's) never reaches pure noise: at the first
sampling step a training input still holds sqrt(alpha_bar) ~ 0.1 of its latents. Our VAE's latents are far from
zero-mean (per channel about +0.66, -0.78, +0.73, -0.05 over the simulated cohort; a black background encodes to
about +1.6, -1.2, +1.1, -0.6), and the UNet learned to read that leaked mean. Sampling from pure zero-mean noise
removes it, and the model answers with latents of mean ~0: a grey background (0.10 of full scale where real slices
have 0.005), halos that swell the head, and a level judge misled 18 mm on average. Starting instead from the
noised per-channel mean of the training latents, as a training input at that step looks, restores the black
background (0.015 over 64 held-out captions) and the level judge's error falls from 25.8 to 8.1 mm
(benchmarks/bench_signal_leak.py), with no retraining; FLAIR's age steering got worse (BENCHMARKS.md).

The mean is a property of a model's VAE on its training data: `dallebrain train ldm` writes it into the model's
dallebrain.json ("sampling": {"latent_mean": [...]}); a folder without it samples from pure noise as before.
A folder with a leak table (pipelines/leak_table.py) starts each prompt from the mean latent of training slices
like the one it asks for instead (level error 8.1 -> 2.5 mm, FLAIR's age steering back)."""

from __future__ import annotations

import math

import torch


def latent_mean_of(info: dict, channels: int) -> torch.Tensor | None:
    """(channels,) float32 mean of the training latents recorded in a model's dallebrain.json, or None.
    ValueError (one line) for a recorded value that is not `channels` finite numbers."""
    value = (info.get("sampling") or {}).get("latent_mean")
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != channels
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                       and abs(v) < 1e3 for v in value)):
        raise ValueError(f"dallebrain.json sampling.latent_mean must be {channels} finite numbers (one per latent "
                         f"channel), got {str(value)[:80]}")
    return torch.tensor(value, dtype=torch.float32)


def start_latents(scheduler, noise: torch.Tensor, mean: torch.Tensor | None) -> torch.Tensor:
    """The latents sampling starts from. Without a mean: the noise at the scheduler's initial scale (pure noise,
    diffusers' default). With one, per channel (C,) or per image (1 or n, C, H, W) (pipelines/leak_table.py): the
    scheduler's own forward process applied to that mean latent at the first timestep, sqrt(alpha_bar) mean +
    sqrt(1 - alpha_bar) noise for the VP samplers (DPM-Solver++, DDIM), mean + sigma noise for Euler: what a
    training input at that step looks like."""
    if mean is None:
        return noise * scheduler.init_noise_sigma
    mean = mean.to(noise)
    signal = (mean[None, :, None, None] if mean.dim() == 1 else mean).expand_as(noise)
    return scheduler.add_noise(signal, noise, scheduler.timesteps[:1])


def training_latent_mean(latents: torch.Tensor, chunk: int = 4096) -> list[float]:
    """Per-channel mean of (N, C, H, W) latents (any float dtype), accumulated in float64 a chunk at a time."""
    total = torch.zeros(latents.shape[1], dtype=torch.float64)
    for start in range(0, len(latents), chunk):
        total += latents[start:start + chunk].double().sum(dim=(0, 2, 3))
    return (total / (len(latents) * latents.shape[2] * latents.shape[3])).tolist()
