"""Checks and reads of a pipeline folder: safetensors only, every component present, sizes in bounds, one-line
errors that name the file."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from dallebrain.vocab import PICKLE_SUFFIXES

LDM_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
UNCLIP_COMPONENTS = ("clip", "vae", "prior", "decoder")
# Bounds on what a folder's config.json may ask of a generation. The latent noise and every activation grow with
# the square of the side, so an unchecked sample_size (1024, 100000) allocates without limit before anything fails.
MAX_IMAGE_SIDE = 1024  # pixels, as `dallebrain data prepare --size` allows
MAX_LATENT_SIDE = 256  # the denoiser's sample_size (1024 px over the smallest VAE factor, 4)
MAX_LATENT_CHANNELS = 16
MAX_VAE_LEVELS = 6  # block_out_channels entries: downsampling factor up to 32
SCALING_FACTOR_RANGE = (1e-4, 1e4)  # 1 / std of the training latents; outside this the latents are numerically void


class ModelFolderError(ValueError):
    """A model folder that cannot be used (missing, incomplete, or holding pickle weights)."""


def check_model_folder(folder: str | Path, components: tuple[str, ...] = LDM_COMPONENTS,
                       image_channels: tuple[int, ...] = (1,)) -> Path:
    """The folder, checked before any weight loads. image_channels: what the VAE may read and write (our
    pipelines: grey-scale; a LoRA base may be a stock RGB Stable Diffusion folder: (1, 3))."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"model folder not found: {folder}")
    pickles = [p for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise ModelFolderError(f"refusing pickle weights ({pickles[0].relative_to(folder)}): "
                               "safetensors only")
    for name in components:
        sub = folder / name
        if not sub.is_dir() or not any(sub.iterdir()):
            raise ModelFolderError(f"incomplete model folder {folder}: '{name}/' is missing")
        if name in ("unet", "vae", "text_encoder", "prior", "decoder", "clip") and not any(
                p.suffix == ".safetensors" for p in sub.iterdir()):
            raise ModelFolderError(f"incomplete model folder {folder}: no safetensors weights in '{name}/'")
    denoiser = next((name for name in ("unet", "decoder") if name in components), None)
    if denoiser and "vae" in components:
        check_model_configs(folder, denoiser, image_channels)
    return folder


def read_config(path: Path) -> dict:
    """A component's config.json as a dict, or a ModelFolderError naming the file."""
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFolderError(f"model config missing: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"model config {path} is not readable JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise ModelFolderError(f"model config {path} must hold a JSON object")
    return config


def _whole(config: dict, key: str, low: int, high: int, path: Path) -> int:
    value = config.get(key)
    # bool is an int to Python, not to a config reader
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ModelFolderError(f"model config {path}: {key} must be a whole number in [{low}, {high}], got {value!r}")
    return value


def check_model_configs(folder: str | Path, denoiser: str = "unet",
                        image_channels: tuple[int, ...] = (1,)) -> tuple[dict, dict]:
    """The denoiser's and the VAE's config.json, checked against the bounds above before any weight is loaded:
    (denoiser config, vae config)."""
    folder = Path(folder)
    unet_path, vae_path = folder / denoiser / "config.json", folder / "vae" / "config.json"
    unet, vae = read_config(unet_path), read_config(vae_path)
    side = _whole(unet, "sample_size", 1, MAX_LATENT_SIDE, unet_path)
    channels = _whole(unet, "in_channels", 1, MAX_LATENT_CHANNELS, unet_path)
    if unet.get("out_channels") != channels:
        raise ModelFolderError(f"model config {unet_path}: out_channels {unet.get('out_channels')!r} must equal "
                               f"in_channels {channels}")
    for key in ("in_channels", "out_channels"):  # grey-scale slices (or RGB where the caller accepts it)
        if _whole(vae, key, 1, max(image_channels), vae_path) not in image_channels:
            raise ModelFolderError(f"model config {vae_path}: {key} must be one of {list(image_channels)}, "
                                   f"got {vae[key]!r}")
    if _whole(vae, "latent_channels", 1, MAX_LATENT_CHANNELS, vae_path) != channels:
        raise ModelFolderError(f"model config {vae_path}: latent_channels {vae['latent_channels']} differs from "
                               f"the {channels} input channels of {unet_path}")
    levels = vae.get("block_out_channels")
    if not isinstance(levels, list) or not 1 <= len(levels) <= MAX_VAE_LEVELS:
        raise ModelFolderError(f"model config {vae_path}: block_out_channels must list 1 to {MAX_VAE_LEVELS} "
                               f"levels, got {levels!r}")
    if side * 2 ** (len(levels) - 1) > MAX_IMAGE_SIDE:
        raise ModelFolderError(f"model config {unet_path}: sample_size {side} gives {side * 2 ** (len(levels) - 1)} "
                               f"px images (VAE factor {2 ** (len(levels) - 1)}); at most {MAX_IMAGE_SIDE}")
    scale = vae.get("scaling_factor", 1.0)
    low, high = SCALING_FACTOR_RANGE
    number = isinstance(scale, (int, float)) and not isinstance(scale, bool)
    if not (number and math.isfinite(scale) and low <= scale <= high):
        raise ModelFolderError(f"model config {vae_path}: scaling_factor must be a number in [{low:g}, {high:g}], "
                               f"got {scale!r}")
    return unet, vae


def folder_hash(folder: str | Path) -> str:
    """sha256 over the folder's weight and config files (names and bytes): the model hash in sidecars."""
    folder = Path(folder)
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".safetensors", ".json", ".txt") and "checkpoints" not in path.parts:
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def read_info(folder: str | Path) -> dict:
    """dallebrain.json: what the pipeline was trained on (image size, grid, data card summary)."""
    path = Path(folder) / "dallebrain.json"
    return json.loads(path.read_text()) if path.exists() else {}


def model_grid(model_dir: str | Path):
    """The MNI grid of a pipeline folder's slices (a `VolumeGrid`), from its configs and dallebrain.json alone
    (no weight is loaded): the grid it records at its image size, else the default grid of prepared sets."""
    from dallebrain.data.grid import grid_in_info, prepared_grid

    model_dir = check_model_folder(model_dir)
    unet, vae = check_model_configs(model_dir)
    size = int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
    return grid_in_info(read_info(model_dir), size) or prepared_grid(size)
