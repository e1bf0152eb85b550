"""The patch discriminator that sharpens the VAE's decoder (training only; never shipped).

A PatchGAN (Isola et al. 2017), as in the Stable Diffusion / taming autoencoder recipe and MONAI's
`PatchDiscriminator`: 4x4 convolutions, stride 2 while the receptive field grows, then two stride-1 layers,
one logit per overlapping patch. It judges local texture (sulci, the grey/white border), which the pixel losses
average away into blur. GroupNorm instead of their BatchNorm: the generator's pass runs the same network a
second time on other images (`features` with detached weights), which would move BatchNorm's batch statistics.
Neither library is a dependency here (MONAI is not installed, taming is not packaged), and the network is these
few layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class DiscriminatorConfig:
    channels: int = 32  # channels of the first layer, doubled per stride-2 layer (capped at 8x)
    layers: int = 3  # stride-2 layers: receptive field 34 px with 2, 70 px with 3 (at 128x128: a gyrus or two)
    in_channels: int = 1


class PatchDiscriminator(nn.Module):
    """(B, 1, H, W) images in [-1, 1] -> the feature maps of every block; the last is the patch logits."""

    def __init__(self, config: DiscriminatorConfig | None = None):
        super().__init__()
        config = config or DiscriminatorConfig()
        if config.layers < 1 or config.channels < 1:
            raise ValueError(f"a discriminator needs layers >= 1 and channels >= 1, got {config}")
        self.config = config
        width = [config.channels * min(2 ** i, 8) for i in range(config.layers + 1)]
        blocks = [nn.Sequential(nn.Conv2d(config.in_channels, width[0], 4, 2, 1), nn.LeakyReLU(0.2))]
        for i in range(1, config.layers + 1):
            stride = 2 if i < config.layers else 1
            blocks.append(nn.Sequential(nn.Conv2d(width[i - 1], width[i], 4, stride, 1, bias=False),
                                        nn.GroupNorm(min(8, width[i]), width[i]), nn.LeakyReLU(0.2)))
        blocks.append(nn.Conv2d(width[-1], 1, 4, 1, 1))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features


def features_frozen(discriminator: PatchDiscriminator, x: torch.Tensor) -> list[torch.Tensor]:
    """The discriminator's features of `x` with its weights treated as constants: gradients reach `x` (the
    decoder) but not the discriminator, so the generator's loss does not train the discriminator to lose."""
    params = {name: p.detach() for name, p in discriminator.named_parameters()}
    return torch.func.functional_call(discriminator, params, (x,))


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss (Lim & Ye 2017; the SD autoencoder's): real patches above +1, fake below -1."""
    return 0.5 * (torch.relu(1 - real_logits).mean() + torch.relu(1 + fake_logits).mean())


def feature_matching_loss(fake: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
    """Mean L1 between the discriminator's inner features of decoded and real images (Salimans et al. 2016;
    pix2pixHD), the logits excluded: a perceptual-style loss learnt on brains, as no pretrained perceptual
    network (VGG / LPIPS) is available offline."""
    pairs = list(zip(fake[:-1], real[:-1], strict=True))
    return sum((f - r.detach()).abs().mean() for f, r in pairs) / max(1, len(pairs))
