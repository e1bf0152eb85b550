"""The image autoencoder of the latent diffusion routes: a 1-channel diffusers `AutoencoderKL`.

Convention (as in Stable Diffusion): the network sees images mapped to [-1, 1]; `encode_images` and
`decode_latents` take and give images in [0, 1] and do that mapping, and latents leave `encode_images`
already multiplied by `config.scaling_factor` (set at export to 1 / std of training latents), so a
diffusion model sees latents of about unit variance and a stock `StableDiffusionPipeline` decodes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dallebrain.vocab import PICKLE_SUFFIXES

# Weight files that unpickle arbitrary code when loaded; a VAE folder must hold safetensors only.
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


@dataclass
class VaeConfig:
    """Architecture of the VAE; the downsampling factor is 2 ** (len(block_out_channels) - 1)."""

    latent_channels: int = 4  # channels of the latent image the diffusion model works on
    block_out_channels: tuple[int, ...] = (32, 64, 64)  # channels per resolution level; 3 levels: factor 4
    layers_per_block: int = 1  # ResNet blocks per level (the decoder has one more, as in diffusers)
    norm_num_groups: int = 8  # GroupNorm groups; must divide every entry of block_out_channels
    mid_block_attention: bool = True  # self-attention at the lowest resolution (global context, some cost)
    sample_size: int = 128  # image side the model is meant for (diffusers uses it only for tiling)

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


def build_vae(config: VaeConfig):
    """A freshly initialised 1-channel `diffusers.AutoencoderKL` (scaling_factor 1 until training sets it)."""
    from diffusers import AutoencoderKL

    channels = tuple(int(c) for c in config.block_out_channels)
    bad = [c for c in channels if c % config.norm_num_groups]
    if bad:
        raise ValueError(f"norm_num_groups={config.norm_num_groups} must divide every block_out_channels "
                         f"entry; it does not divide {bad}")
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=channels,
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        sample_size=config.sample_size,
        scaling_factor=1.0,
        mid_block_add_attention=config.mid_block_attention,
    )


def encode_images(vae, images: torch.Tensor, sample: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, 1, H, W) images in [0, 1] -> scaled latents (B, C, H/f, W/f).

    The posterior mean by default, so cached latents are deterministic; `sample=True` draws from the
    posterior instead (a little noise that can regularise a diffusion model)."""
    x = images.to(device=vae.device, dtype=vae.dtype) * 2 - 1
    posterior = vae.encode(x).latent_dist
    latents = posterior.sample(generator) if sample else posterior.mode()
    return latents * vae.config.scaling_factor


def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> (B, 1, H, W) images in [0, 1] (clamped)."""
    z = latents.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor
    return ((vae.decode(z).sample + 1) / 2).clamp(0, 1)


def load_vae(folder: str | Path):
    """An `AutoencoderKL` from a save_pretrained folder (or a pipeline folder with a `vae/` subfolder).

    Only safetensors weights are read: a folder holding pickle weights is refused, since loading them can
    run arbitrary code."""
    from diffusers import AutoencoderKL

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"VAE folder not found: {folder}")
    if not (folder / "config.json").is_file() and (folder / "vae" / "config.json").is_file():
        folder = folder / "vae"
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ValueError(f"refusing pickle weights in {folder} ({', '.join(pickles)}): convert them to "
                         "safetensors")
    missing = [name for name in ("config.json", WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"incomplete VAE folder {folder}: missing {', '.join(missing)}")
    return AutoencoderKL.from_pretrained(folder, use_safetensors=True)
