"""The detection methods, side by side, each turning a batch of slices into anomaly maps (and, where it makes
one, a pseudo-healthy reconstruction):

- `diffusion`, `diffusion_multiscale`, `diffusion_patch`: partial noising and re-denoising of the latent under
  the slice's own healthy prompt (`diffusion.py`); map = |input - reconstruction - m| / s, where m and s are
  the mean and spread of healthy slices' own residuals at that pixel and position (calibration: what the model
  always gets wrong there, e.g. because it is blurry, is not an anomaly).
- `latent_z`: the seed's latent-space score: how far each latent pixel of the slice's VAE encoding lies from the
  healthy latents at that position (z-score, root mean square over channels).
- baselines: `vae_error` (the VAE's own reconstruction error, no diffusion) and `intensity_z` (each pixel's
  z-score against the healthy cohort at that position, no model at all).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from dallebrain.anomaly.attributes import SliceAttributes
from dallebrain.anomaly.diffusion import PartialNoising, match_intensity, pseudo_healthy_latents
from dallebrain.anomaly.maps import brain_mask, finish, upsample

# Chosen on lesions pasted into healthy fit/val subjects (`benchmarks/bench_anomaly.py tune`, BENCHMARKS.md):
# calibration against the healthy slices' own residuals lifted AUPRC from 0.50 to 0.68 at the same noise level;
# 0.7 of the schedule beat 0.5 and 0.3 by a little overall.
DIFFUSION_METHODS = {
    "diffusion": PartialNoising(levels=(0.7,), calibrated=True),
    "diffusion_multiscale": PartialNoising(levels=(0.3, 0.5, 0.7), calibrated=True),
    "diffusion_patch": PartialNoising(levels=(0.7,), patch=16, calibrated=True),
}
BASELINES = ("vae_error", "intensity_z")
METHODS = (*DIFFUSION_METHODS, "latent_z", *BASELINES)
NEEDS_NORMAL_MODEL = ("latent_z", "intensity_z")


@dataclass
class MethodOutput:
    maps: np.ndarray  # (N, H, W) finished anomaly maps
    reconstructions: np.ndarray | None = None  # (N, H, W) pseudo-healthy slices, where the method makes them


@dataclass
class Batch:
    """Slices on the model's grid with their attributes; VAE work shared by the methods is done once."""

    images: np.ndarray  # (N, H, W) float32 in [0, 1]
    attributes: list[SliceAttributes]
    _cache: dict = field(default_factory=dict)

    def latents(self, pipe) -> torch.Tensor:
        from dallebrain.models.vae import encode_images

        if "latents" not in self._cache:
            with torch.no_grad():
                x = torch.from_numpy(self.images[:, None]).to(pipe.device)
                self._cache["latents"] = encode_images(pipe.vae, x)
        return self._cache["latents"]

    def decoded(self, pipe, latents: torch.Tensor) -> np.ndarray:
        from dallebrain.models.vae import decode_latents

        with torch.no_grad():
            return decode_latents(pipe.vae, latents)[:, 0].float().cpu().numpy()


def _finished(raw: np.ndarray, images: np.ndarray) -> np.ndarray:
    return np.stack([finish(r, x) for r, x in zip(raw, images, strict=True)])


def _spread(batch: Batch, normal) -> np.ndarray:
    """Healthy cohort's intensity spread at every pixel of each slice's position (1 without a normal model)."""
    if normal is None:
        return np.ones_like(batch.images)
    return np.stack([normal.stats(a, "pixel")[1] for a in batch.attributes])


def _latent_residual(z0: torch.Tensor, healed: torch.Tensor, batch: Batch, normal, size: int) -> np.ndarray:
    """Root-mean-square over channels of the latent difference, in units of the healthy latents' spread at each
    latent pixel when a normal model is given (Pinaya et al. 2022 score anomalies in the LDM's latent space)."""
    diff = (z0 - healed).float().cpu().numpy()
    if normal is not None:
        diff = diff / np.stack([normal.stats(a, "latent")[1] for a in batch.attributes])
    return np.stack([upsample(np.sqrt((d ** 2).mean(axis=0)), size) for d in diff])


