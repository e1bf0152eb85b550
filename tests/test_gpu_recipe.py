"""The GPU recipe: packing the release into what the device tool brings back (at most 8 files of 16 MiB), the
way back, the budget shares; and (slow) the whole chain on tiny configs on a CPU."""

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _recipe():
    spec = importlib.util.spec_from_file_location("gpu_model", ROOT / "recipes" / "gpu_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _release(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "weights.safetensors").write_bytes(rng.bytes(5000))
    (folder / "model_index.json").write_text('{"a": 1}')
    return folder


def test_pack_and_unpack_round_trip_in_parts(tmp_path, monkeypatch):
    recipe = _recipe()
    monkeypatch.setattr(recipe, "PART_BYTES", 4096)
    release = _release(tmp_path / "release")
    parts = recipe.pack(release, tmp_path / "out")
    assert len(parts) >= 2 and all(p.stat().st_size <= 4096 for p in parts)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(files) <= recipe.MAX_FILES and recipe.MANIFEST in files
    model = recipe.unpack(tmp_path / "out", tmp_path / "model")
    for path in release.rglob("*"):
        if path.is_file():
            assert (model / path.relative_to(release)).read_bytes() == path.read_bytes()
    with pytest.raises(SystemExit, match="exists"):
        recipe.unpack(tmp_path / "out", tmp_path / "model")


def test_unpack_refuses_an_altered_or_missing_part_and_writes_nothing(tmp_path, monkeypatch):
    recipe = _recipe()
    monkeypatch.setattr(recipe, "PART_BYTES", 4096)
    parts = recipe.pack(_release(tmp_path / "release"), tmp_path / "out")
    data = bytearray(parts[1].read_bytes())
    data[10] ^= 1
    parts[1].write_bytes(bytes(data))
    with pytest.raises(SystemExit, match="part01 does not match its sha256"):
        recipe.unpack(tmp_path / "out", tmp_path / "model")
    parts[1].unlink()
    with pytest.raises(SystemExit, match="part01 is missing"):
        recipe.unpack(tmp_path / "out", tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_pack_refuses_a_release_needing_more_files_than_come_back(tmp_path, monkeypatch):
    recipe = _recipe()
    monkeypatch.setattr(recipe, "PART_BYTES", 1024)  # 5 kB of weights -> more than 7 parts
    with pytest.raises(SystemExit, match="more than 7 parts"):
        recipe.pack(_release(tmp_path / "release"), tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())


def test_budget_shares_the_lane_time_left(monkeypatch):
    recipe = _recipe()
    clock = recipe.Clock(minutes=11)  # 600 s after the reserve
    now = time.time()
    monkeypatch.setattr(recipe.time, "time", lambda: now)
    first = clock.budget("ldm", "vae")
    assert first == pytest.approx(recipe.BUDGET_USE * (clock.deadline - now) * 0.25, abs=0.2)
    # the last stage of a lane gets all of the lane's time left (less the start-up margin)
    assert clock.budget("ldm", "ldm") == pytest.approx(recipe.BUDGET_USE * (clock.deadline - now), abs=0.2)
    monkeypatch.setattr(recipe.time, "time", lambda: clock.deadline - 5)
    with pytest.raises(RuntimeError, match="no time left for the prior stage"):
        clock.budget("unclip", "prior")


@pytest.mark.slow
def test_gpu_recipe_trains_every_stage_and_packs_a_model_that_generates(tmp_path):
    recipe = _recipe()
    out = tmp_path / "OUT"
    recipe.main(["train", "--work", str(tmp_path / "w"), "--out", str(out), "--configs", "tiny", "--subjects", "4",
                 "--size", "64", "--minutes", "20", "--workers", "2", "--sharpen-vae"])
    assert len(list(out.iterdir())) <= recipe.MAX_FILES
    model = recipe.main(["unpack", str(out), "--into", str(tmp_path / "model")])
    info = json.loads((model / "dallebrain.json").read_text())
    # the recipe's sampling defaults, beside what the LDM stage records itself (the latent mean sampling starts from)
    assert info["sampling"].items() >= recipe.SAMPLING.items() and "vae_sharpened" in info
    scheduler = json.loads((model / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "v_prediction"
    # the sharpened decoder is the release's VAE, its encoder the one the LDM was trained on
    from safetensors.torch import load_file

    base = load_file(str(tmp_path / "w" / "runs" / "vae" / "diffusion_pytorch_model.safetensors"))
    shipped = load_file(str(model / "vae" / "diffusion_pytorch_model.safetensors"))
    assert all(np.allclose(base[k].half().float(), shipped[k].float()) for k in base if k.startswith("encoder."))
    from dallebrain.api import load_pipeline

    for route in ("ldm", "unclip"):
        result = load_pipeline(model, route=route, device="cpu")("axial T1-weighted brain MRI", n=1, steps=2)
        assert result.images.shape == (1, 64, 64) and np.isfinite(result.images).all()
