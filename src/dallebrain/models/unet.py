"""The latent-diffusion UNet (diffusers `UNet2DConditionModel`) cross-attending to MiniLM token states."""

from __future__ import annotations

from dataclasses import dataclass, field

from dallebrain.models.text import HIDDEN_SIZE
from dallebrain.vocab import SAMPLERS, concrete_sampler  # SAMPLERS re-exported beside make_scheduler


@dataclass
class UnetConfig:
    """Size of the denoiser; the defaults are the ~17 M-parameter model DESIGN.md measured on this CPU."""

    sample_size: int = 32  # latent side (128 px / VAE factor 4)
    latent_channels: int = 4  # must match the VAE
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 256])  # one per resolution level
    layers_per_block: int = 1  # ResNet blocks per level
    attention_head_dim: int = 8  # channels per attention head
    cross_attention_levels: int = 2  # the N lowest-resolution levels get attention (cheapest: 8x8 vs 32x32 tokens)
    cross_attention_dim: int = HIDDEN_SIZE  # MiniLM hidden size
    norm_num_groups: int = 32
    extra_condition_tokens: int = 0  # >0: an unCLIP decoder adds image-embedding tokens (see models/decoder)
    attributes: bool = False  # structured attribute conditioning (models/conditioning.py) beside the text
    # with attributes: the level's finer Fourier features appended (conditioning.FINE_LEVEL_FREQUENCIES); a UNet
    # of the base layout fine-tunes into it with init_from, the new inputs starting at zero weight
    fine_level: bool = False


def build_unet(config: UnetConfig):
    """A UNet2DConditionModel whose `cross_attention_levels` lowest-resolution levels hold (self- and cross-)
    attention. Attention cost grows with the square of the token count, so on a CPU it belongs where the
    feature maps are small (measured: with attention at the 32x32 level a 3.4 M-parameter UNet trained at
    2.7 s/step, batch 16). The folder still loads in a stock diffusers pipeline."""
    from diffusers import UNet2DConditionModel

    n = len(config.block_out_channels)
    levels = min(config.cross_attention_levels, n)
    down = ["DownBlock2D"] * (n - levels) + ["CrossAttnDownBlock2D"] * levels  # high -> low resolution
    up = ["CrossAttnUpBlock2D"] * levels + ["UpBlock2D"] * (n - levels)  # low -> high resolution
    attributes = {}
    if config.attributes:
        from dallebrain.models.conditioning import feature_width

        attributes = {"class_embed_type": "projection",
                      "projection_class_embeddings_input_dim": feature_width(config.fine_level)}
    unet = UNet2DConditionModel(
        sample_size=config.sample_size, in_channels=config.latent_channels, out_channels=config.latent_channels,
        down_block_types=tuple(down), up_block_types=tuple(up),
        block_out_channels=tuple(config.block_out_channels), layers_per_block=config.layers_per_block,
        attention_head_dim=config.attention_head_dim, cross_attention_dim=config.cross_attention_dim,
        norm_num_groups=config.norm_num_groups, **attributes,
    )
    if config.attributes:
        zero_attribute_output(unet)
    return unet


def zero_attribute_output(unet) -> None:
    """Start the attribute embedding at zero output (as ControlNet's zero convolutions): a UNet initialised
    from a text-only model is that model exactly at step 0, and the attributes' effect grows from there."""
    import torch

    with torch.no_grad():
        unet.class_embedding.linear_2.weight.zero_()
        unet.class_embedding.linear_2.bias.zero_()


def _trained_state(folder):
    """(the UNet folder, its tensors as float32) of a UNet folder or a pipeline folder holding unet/."""
    from pathlib import Path

    from safetensors.torch import load_file

    folder = Path(folder)
    folder = folder / "unet" if (folder / "unet").is_dir() else folder
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"no UNet weights (.safetensors) in {folder}")
    return folder, {k: v.float() for f in files for k, v in load_file(f).items()}


