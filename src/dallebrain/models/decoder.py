"""The unCLIP decoder: a diffusers `UNet2DConditionModel` denoising VAE latents conditioned on a Brain-CLIP image
embedding the Kandinsky 2.2 way: `encoder_hid_dim_type="image_proj"` turns the embedding into 32 cross-attention
tokens (diffusers' `ImageProjection`), and `addition_embed_type="image"` adds it to the timestep embedding too.
Both read `added_cond_kwargs={"image_embeds": (B, D)}`; the zero embedding is the unconditional input.

With `unet.attributes` the decoder also reads the prompt's attribute features (models/conditioning.py) through
the class embedding, as the LDM does, the way DALL-E 2's decoder also reads the caption. Why: a Brain-CLIP image
embedding holds plane, contrast and level but not age (the unCLIP route's age judge read 17.2 years against a
chance of 17.3, the LDM's 13.4), so what the prompt states exactly must reach the decoder by another path."""

from __future__ import annotations

from pathlib import Path

import torch

from dallebrain.models.unet import UnetConfig, build_unet, noise_scheduler_config

DECODER_SCHEDULER_FILE = "scheduler_config.json"  # the noise schedule travels inside the decoder's folder


def build_decoder(config: UnetConfig, image_embed_dim: int):
    """The UNet of `build_unet` (same levels, same cross-attention placement) reading an image embedding of
    size `image_embed_dim` instead of text-token states."""
    from diffusers import UNet2DConditionModel

    # private keys (e.g. "_use_default_values") would make from_pretrained drop our settings
    layout = {k: v for k, v in build_unet(config).config.items() if not k.startswith("_")}
    layout.update(encoder_hid_dim_type="image_proj", encoder_hid_dim=image_embed_dim, addition_embed_type="image")
    unet = UNet2DConditionModel.from_config(layout)
    if config.attributes:  # as build_unet: the attributes' effect starts at zero (a warm start copies the LDM's)
        from dallebrain.models.unet import zero_attribute_output

        zero_attribute_output(unet)
    return unet


def image_embed_dim_of(unet) -> int:
    return int(unet.config.encoder_hid_dim)


def decoder_inputs(image_embeds: torch.Tensor, attributes: torch.Tensor | None = None) -> dict:
    """The UNet keyword arguments that carry the embedding (and, for a decoder with attributes, the attribute
    features (B, F)). `encoder_hidden_states` is replaced inside the UNet by the embedding's projection; it is
    passed only because the UNet's signature requires it."""
    inputs = {"encoder_hidden_states": image_embeds[:, None, :], "added_cond_kwargs": {"image_embeds": image_embeds}}
    if attributes is not None:
        inputs["class_labels"] = attributes
    return inputs


def decoder_scheduler_config(prediction_type: str = "epsilon") -> dict:
    """The decoder is trained on the LDM's noise schedule, so every sampler of `make_scheduler` applies; it
    predicts the noise or, warm-started from a velocity-predicting LDM, the velocity."""
    return noise_scheduler_config(prediction_type)


def save_decoder(unet, folder: str | Path, prediction_type: str = "epsilon") -> Path:
    """save_pretrained (safetensors) plus the decoder's noise schedule (what it predicts included)."""
    import json

    from dallebrain.data.io import write_text_atomic

    folder = Path(folder)
    unet.save_pretrained(folder, safe_serialization=True)
    schedule = decoder_scheduler_config(prediction_type)
    write_text_atomic(folder / DECODER_SCHEDULER_FILE, json.dumps(schedule, indent=2) + "\n")
    return folder


def load_decoder(folder: str | Path):
    """(UNet, scheduler config) from a folder written by `save_decoder` (safetensors only)."""
    import json

    from diffusers import UNet2DConditionModel

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"not a decoder folder (no config.json): {folder}")
    unet = UNet2DConditionModel.from_pretrained(folder, use_safetensors=True)
    if unet.config.encoder_hid_dim_type != "image_proj":
        raise ValueError(f"{folder} is not an unCLIP decoder (encoder_hid_dim_type is "
                         f"{unet.config.encoder_hid_dim_type!r}, expected 'image_proj')")
    sched_path = folder / DECODER_SCHEDULER_FILE
    scheduler_config = json.loads(sched_path.read_text()) if sched_path.is_file() else decoder_scheduler_config()
    scheduler_config.pop("_class_name", None)
    scheduler_config.pop("_diffusers_version", None)
    return unet.eval(), scheduler_config
