import csv
import json

import pytest

from dallebrain.training import ldm
from testing_constants import CONFIGS


def test_ldm_writes_a_complete_pipeline_folder(tiny_pipeline):
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_pipeline / part).is_dir(), part
    index = json.loads((tiny_pipeline / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["text_encoder"] == ["transformers", "BertModel"]
    info = json.loads((tiny_pipeline / "dallebrain.json").read_text())
    assert info["image_size"] == 64 and info["grid"]["spacing_mm"] == 3.0
    rows = list(csv.DictReader(open(tiny_pipeline / "losses.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3] and all(float(r["loss"]) > 0 for r in rows)
    assert not list(tiny_pipeline.rglob("*.bin")) and not list(tiny_pipeline.rglob("*.pt"))


def test_cache_is_built_once_and_reused(tiny_prepared, tiny_vae, tmp_path):
    args = ["--data", str(tiny_prepared), "--out", str(tmp_path), "--vae", str(tiny_vae), "--config",
            str(CONFIGS / "ldm.tiny.json"), "--no-progress", "--max-steps", "2"]
    ldm.main(args)
    stamp = (tmp_path / "cache" / "latents.npy").stat().st_mtime_ns
    ldm.main([*args[:-1], "3", "--resume"])
    assert (tmp_path / "cache" / "latents.npy").stat().st_mtime_ns == stamp
    rows = list(csv.DictReader(open(tmp_path / "losses.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]


def test_resume_without_flag_is_refused(tiny_prepared, tiny_vae, tiny_pipeline):
    with pytest.raises(ValueError, match="--resume"):
        ldm.main(["--data", str(tiny_prepared), "--out", str(tiny_pipeline), "--vae", str(tiny_vae), "--config",
                  str(CONFIGS / "ldm.tiny.json"), "--no-progress"])
