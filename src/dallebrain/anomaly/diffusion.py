"""Pseudo-healthy reconstruction by partial noising and re-denoising of the VAE latent (AnoDDPM / pDDPM style).

A slice's latent is noised part of the way (`level`: the fraction of the training schedule, SDEdit's strength)
and denoised back with DDIM under the prompt of a healthy slice with the slice's own plane, level and contrast.
Noise hides what is unusual; the healthy model fills it back in with what is usual there, so the difference
from the input marks the anomaly. Levels trade detail for healing: low noise keeps the lesion, high noise
loses the anatomy; several levels together (multi-scale) average the two failures out.

Patch-wise (pDDPM, Behrendt et al. 2023): only one square of the latent is noised at a time, the rest stays as
context; at every step the context is the input's latent noised to that step (RePaint's known region), since
the model was trained on uniformly noised latents. Windows overlap and are averaged.
Sources: Wyatt et al. 2022 (AnoDDPM); Behrendt et al. 2023 (pDDPM); Meng et al. 2022 (SDEdit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class PartialNoising:
    """One diffusion reconstruction setting."""

    levels: tuple[float, ...] = (0.4,)  # noised fraction of the schedule; several = multi-scale (maps averaged)
    steps: int = 10  # DDIM steps from the noised level back to a clean latent
    guidance: float = 1.0  # classifier-free guidance towards the healthy prompt (1: conditional only, one pass)
    patch: int | None = None  # latent window side for the patch-wise variant; None: the whole slice at once
    match_intensity: bool = True  # fit the reconstruction's grey levels to the input's (gain and offset)
    normative: bool = True  # residual over the healthy cohort's spread at each pixel (needs a normal model)
    compare: str = "image"  # where input and reconstruction are compared: "image" or "latent" (before decoding)
    calibrated: bool = False  # residual against healthy slices' own residuals at that position (normal model)

    def residual_name(self, level: float) -> str:
        """The normal model's name for this setting's healthy residuals at one level (a setting of its own)."""
        return (f"residual:l{level:.3f}:s{self.steps}:g{self.guidance:g}:p{self.patch or 0}:"
                f"m{int(self.match_intensity)}:seed{self.seed}")
    seed: int = 0  # the same noise for every slice: the map depends on the slice, not on its place in a batch

    def __post_init__(self) -> None:
        if not self.levels or any(not 0.0 < lv < 1.0 for lv in self.levels):
            raise ValueError(f"noise levels must lie in (0, 1), got {self.levels}")
        if self.steps < 1 or self.steps > 1000:
            raise ValueError(f"steps must be between 1 and 1000, got {self.steps}")
        if not np.isfinite(self.guidance) or self.guidance < 0:
            raise ValueError(f"guidance must be a non-negative number, got {self.guidance}")
        if self.compare not in ("image", "latent"):
            raise ValueError(f"compare must be 'image' or 'latent', got {self.compare!r}")
        if self.patch is not None and self.patch < 2:
            raise ValueError(f"patch must be at least 2 latent pixels, got {self.patch}")


def _scheduler(pipe, level: float, steps: int):
    """DDIM over the part of the schedule below `level`, `steps` steps long: the last `steps` timesteps of a
    "trailing" schedule whose stride is at most level * T / steps, so the first one sits at the level (a "leading"
    schedule would start one stride lower, at t = 1 for a single step) and the last steps down to a clean latent."""
    from diffusers import DDIMScheduler

    from dallebrain.models.unet import make_scheduler

    base = make_scheduler("ddim", pipe.scheduler_config)
    scheduler = DDIMScheduler.from_config(base.config, timestep_spacing="trailing")
    scheduler.set_timesteps(max(steps, math.ceil(steps / level - 1e-9)), device=pipe.device)
    return scheduler, scheduler.timesteps[-steps:]


def _noise(shape: tuple[int, ...], seed: int, n: int) -> torch.Tensor:
    one = torch.randn((1, *shape), generator=torch.Generator("cpu").manual_seed(seed))
    return one.expand(n, *shape).clone()


def _unstated(pipe, rows: int) -> dict:
    """An attribute-conditioned UNet's class labels with every attribute unstated: the healing is steered by the
    healthy prompt's text alone, as with a text-only model (its normal model and calibration were fitted so)."""
    from dallebrain.models.conditioning import unet_features, uses_attributes

    return {"class_labels": unet_features(pipe.unet, [{}] * rows).to(pipe.device)} if uses_attributes(pipe.unet) else {}


