"""What the diffusion stages (LDM, decoder, LoRA; the prior for its seed streams) train with: the denoising
loss with min-SNR weighting, EMA weights with their warm-up, and the named random streams of a micro-batch."""

from __future__ import annotations

import copy
import enum

import numpy as np
import torch

SAMPLE_PROMPTS = [  # the sample grids of the text-to-image stages (LDM, LoRA)
    "axial T1-weighted brain MRI of a healthy 25-year-old woman at the level of the lateral ventricles",
    "axial T2-weighted brain MRI of a healthy 80-year-old man at the level of the lateral ventricles",
    "coronal FLAIR brain MRI of a healthy 50-year-old woman through the hippocampi",
    "sagittal PD-weighted brain MRI of a healthy 40-year-old man, midsagittal",
]

# A micro-batch's rows are drawn from stream step * MICRO_BATCH_STREAMS + micro, so each (step, micro) pair
# has its own; gradient accumulation beyond this would make two micro-batches draw the same rows.
MICRO_BATCH_STREAMS = 1000


class SeedStream(enum.IntEnum):
    """The draws of a micro-batch besides its rows (phrasing, dropout), one stream per stage's conditioning.
    The values are mixed into the generator's seed: changing one changes every run of that stage."""

    CAPTIONS = 7  # LDM and LoRA: caption phrasing and caption dropout
    PRIOR_CAPTIONS = 11  # prior: caption phrasing and caption dropout
    DECODER_EMBEDS = 13  # decoder: image-embedding dropout


def micro_batch(rows_available: int, batch_size: int, seed: int, step: int, micro: int, rank: int,
                stream: SeedStream, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.random.Generator]:
    """The rows of one micro-batch and the generator of its other draws: a pure function of (seed, step,
    micro, rank), so a resumed run sees exactly the batches it would have seen. `weights`: each row's
    probability (`batch_indices`)."""
    from dallebrain.data.dataset import batch_indices

    if not 0 <= micro < MICRO_BATCH_STREAMS:
        raise ValueError(f"gradient_accumulation must be below {MICRO_BATCH_STREAMS}, got micro-batch {micro}")
    rows = batch_indices(rows_available, batch_size, seed, step * MICRO_BATCH_STREAMS + micro, rank, weights)
    return rows, np.random.default_rng([seed, step, micro, rank, int(stream)])


def denoising_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the denoiser should predict: the noise, or the velocity for v-prediction schedules."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    return noise


def min_snr_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, snr_gamma: float, velocity: bool) -> torch.Tensor:
    """Min-SNR loss weights (Hang et al. 2023): min(SNR, gamma) / SNR for an epsilon target, / (SNR + 1) for a
    velocity target, where SNR = alpha_bar / (1 - alpha_bar) at each sample's timestep."""
    alphas = alphas_cumprod.to(t.device)[t]
    snr = alphas / (1 - alphas)
    return torch.clamp(snr, max=snr_gamma) / (snr + 1 if velocity else snr)


def denoising_loss(denoise, scheduler, latents: torch.Tensor, snr_gamma: float) -> dict[str, torch.Tensor]:
    """The diffusion loss of every denoiser here (LDM, decoder, LoRA): noise the latents at random timesteps
    (the global torch generator, which checkpoints restore), predict with denoise(noisy, t), squared error
    against `denoising_target`, weighted by `min_snr_weights` (snr_gamma 0: unweighted)."""
    noise = torch.randn_like(latents)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), device=latents.device)
    pred = denoise(scheduler.add_noise(latents, noise, t), t)
    target = denoising_target(scheduler, latents, noise, t)
    per_sample = ((pred.float() - target) ** 2).mean(dim=(1, 2, 3))
    if snr_gamma > 0:
        velocity = scheduler.config.prediction_type == "v_prediction"
        weights = min_snr_weights(scheduler.alphas_cumprod, t, snr_gamma, velocity)
    else:
        weights = torch.ones_like(per_sample)
    return {"loss": (per_sample * weights).mean(), "mse": per_sample.mean().detach()}


def ema_copy(model: torch.nn.Module, decay: float) -> torch.nn.Module | None:
    """A frozen copy of `model` to hold its moving average (None when decay is 0: no EMA)."""
    return copy.deepcopy(model).requires_grad_(False) if decay > 0 else None


def ema_decay(step: int, max_decay: float) -> float:
    """The EMA decay after optimiser step `step` (0-based): (1 + step) / (10 + step) up to max_decay, as in
    diffusers' EMAModel warm-up, so the random initial weights are forgotten within the first steps."""
    return min(max_decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, live: torch.nn.Module, step: int, max_decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * live, with the decay of `ema_decay`."""
    decay = ema_decay(step, max_decay)
    shadow, weights = list(ema.parameters()), [p.detach() for p in live.parameters()]
    if len(shadow) != len(weights):
        raise ValueError(f"EMA copy holds {len(shadow)} tensors, the live model {len(weights)}")
    # one multi-tensor call instead of a Python loop over every tensor (330 in the shipped UNet); a small gain
    # on this CPU (6.7 -> 6.3 ms a step, benchmarks/bench_training.py --step-parts), more where launches cost (GPU)
    torch._foreach_lerp_(shadow, weights, 1 - decay)