def reconstruct(pipe, batch: Batch, setting: PartialNoising) -> list[tuple[torch.Tensor, np.ndarray]]:
    """(healed latents, pseudo-healthy slices) at each of the setting's noise levels."""
    z0 = batch.latents(pipe)
    cond = torch.cat([pipe.encode_prompt(a.healthy_prompt())[0] for a in batch.attributes])
    uncond = pipe.encode_prompt("")[0].expand_as(cond)
    out = []
    for level in setting.levels:
        healed_latents = pseudo_healthy_latents(pipe, z0, cond, uncond, level, setting)
        healed = batch.decoded(pipe, healed_latents)
        if setting.match_intensity:
            healed = np.stack([match_intensity(h, x, brain_mask(x)) for h, x in zip(healed, batch.images,
                                                                                       strict=True)])
        out.append((healed_latents, healed))
    return out


def run_diffusion(pipe, batch: Batch, setting: PartialNoising, normal=None) -> MethodOutput:
    """Reconstruction at each noise level; the map is the mean of the levels' finished residual maps and the
    reconstruction shown is the middle level's. A residual is compared in image space (over the healthy
    intensity spread when `setting.normative`; against the healthy slices' own residuals at that position when
    `setting.calibrated`) or in latent space."""
    spread = _spread(batch, normal if setting.normative and not setting.calibrated else None)
    maps, recons = [], []
    for level, (healed_latents, healed) in zip(setting.levels, reconstruct(pipe, batch, setting), strict=True):
        recons.append(healed)
        if setting.compare == "latent":
            raw = _latent_residual(batch.latents(pipe), healed_latents, batch,
                                   normal if setting.normative else None, batch.images.shape[-1])
        elif setting.calibrated:
            stats = [normal.stats(a, setting.residual_name(level)) for a in batch.attributes]
            raw = (batch.images - healed - np.stack([m for m, _ in stats])) / np.stack([s for _, s in stats])
        else:
            raw = (batch.images - healed) / spread
        maps.append(_finished(raw, batch.images))
    return MethodOutput(np.mean(maps, axis=0).astype(np.float32), recons[len(recons) // 2])


def run_vae_error(pipe, batch: Batch) -> MethodOutput:
    recon = batch.decoded(pipe, batch.latents(pipe))
    return MethodOutput(_finished(batch.images - recon, batch.images), recon)


def run_latent_z(pipe, batch: Batch, normal) -> MethodOutput:
    z = batch.latents(pipe).float().cpu().numpy()
    size = batch.images.shape[-1]
    raw = []
    for latent, attributes in zip(z, batch.attributes, strict=True):
        mean, std = normal.stats(attributes, "latent")
        raw.append(upsample(np.sqrt((((latent - mean) / std) ** 2).mean(axis=0)), size))
    return MethodOutput(_finished(np.stack(raw), batch.images))


def run_intensity_z(batch: Batch, normal) -> MethodOutput:
    raw = []
    for image, attributes in zip(batch.images, batch.attributes, strict=True):
        mean, std = normal.stats(attributes, "pixel")
        raw.append((image - mean) / std)
    return MethodOutput(_finished(np.stack(raw), batch.images), None)


def run_method(name: str, pipe, batch: Batch, normal=None, setting: PartialNoising | None = None) -> MethodOutput:
    """One method on one batch; `setting` overrides a diffusion method's default."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: choose from {', '.join(METHODS)}")
    if name in NEEDS_NORMAL_MODEL and normal is None:
        raise ValueError(f"method {name} needs a normal model (fitted on healthy slices)")
    if name in DIFFUSION_METHODS:
        setting = setting or DIFFUSION_METHODS[name]
        if (setting.normative or setting.calibrated) and normal is None:
            raise ValueError(f"method {name} weighs residuals by the healthy spread: it needs a normal model")
        return run_diffusion(pipe, batch, setting, normal)
    if name == "vae_error":
        return run_vae_error(pipe, batch)
    if name == "latent_z":
        return run_latent_z(pipe, batch, normal)
    return run_intensity_z(batch, normal)
