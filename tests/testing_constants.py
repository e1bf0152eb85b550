"""Constants and small builders shared by tests (import this, never `conftest`: sub-folders have conftest
modules too)."""

from pathlib import Path

from dallebrain.data.grid import VolumeGrid

# 3 mm instead of 1.5 mm: 8x fewer voxels, the same code paths.
TINY_GRID = VolumeGrid((64, 76, 64), 3.0, (-96.0, -132.0, -78.0))
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def make_ageing_model(folder: Path, image_size: int, change: float) -> Path:
    """A tiny ageing network saved in `folder` whose output is not its input: a random output convolution of
    standard deviation `change` (0.004: a decade changes a slice a little, as a trained network does)."""
    import torch

    from dallebrain.ageing.network import AgeingNet, AgeingNetConfig, save_ageing_net

    torch.manual_seed(0)
    net = AgeingNet(AgeingNetConfig(channels=(8, 16), image_size=image_size))
    torch.nn.init.normal_(net.unet.conv_out.weight, std=change)
    save_ageing_net(net, folder)
    return folder
