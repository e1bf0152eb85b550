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
