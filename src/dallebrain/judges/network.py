"""The tissue segmenter's network: a small U-Net (plain convolutions, no attention), its config, and its
files (safetensors fp16 + config.json). Small on purpose: a judge runs beside the generator on CPU."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from dallebrain.models.net_folder import CONFIG_FILE, WEIGHTS_FILE  # noqa: F401 (re-exported)

# What the segmenter tells apart. CSF is split in two: the ventricles carry age in this cohort, the rest of the
# CSF (sulci, cisterns) much less.
CLASSES = ("background", "csf", "ventricles", "gm", "wm")
# Label PNG values (data.slicing.TISSUE_LABELS) -> class index; a lesion (4) is left out of the loss.
LABEL_TO_CLASS = {0: 0, 1: 1, 5: 2, 2: 3, 3: 4}
IGNORE = 255


@dataclass
class TissueNetConfig:
    channels: tuple[int, ...] = (16, 32, 64, 96)
    image_size: int = 128  # the pixel grid it was trained on (128 px over 192 mm); other sizes are resampled
    classes: tuple[str, ...] = CLASSES
    training: dict = field(default_factory=dict)  # data provenance (name, metadata hash), steps, loss

    @classmethod
    def from_dict(cls, d: dict) -> TissueNetConfig:
        return cls(tuple(d["channels"]), int(d["image_size"]), tuple(d["classes"]), dict(d.get("training", {})))


def _block(cin: int, cout: int) -> nn.Sequential:
    groups = max(1, cout // 8)
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU())


class TissueNet(nn.Module):
    """U-Net: one conv block per level, max-pool down, nearest up + skip concatenation; logits per class."""

    def __init__(self, config: TissueNetConfig):
        super().__init__()
        ch = config.channels
        self.config = config
        self.down = nn.ModuleList(_block(cin, cout) for cin, cout in zip((1, *ch[:-2]), ch[:-1], strict=True))
        self.bottom = _block(ch[-2], ch[-1])
        self.up = nn.ModuleList(_block(ch[i + 1] + ch[i], ch[i]) for i in reversed(range(len(ch) - 1)))
        self.head = nn.Conv2d(ch[0], len(config.classes), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = nn.functional.max_pool2d(x, 2)
        x = self.bottom(x)
        for block in self.up:
            skip = skips.pop()
            x = block(torch.cat([nn.functional.interpolate(x, size=skip.shape[-2:]), skip], dim=1))
        return self.head(x)


def save_tissue_net(net: TissueNet, folder: Path) -> None:
    """fp16 safetensors + config.json (models/net_folder.py: through temporary files)."""
    from dallebrain.models.net_folder import save_net_folder

    save_net_folder(net, asdict(net.config), folder)


def load_tissue_net(folder: str | Path) -> TissueNet:
    """The network in `folder`, float32 for inference; one-line ValueError for a
    missing or foreign folder (models/net_folder.py; pickles are never read)."""
    from dallebrain.models.net_folder import load_net_folder

    return load_net_folder(folder, lambda d: TissueNet(TissueNetConfig.from_dict(d)), "tissue judge")
