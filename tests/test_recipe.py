"""The shipped-model recipe end to end with tiny configs: every command of the chain, then generation from
the fp16 release folder on both routes. Slow (a few minutes): `pytest -m slow tests/test_recipe.py`."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_recipe_runs_the_whole_chain_and_the_release_generates(tmp_path):
    spec = importlib.util.spec_from_file_location("recipe", ROOT / "recipes" / "shipped_model.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    release = recipe.main(["--work", str(tmp_path), "--subjects", "4", "--configs", "tiny", "--size", "64"])
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "clip", "prior", "decoder"):
        assert (release / part).is_dir(), part
    assert not list(release.rglob("checkpoints")) and (release / "SHA256SUMS.json").exists()
    log = json.loads((tmp_path / "recipe_log.json").read_text())
    assert len(log["steps"]) == 7
    from dallebrain.api import load_pipeline

    for route in ("ldm", "unclip"):
        result = load_pipeline(release, route=route, device="cpu")("axial T1-weighted brain MRI", n=1, steps=2)
        assert result.images.shape == (1, 64, 64) and np.isfinite(result.images).all()
    # a rerun skips every finished step
    again = subprocess.run([sys.executable, str(ROOT / "recipes" / "shipped_model.py"), "--work", str(tmp_path),
                            "--subjects", "4", "--configs", "tiny", "--size", "64"], capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0 and "+ dallebrain" not in again.stdout


def test_attribute_recipe_refuses_an_attribute_conditioned_base(tiny_pipeline, tmp_path):
    """Its stages fine-tune the text-only v1; given a model that already takes attributes (as the installed
    default does once v2 is in), it stops at once, naming what to give instead, before simulating anything."""
    result = subprocess.run([sys.executable, str(ROOT / "recipes" / "attribute_finetune.py"), "--work",
                             str(tmp_path / "w"), "--base", str(tiny_pipeline)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0 and "already attribute-conditioned" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "w").exists()
