"""Test-wide settings: offline, project-local caches, and a tiny simulated cohort shared by the tests."""

import os
from pathlib import Path

_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "test"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["DALLEBRAIN_CACHE"] = str(_CACHE)
os.environ["NILEARN_DATA"] = str(_CACHE / "nilearn_data")
os.environ["HF_HOME"] = str(_CACHE / "huggingface")

import pytest  # noqa: E402
import torch  # noqa: E402

# One intra-op thread: the tiny test models gain nothing from two, and on shared cores two threads per
# process oversubscribe (measured here: ~10x slower).
torch.set_num_threads(1)

from testing_constants import CONFIGS, TINY_GRID  # noqa: E402


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """Four simulated subjects, all four contrasts, on the 3 mm grid."""
    from dallebrain.data.simulate import SimulationOptions, simulate_cohort

    out = tmp_path_factory.mktemp("cohort")
    simulate_cohort(out, SimulationOptions(subjects=4, seed=7, grid=TINY_GRID), workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_prepared(tiny_cohort, tmp_path_factory) -> Path:
    """The tiny cohort prepared at 64x64 (3 mm pixels)."""
    from dallebrain.data.prepare import PrepareOptions, prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare(PrepareOptions("simulated", tiny_cohort, out, size=64, slice_step_mm=6.0), progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_long_prepared(tmp_path_factory) -> Path:
    """Six simulated people scanned at 0, 5 and 10 years (T1w and FLAIR), prepared at 32x32 every 12 mm: the
    ageing network's tests (prepare splits people, so train and test hold different ones)."""
    from dallebrain.data.prepare import PrepareOptions, prepare
    from dallebrain.data.simulate import SimulationOptions, simulate_cohort

    cohort = tmp_path_factory.mktemp("long_cohort")
    simulate_cohort(cohort, SimulationOptions(6, seed=11, contrasts=("T1w", "FLAIR"), grid=TINY_GRID,
                                              timepoints=(0.0, 5.0, 10.0)), workers=1, progress=False)
    out = tmp_path_factory.mktemp("long_prepared")
    prepare(PrepareOptions("simulated", cohort, out, size=32, slice_step_mm=12.0), progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_vae(tiny_prepared, tmp_path_factory) -> Path:
    """A VAE trained 3 steps with configs/vae.tiny.json."""
    from dallebrain.training import vae

    out = tmp_path_factory.mktemp("vae")
    vae.main(["--data", str(tiny_prepared), "--out", str(out), "--config", str(CONFIGS / "vae.tiny.json"),
              "--no-progress"])
    return out


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_prepared, tiny_vae, tmp_path_factory) -> Path:
    """A text-to-image pipeline folder: tiny LDM trained 3 steps on the pretrained MiniLM conditioning."""
    from dallebrain.training import ldm

    out = tmp_path_factory.mktemp("pipeline")
    ldm.main(["--data", str(tiny_prepared), "--out", str(out), "--vae", str(tiny_vae),
              "--config", str(CONFIGS / "ldm.tiny.json"), "--no-progress"])
    return out


@pytest.fixture(scope="session")
def tiny_unclip(tmp_path_factory) -> Path:
    """clip/, vae/, prior/, decoder/ of random tiny models (64x64 slices), untrained: for shapes, seeds,
    refusals and the web page."""
    import torch

    from dallebrain.models.clip import BrainCLIP, BrainCLIPConfig
    from dallebrain.models.decoder import build_decoder, save_decoder
    from dallebrain.models.prior import PriorConfig, build_prior, save_prior
    from dallebrain.models.unet import UnetConfig
    from dallebrain.models.vae import VaeConfig, build_vae

    root = tmp_path_factory.mktemp("app-unclip")
    torch.manual_seed(0)
    dim = 32
    BrainCLIP(BrainCLIPConfig(image_width=8, image_blocks_per_stage=1, image_stages=2, embed_dim=dim,
                              tuned_text_layers=1, image_size=64)).save_pretrained(root / "clip")
    vae = build_vae(VaeConfig(block_out_channels=(8, 8, 8), norm_num_groups=4, mid_block_attention=False,
                              sample_size=64))
    vae.register_to_config(scaling_factor=0.5)
    vae.save_pretrained(root / "vae", safe_serialization=True)
    save_prior(build_prior(PriorConfig(num_layers=1, num_attention_heads=2, attention_head_dim=8), dim), root / "prior")
    save_decoder(build_decoder(UnetConfig(sample_size=16, block_out_channels=[8, 16], attention_head_dim=4,
                                          cross_attention_levels=1, cross_attention_dim=16, norm_num_groups=4), dim),
                 root / "decoder")
    return root


@pytest.fixture(scope="session")
def tiny_ageing_model(tmp_path_factory) -> Path:
    """An ageing network at the tiny pipeline's 64 px that changes a slice a little per decade."""
    from testing_constants import make_ageing_model

    return make_ageing_model(tmp_path_factory.mktemp("ageing"), 64, 0.004)


def add_unclip_components(folder) -> None:
    """Write random tiny clip/, prior/ and decoder/ into an LDM pipeline folder (64x64 slices, 4x32x32 latents)."""
    import torch

    from dallebrain.models.clip import BrainCLIP, BrainCLIPConfig
    from dallebrain.models.decoder import build_decoder, save_decoder
    from dallebrain.models.prior import PriorConfig, build_prior, save_prior
    from dallebrain.models.unet import UnetConfig

    torch.manual_seed(0)
    BrainCLIP(BrainCLIPConfig(image_width=8, image_blocks_per_stage=1, image_stages=2, embed_dim=16,
                              tuned_text_layers=1, image_size=64)).save_pretrained(folder / "clip")
    save_prior(build_prior(PriorConfig(num_layers=1, num_attention_heads=2, attention_head_dim=8), 16),
               folder / "prior")
    save_decoder(build_decoder(UnetConfig(sample_size=32, block_out_channels=[8, 16], attention_head_dim=4,
                                          cross_attention_levels=1, cross_attention_dim=16, norm_num_groups=4),
                               16), folder / "decoder")


@pytest.fixture(scope="session")
def tiny_unclip_pipeline(tiny_pipeline, tmp_path_factory):
    """The tiny LDM pipeline folder with unCLIP components added: both routes, and a Brain-CLIP."""
    import shutil

    folder = tmp_path_factory.mktemp("eval-both") / "model"
    shutil.copytree(tiny_pipeline, folder, ignore=shutil.ignore_patterns("checkpoints", "cache"))
    add_unclip_components(folder)
    return folder