def load_initial_weights(unet, folder) -> list[str]:
    """Copy a trained UNet's weights (a UNet folder or a pipeline folder holding unet/) into `unet`, which may
    add the attribute embedding: fine-tuning a text-only model into an attribute-conditioned one, or widen its
    input to the fine level layout (the new inputs' weights start at zero, so step 0 is the trained model exactly).
    Returns the parameters left at their initial value; any other mismatch is a one-line ValueError."""
    import torch

    from dallebrain.models.conditioning import feature_width

    folder, state = _trained_state(folder)
    own = unet.state_dict()
    key = "class_embedding.linear_1.weight"
    if key in state and key in own and own[key].shape[0] == state[key].shape[0] \
            and (state[key].shape[1], own[key].shape[1]) == (feature_width(), feature_width(True)):
        widened = torch.zeros_like(own[key])
        widened[:, :state[key].shape[1]] = state[key]
        state[key] = widened
    wrong = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if wrong:
        raise ValueError(f"the UNet in {folder} has another architecture ({len(wrong)} tensors differ, e.g. "
                         f"{wrong[0]}): set the same unet.* settings")
    left = [k for k in own if k not in state]
    if any(not k.startswith("class_embedding.") for k in left):
        raise ValueError(f"the UNet in {folder} lacks {len(left)} tensors of this architecture, e.g. {left[0]}")
    unet.load_state_dict(state, strict=False)
    return left


def load_matching_weights(unet, folder) -> tuple[int, list[str]]:
    """Warm start: copy every tensor of a trained UNet (a UNet folder or a pipeline folder holding unet/) whose
    name and shape this `unet` shares; the rest keep their initial values. For a UNet with other conditioning (the
    unCLIP decoder from the LDM: the same blocks, cross-attention keys and values of another width, an image
    projection instead of text), so only the conditioning path starts from scratch. Returns (tensors copied, names
    left at their initial value); a folder without weights or sharing nothing is a one-line ValueError."""
    folder, state = _trained_state(folder)
    own = unet.state_dict()
    shared = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not shared:
        raise ValueError(f"the UNet in {folder} shares no tensor with this one: another architecture")
    unet.load_state_dict(shared, strict=False)
    return len(shared), [k for k in own if k not in shared]


# what the UNet predicts: the noise (Stable Diffusion 1.x), or the velocity sqrt(a) noise - sqrt(1 - a) latent
# (Salimans & Ho 2022; Stable Diffusion 2.x "-v"), whose clean-latent estimate at high noise is not the noise
# prediction's error amplified 1 / sqrt(a) ~ 15x (BENCHMARKS.md "Why PD-weighted slices clip white")
PREDICTION_TYPES = ("epsilon", "v_prediction")


def noise_scheduler_config(prediction_type: str = "epsilon") -> dict:
    """The training noise schedule (Stable Diffusion's scaled-linear betas) for a UNet predicting
    `prediction_type`; every sampler is built from it so training and sampling agree. ValueError (one line)
    for a prediction type not in PREDICTION_TYPES."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {prediction_type!r}")
    return {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "prediction_type": prediction_type, "clip_sample": False,
            "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "leading"}


def trained_prediction_type(folder) -> str | None:
    """What a trained UNet predicts, read from the noise schedule saved beside it: a pipeline folder's
    scheduler/, a decoder folder's own scheduler_config.json, or the scheduler/ beside a pipeline's unet/. None
    when no schedule is found (a bare UNet folder says nothing about its objective)."""
    import json
    from pathlib import Path

    folder = Path(folder)
    for path in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json",
                 folder.parent / "scheduler" / "scheduler_config.json"):
        if path.is_file():
            try:
                value = json.loads(path.read_text()).get("prediction_type", "epsilon")
            except (ValueError, AttributeError) as err:
                raise ValueError(f"unreadable noise schedule {path}: {err}") from None
            noise_scheduler_config(value)  # a type no stage can train: refused here, one line
            return value
    return None


def make_scheduler(sampler: str = "dpm", base_config: dict | None = None):
    """A diffusers scheduler for a sampler name (vocab.SAMPLER_CHOICES; "auto" here is its fallback, the
    per-contrast choice being the pipeline's), with the training noise schedule."""
    import diffusers

    sampler = concrete_sampler(sampler)
    cls = getattr(diffusers, SAMPLERS[sampler])
    config = dict(base_config or noise_scheduler_config())
    if sampler in ("dpm", "dpm-karras"):
        config.update(algorithm_type="dpmsolver++", solver_order=2)
        if sampler == "dpm-karras":  # Karras et al.'s noise levels from the spaced start: models/karras.py
            from dallebrain.models.karras import SpacedStartKarrasScheduler

            config.update(use_karras_sigmas=True)
            cls = SpacedStartKarrasScheduler
    elif sampler == "dpm-sde":  # second order, as the ODE form; the step noise comes from the caller
        config.update(algorithm_type="sde-dpmsolver++", solver_order=2)
    return cls.from_config(config)
