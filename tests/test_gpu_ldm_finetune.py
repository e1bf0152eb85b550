"""The GPU fine-tune recipe's pieces that run here: MiniLM split to what travels and rebuilt on the device (the
caption states it gives), the vocabulary check that guards it, and the model assembled from what comes back."""

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = ["axial T1-weighted MRI slice of a healthy 30-year-old man at the level of the lateral ventricles",
            "coronal FLAIR slice of a 70-year-old woman through the hippocampi"]


def _recipe():
    spec = importlib.util.spec_from_file_location("gpu_ldm_finetune", ROOT / "recipes" / "gpu_ldm_finetune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _metadata(path: Path, captions: list[str]) -> Path:
    pd.DataFrame({"caption": captions, "captions": [[c, c.upper()] for c in captions]}).to_parquet(path)
    return path


def test_minilm_rebuilt_from_its_travelling_parts_gives_the_caption_states(tmp_path):
    import shutil

    from dallebrain.models.text import load_text_encoder, load_tokenizer, minilm_path, tokenize

    recipe = _recipe()
    tokenizer = load_tokenizer()
    meta = _metadata(tmp_path / "metadata.parquet", CAPTIONS)
    rows = recipe.caption_vocabulary(tokenizer, meta)
    assert 20 < len(rows) < 100 and set(tokenizer.all_special_ids) <= set(rows)
    recipe.split_minilm(minilm_path(), rows, tmp_path / "parts.safetensors")
    assert (tmp_path / "parts.safetensors").stat().st_size < 0.3 * (minilm_path() / "model.safetensors").stat().st_size
    rebuilt = tmp_path / "minilm"
    shutil.copytree(minilm_path(), rebuilt, ignore=shutil.ignore_patterns("model.safetensors"))
    assert recipe.rebuild_minilm(tmp_path / "parts.safetensors", rebuilt / "model.safetensors") == len(rows)
    original, copy = load_text_encoder(), load_text_encoder(rebuilt)
    with torch.no_grad():
        tok = tokenize(tokenizer, CAPTIONS + [""])
        want = original(tok["input_ids"], attention_mask=tok["attention_mask"])[0]
        got = copy(tok["input_ids"], attention_mask=tok["attention_mask"])[0]
        # fp16 layers: rounding, not another model (measured: 0.2 % of the states' norm, 3e-3 at most on the words;
        # the same encoder run in bf16 is 3.4 % off)
        assert (got - want).norm() / want.norm() < 0.01
        assert (got - want)[tok["attention_mask"].bool()].abs().max() < 0.01
        # a word whose row stayed behind reads as another word: what the device's check refuses to train on
        other = tokenize(tokenizer, ["sagittal PD-weighted slice of a glioblastoma"])
        assert (copy(other["input_ids"])[0] - original(other["input_ids"])[0]).abs().max() > 0.1
    kept = set(rows)
    assert recipe.missing_tokens(tokenizer, meta, kept) == set()
    unseen = _metadata(tmp_path / "other.parquet", ["sagittal slice of a glioblastoma"])
    assert recipe.missing_tokens(tokenizer, unseen, kept)


def test_the_model_is_assembled_from_what_comes_back(tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    recipe = _recipe()
    shipped = recipe.SHIPPED
    files = tmp_path / "files"
    files.mkdir()
    weights = load_file(str(shipped / "unet" / "diffusion_pytorch_model.safetensors"))
    moved = {k: (v.float() + 0.01).half() for k, v in weights.items()}  # a "fine-tuned" UNet
    save_file(moved, str(files / "unet_fp16.safetensors"))
    shutil.copy(shipped / "unet" / "config.json", files / "unet_config.json")
    shutil.copy(shipped / "scheduler" / "scheduler_config.json", files / "scheduler_config.json")
    (files / "dallebrain.json").write_text(json.dumps({"trained_on": {"slices": 54448, "subjects": 96},
                                                       "sampling": {"latent_mean": [0.1, 0.2, 0.3, 0.4]}}))
    (files / "train_config.json").write_text(json.dumps({"max_steps": 4321, "batch_size": 256}))
    (files / "losses.csv").write_text("step,loss\n50,0.1\n")
    (files / "run.json").write_text(json.dumps({"device": "NVIDIA H200", "seconds": 530, "log": "..."}))
    model = recipe.install(files, tmp_path / "model")
    got = load_file(str(model / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(got[k], moved[k]) for k in moved)
    for part in ("vae", "clip", "decoder", "prior", "text_encoder"):  # the rest is the base's, byte for byte
        for f in (shipped / part).iterdir():
            assert (model / part / f.name).read_bytes() == f.read_bytes(), f
    info = json.loads((model / "dallebrain.json").read_text())
    assert info["gpu_stage"]["steps"] == 4321 and info["gpu_stage"]["trained_on"]["slices"] == 54448
    assert info["gpu_stage"]["device"] == "NVIDIA H200"
    assert info["sampling"]["attribute_guidance_by_contrast"]  # the base's sampling record is kept
    # but not its grey-level maps, fitted on the base UNet's samples (the shipped model has them)
    base_info = json.loads((shipped / "dallebrain.json").read_text())
    assert "grey_level_map" in base_info["sampling"] and "grey_level_map" in base_info["unclip"]["sampling"]
    assert "grey_level_map" not in info["sampling"]
    assert info["unclip"]["sampling"]["grey_level_map"] == base_info["unclip"]["sampling"]["grey_level_map"]  # its own
    with pytest.raises(SystemExit, match="exists"):
        recipe.install(files, tmp_path / "model")
    (files / "losses.csv").unlink()
    with pytest.raises(SystemExit, match="lacks losses.csv"):
        recipe.install(files, tmp_path / "model2")
    assert not (tmp_path / "model2").exists()


def test_train_without_a_carry_is_refused_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match="holds no carry"):
        _recipe().train(tmp_path / "out", tmp_path / "w", tmp_path / "site", 100, 3, 2, 4, 3, carry=tmp_path / "x")
