"""The detection methods, side by side, each turning a batch of slices into anomaly maps (and, where it makes
one, a pseudo-healthy reconstruction):

- `diffusion`, `diffusion_multiscale`, `diffusion_patch`: partial noising and re-denoising of the latent under
  the slice's own healthy prompt (`diffusion.py`); map = |input - reconstruction|.
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

DIFFUSION_METHODS = {
    "diffusion": PartialNoising(levels=(0.4,)),
    "diffusion_multiscale": PartialNoising(levels=(0.25, 0.4, 0.55)),
    "diffusion_patch": PartialNoising(levels=(0.5,), patch=16),
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


def run_diffusion(pipe, batch: Batch, setting: PartialNoising, normal=None) -> MethodOutput:
    """Reconstruction at each noise level; the map is the mean of the levels' finished residual maps (each
    residual over the healthy spread there when `setting.normative`) and the reconstruction shown is the
    middle level's."""
    z0 = batch.latents(pipe)
    cond = torch.cat([pipe.encode_prompt(a.healthy_prompt())[0] for a in batch.attributes])
    uncond = pipe.encode_prompt("")[0].expand_as(cond)
    spread = _spread(batch, normal if setting.normative else None)
    maps, recons = [], []
    for level in setting.levels:
        healed = batch.decoded(pipe, pseudo_healthy_latents(pipe, z0, cond, uncond, level, setting))
        if setting.match_intensity:
            healed = np.stack([match_intensity(h, x, brain_mask(x)) for h, x in zip(healed, batch.images,
                                                                                       strict=True)])
        recons.append(healed)
        maps.append(_finished((batch.images - healed) / spread, batch.images))
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
        if setting.normative and normal is None:
            raise ValueError(f"method {name} weighs residuals by the healthy spread: it needs a normal model")
        return run_diffusion(pipe, batch, setting, normal)
    if name == "vae_error":
        return run_vae_error(pipe, batch)
    if name == "latent_z":
        return run_latent_z(pipe, batch, normal)
    return run_intensity_z(batch, normal)
