"""The ageing network: a slice at one age -> the same slice at another age, as the input plus a predicted change.

A diffusers `UNet2DModel` (plain residual blocks, no attention) whose class embedding (`class_embed_type=
"identity"`, added to the time embedding in every residual block) is a small MLP of the gap in decades and the
source age, since how fast a brain changes depends on how old it is (the timestep itself is unused, fixed at 0).
Numbers go in as numbers: sinusoidal timestep features of the gap were tried first and, with the change
below, nothing was learned in 400 steps. The predicted change is multiplied by the gap in decades: a zero gap
returns the slice exactly, and ageing and rejuvenation by the same gap ask for opposite changes of one size,
which the network learns once; without the factor the two directions average to no change until the gap
embedding is learned, and it was not. The output convolution starts at zero, so an untrained network is the
copy-the-baseline prediction and training moves away from it only where the data say so. With `warp`, the
output is a displacement (pixels per decade) and an intensity change. Trained on the simulated longitudinal
cohort (training/ageing.py): pairs of sessions of one person, same contrast, plane and level. Files: fp16
safetensors + config.json; pickles are never read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from dallebrain.models.net_folder import CONFIG_FILE, WEIGHTS_FILE  # noqa: F401 (re-exported)

SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "ageing"
AGE_RANGE = (0.0, 110.0)  # ages the network accepts (years); a gap is the difference of two of them
DECADE = 10.0  # gaps enter in decades, ages in centuries: inputs of order one


@dataclass
class AgeingNetConfig:
    channels: tuple[int, ...] = (16, 32, 64, 128)
    layers_per_block: int = 1
    image_size: int = 128  # the prepared grid it was trained on (128 px over 192 mm); other sizes are resampled
    training: dict = field(default_factory=dict)  # data provenance (name, metadata hash), steps, loss
    warp: bool = False  # predict a displacement (pixels per decade) and an intensity change instead of a change only
    downsample: int = 1  # the UNet sees the slice pooled by this factor; its (smooth) output is upsampled back
    intensity: bool = True  # warp models: an intensity change besides the displacement (False: moved tissue only)
    linear_in_gap: bool = False  # the embedding sees only the gap's sign: the change is exactly gap x a field

    @classmethod
    def from_dict(cls, d: dict) -> AgeingNetConfig:
        return cls(tuple(int(c) for c in d["channels"]), int(d["layers_per_block"]), int(d["image_size"]),
                   dict(d.get("training", {})), bool(d.get("warp", False)), int(d.get("downsample", 1)),
                   bool(d.get("intensity", True)), bool(d.get("linear_in_gap", False)))


def build_unet(config: AgeingNetConfig):
    from diffusers import UNet2DModel

    n = len(config.channels)
    return UNet2DModel(sample_size=config.image_size, in_channels=1, out_channels=output_channels(config),
                       block_out_channels=config.channels, layers_per_block=config.layers_per_block,
                       down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n,
                       add_attention=False, class_embed_type="identity", norm_num_groups=8)


def output_channels(config: AgeingNetConfig) -> int:
    """An intensity change (1), or a displacement (2) with or without an intensity change."""
    return 1 if not config.warp else 2 + int(config.intensity)


def check_ages(ages, name: str) -> torch.Tensor:
    values = torch.as_tensor(np.asarray(ages, dtype=np.float32)).reshape(-1)
    if not torch.isfinite(values).all() or (values < AGE_RANGE[0]).any() or (values > AGE_RANGE[1]).any():
        raise ValueError(f"{name} must be ages between {AGE_RANGE[0]:g} and {AGE_RANGE[1]:g} years")
    return values


class AgeingNet(nn.Module):
    """forward(slices [N,1,H,W] in [0,1], source ages [N], target ages [N]) -> predicted slices (unclipped)."""

    def __init__(self, config: AgeingNetConfig):
        super().__init__()
        self.config = config
        self.unet = build_unet(config)
        width = config.channels[0] * 4  # UNet2DModel's time-embedding width
        self.condition = nn.Sequential(nn.Linear(2, width), nn.SiLU(), nn.Linear(width, width))
        nn.init.zeros_(self.unet.conv_out.weight)
        nn.init.zeros_(self.unet.conv_out.bias)

    def forward(self, x: torch.Tensor, source_age: torch.Tensor, target_age: torch.Tensor) -> torch.Tensor:
        return compose(x, *self.fields(x, source_age, target_age))

    def fields(self, x: torch.Tensor, source_age: torch.Tensor, target_age: torch.Tensor):
        """(displacement [N,2,H,W] in pixels, or None without `warp`; intensity change [N,1,H,W]), both
        already times the gap in decades and at x's resolution. Training warps the source's tissue labels with
        the same displacement (training/ageing.py)."""
        decades = ((target_age - source_age) / DECADE).to(x.device)
        gap = torch.sign(decades) if self.config.linear_in_gap else decades
        ages = torch.stack([gap, source_age.to(x.device) / 100.0], dim=1)
        embedding = self.condition(ages)
        factor = self.config.downsample
        seen = x if factor == 1 else functional.avg_pool2d(x, factor)
        change = self.unet(seen, torch.zeros_like(decades), class_labels=embedding).sample.to(x.dtype)
        change = decades[:, None, None, None] * change
        if factor != 1:
            change = functional.interpolate(change, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if not self.config.warp:
            return None, change
        displacement = change[:, :2] * factor
        return displacement, change[:, 2:] if self.config.intensity else torch.zeros_like(x)


def without_intensity(net: AgeingNet) -> AgeingNet:
    """The same warp network with its intensity-change output removed (its displacement unchanged): to continue
    training a model as displacement only."""
    from dataclasses import replace

    if not net.config.warp:
        raise ValueError("only a warp model can drop its intensity change")
    if not net.config.intensity:
        return net
    slim = AgeingNet(replace(net.config, intensity=False))
    state = dict(net.state_dict())
    state["unet.conv_out.weight"] = state["unet.conv_out.weight"][:2]
    state["unet.conv_out.bias"] = state["unet.conv_out.bias"][:2]
    slim.load_state_dict(state)
    return slim.train(net.training)


def compose(x: torch.Tensor, displacement: torch.Tensor | None, change: torch.Tensor) -> torch.Tensor:
    """The predicted slice from `fields`: the source moved by the displacement (if any), plus the change."""
    return (x if displacement is None else warp(x, displacement)) + change


def warp(x: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """x [N,1,H,W] sampled at each pixel + displacement [N,2,H,W] (pixels; x then y), bilinear, zeros outside.
    Ageing moves tissue (ventricles widen, sulci open): a displacement carries the source's own texture along,
    where an intensity change alone would have to paint it."""
    n, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=x.device), torch.linspace(-1, 1, w, device=x.device),
                            indexing="ij")
    grid = torch.stack([xs, ys], dim=-1)[None] + torch.stack(
        [displacement[:, 0] * 2 / max(w - 1, 1), displacement[:, 1] * 2 / max(h - 1, 1)], dim=-1)
    return functional.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)


def save_ageing_net(net: AgeingNet, folder: Path) -> None:
    """fp16 safetensors + config.json (models/net_folder.py: through temporary files)."""
    from dallebrain.models.net_folder import save_net_folder

    save_net_folder(net, asdict(net.config), folder)


def load_ageing_net(folder: str | Path | None = None) -> AgeingNet:
    """The network in `folder` (the shipped one by default), float32 for inference; one-line ValueError for a
    missing or foreign folder (models/net_folder.py; pickles are never read)."""
    from dallebrain.models.net_folder import load_net_folder

    return load_net_folder(SHIPPED if folder is None else folder, lambda d: AgeingNet(AgeingNetConfig.from_dict(d)),
                           "ageing model")
