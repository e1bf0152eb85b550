"""The latent-diffusion UNet (diffusers `UNet2DConditionModel`) cross-attending to MiniLM token states."""

from __future__ import annotations

from dataclasses import dataclass, field

from dallebrain.models.text import HIDDEN_SIZE


@dataclass
class UnetConfig:
    """Size of the denoiser; the defaults are the ~17 M-parameter model DESIGN.md measured on this CPU."""

    sample_size: int = 32  # latent side (128 px / VAE factor 4)
    latent_channels: int = 4  # must match the VAE
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 256])  # one per resolution level
    layers_per_block: int = 1  # ResNet blocks per level
    attention_head_dim: int = 8  # channels per attention head
    cross_attention_levels: int = 2  # the first N levels get cross-attention (the lowest-resolution ones cost least)
    cross_attention_dim: int = HIDDEN_SIZE  # MiniLM hidden size
    norm_num_groups: int = 32
    extra_condition_tokens: int = 0  # >0: an unCLIP decoder adds image-embedding tokens (see models/decoder)


def build_unet(config: UnetConfig):
    """A UNet2DConditionModel whose first `cross_attention_levels` levels hold cross-attention, so the
    saved folder loads in a stock diffusers pipeline."""
    from diffusers import UNet2DConditionModel

    n = len(config.block_out_channels)
    levels = min(config.cross_attention_levels, n)
    down = ["CrossAttnDownBlock2D"] * levels + ["DownBlock2D"] * (n - levels)
    up = ["UpBlock2D"] * (n - levels) + ["CrossAttnUpBlock2D"] * levels
    return UNet2DConditionModel(
        sample_size=config.sample_size, in_channels=config.latent_channels, out_channels=config.latent_channels,
        down_block_types=tuple(down), up_block_types=tuple(up),
        block_out_channels=tuple(config.block_out_channels), layers_per_block=config.layers_per_block,
        attention_head_dim=config.attention_head_dim, cross_attention_dim=config.cross_attention_dim,
        norm_num_groups=config.norm_num_groups,
    )


def noise_scheduler_config() -> dict:
    """The training noise schedule (Stable Diffusion's scaled-linear betas, epsilon prediction); every
    sampler is built from it so training and sampling agree."""
    return {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "clip_sample": False,
            "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "leading"}


SAMPLERS = {
    "dpm": "DPMSolverMultistepScheduler",  # DPM-Solver++ (Lu et al. 2022)
    "ddim": "DDIMScheduler",  # Song et al. 2021
    "euler": "EulerDiscreteScheduler",  # Karras et al. 2022
}


def make_scheduler(sampler: str = "dpm", base_config: dict | None = None):
    """A diffusers scheduler for a sampler name, with the training noise schedule."""
    import diffusers

    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}: choose from {', '.join(SAMPLERS)}")
    cls = getattr(diffusers, SAMPLERS[sampler])
    config = dict(base_config or noise_scheduler_config())
    if sampler == "dpm":
        config.update(algorithm_type="dpmsolver++", solver_order=2)
    return cls.from_config(config)