def _eps(pipe, latents: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    if guidance == 1.0:
        return pipe.unet(latents, t, encoder_hidden_states=cond, **_unstated(pipe, len(latents))).sample
    both = pipe.unet(torch.cat([latents, latents]), t, encoder_hidden_states=torch.cat([uncond, cond]),
                     **_unstated(pipe, 2 * len(latents))).sample
    e_uncond, e_cond = both.chunk(2)
    return e_uncond + guidance * (e_cond - e_uncond)


@torch.no_grad()
def denoise_from(pipe, z0: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, level: float,
                 setting: PartialNoising, window: tuple[slice, slice] | None = None) -> torch.Tensor:
    """z0 (N, C, h, w) noised to `level` (only inside `window` when given) and denoised back."""
    if getattr(pipe, "guidance_distilled", None) is not None:  # taught one sampling setting, not this healing
        raise ValueError("anomaly detection needs a model's own UNet: this one is guidance-distilled "
                         "(sampling.guidance_distilled); use the model it was distilled from")
    scheduler, timesteps = _scheduler(pipe, level, setting.steps)
    noise = _noise(tuple(z0.shape[1:]), setting.seed, z0.shape[0]).to(z0)
    latents = scheduler.add_noise(z0, noise, timesteps[:1])
    inside = torch.zeros_like(z0[:1, :1]) if window is not None else None
    if inside is not None:
        inside[..., window[0], window[1]] = 1.0
    for i, t in enumerate(timesteps):
        if inside is not None:  # the context: the input's latent at this step's noise level
            latents = inside * latents + (1 - inside) * scheduler.add_noise(z0, noise, t.reshape(1))
        eps = _eps(pipe, scheduler.scale_model_input(latents, t), t, cond, uncond, setting.guidance)
        latents = scheduler.step(eps, t, latents).prev_sample
        if i == len(timesteps) - 1 and inside is not None:
            latents = inside * latents + (1 - inside) * z0
    return latents


def windows(size: int, patch: int) -> list[tuple[slice, slice]]:
    """Square windows of side `patch` over a size x size latent, overlapping by half, covering every pixel."""
    patch = min(patch, size)
    stride = max(1, patch // 2)
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return [(slice(r, r + patch), slice(c, c + patch)) for r in starts for c in starts]


@torch.no_grad()
def pseudo_healthy_latents(pipe, z0: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, level: float,
                           setting: PartialNoising) -> torch.Tensor:
    """The healed latents of one noise level: whole slice, or the average of the patch-wise windows."""
    if setting.patch is None:
        return denoise_from(pipe, z0, cond, uncond, level, setting)
    total, weight = torch.zeros_like(z0), torch.zeros_like(z0[:1, :1])
    for window in windows(z0.shape[-1], setting.patch):
        healed = denoise_from(pipe, z0, cond, uncond, level, setting, window)
        total[..., window[0], window[1]] += healed[..., window[0], window[1]]
        weight[..., window[0], window[1]] += 1
    return total / weight


def match_intensity(reconstruction: np.ndarray, image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """The reconstruction under the gain and offset that best map it onto the input inside the brain, refitted
    without the 10 % worst-fitting pixels (a lesion must not pull the fit). A model that renders a contrast a
    little darker or flatter than the scanner did (or than the simulator does since it was trained) would
    otherwise paint the whole brain as anomalous."""
    x, y = reconstruction[brain].astype(np.float64), image[brain].astype(np.float64)
    if x.size < 10 or np.ptp(x) == 0:
        return reconstruction
    keep = np.ones(x.size, bool)
    for _ in range(2):
        gain, offset = np.polyfit(x[keep], y[keep], 1)
        error = np.abs(gain * x + offset - y)
        keep = error <= np.quantile(error, 0.9)
    return np.clip(gain * reconstruction + offset, 0, 1).astype(np.float32)
