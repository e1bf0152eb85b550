"""A tiny LDM + unCLIP folder for the evaluation tests: the shared tiny LDM pipeline plus random tiny
clip/, prior/ and decoder/ that fit its VAE (untrained: the tests check plumbing, not quality)."""

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

CLIP_DIM = 16
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="session")
def load_benchmark():
    """Import a script of benchmarks/ (not a package) by name, as a module its tests can call into."""
    def load(name: str):
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # registered before it runs, as an import would (dataclasses look it up)
            spec.loader.exec_module(module)
        return sys.modules[name]
    return load


def add_unclip_components(folder) -> None:
    """Write random tiny clip/, prior/ and decoder/ into an LDM pipeline folder (64x64 slices, 4x32x32 latents)."""
    import torch

    from dallebrain.models.clip import BrainCLIP, BrainCLIPConfig
    from dallebrain.models.decoder import build_decoder, save_decoder
    from dallebrain.models.prior import PriorConfig, build_prior, save_prior
    from dallebrain.models.unet import UnetConfig

    torch.manual_seed(0)
    BrainCLIP(BrainCLIPConfig(image_width=8, image_blocks_per_stage=1, image_stages=2, embed_dim=CLIP_DIM,
                              tuned_text_layers=1, image_size=64)).save_pretrained(folder / "clip")
    save_prior(build_prior(PriorConfig(num_layers=1, num_attention_heads=2, attention_head_dim=8), CLIP_DIM),
               folder / "prior")
    save_decoder(build_decoder(UnetConfig(sample_size=32, block_out_channels=[8, 16], attention_head_dim=4,
                                          cross_attention_levels=1, cross_attention_dim=16, norm_num_groups=4),
                               CLIP_DIM), folder / "decoder")


@pytest.fixture(scope="session")
def tiny_unclip_pipeline(tiny_pipeline, tmp_path_factory):
    """The tiny LDM pipeline folder with unCLIP components added: both routes, and a Brain-CLIP."""
    folder = tmp_path_factory.mktemp("eval-both") / "model"
    shutil.copytree(tiny_pipeline, folder, ignore=shutil.ignore_patterns("checkpoints", "cache"))
    add_unclip_components(folder)
    return folder
