import json
import shutil

import pytest
import torch

from cli_inprocess import run_cli
from dallebrain.models.text import load_text_encoder, load_tokenizer, tokenize
from dallebrain.pipelines.text_encoder import DELTA_FILE, load_pipeline_text_encoder, save_pipeline_text_encoder


def test_compact_text_encoder_keeps_only_changed_layers(tmp_path):
    encoder = load_text_encoder()
    with torch.no_grad():  # as if brain-CLIP had tuned the top layer
        for p in encoder.encoder.layer[-1].parameters():
            p.add_(0.01)
    save_pipeline_text_encoder(encoder, tmp_path / "te", compact=True)
    assert (tmp_path / "te" / DELTA_FILE).stat().st_size < 10_000_000  # MiniLM itself is ~90 MB
    loaded = load_pipeline_text_encoder(tmp_path / "te")
    tok = tokenize(load_tokenizer(), ["axial T1-weighted brain MRI"])
    with torch.no_grad():
        a = encoder(**tok).last_hidden_state
        b = loaded(**tok).last_hidden_state
    torch.testing.assert_close(a, b)


def test_export_makes_a_stock_loadable_copy(tiny_pipeline, tmp_path):
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "stock"
    result = run_cli("export", "--model", tiny_pipeline, "--out", out)
    assert result.returncode == 0, result.stderr
    assert not (out / "checkpoints").exists() and not (out / "cache").exists()
    pipe = StableDiffusionPipeline.from_pretrained(str(out), safety_checker=None)
    image = pipe("axial FLAIR", num_inference_steps=1, height=64, width=64, output_type="np").images
    assert image.shape == (1, 64, 64, 1)
    again = run_cli("export", "--model", tiny_pipeline, "--out", out)
    assert again.returncode == 2 and "not empty" in again.stderr


def test_release_folder_records_names_and_hashes_not_paths(tiny_pipeline, tiny_prepared, tmp_path):
    import hashlib
    import json

    from dallebrain.pipelines.export import release_folder

    release = release_folder(tiny_pipeline, tmp_path / "release")
    trained_on = json.loads((release / "dallebrain.json").read_text())["trained_on"]
    assert trained_on["data"] == tiny_prepared.resolve().name
    table = (tiny_prepared / "metadata.parquet").read_bytes()
    assert trained_on["metadata_sha256"] == hashlib.sha256(table).hexdigest()
    for path in release.rglob("*.json"):
        text = path.read_text()
        assert "_name_or_path" not in text and str(tmp_path.parent) not in text, path.name


def test_release_folder_names_a_warm_start_given_as_a_path(tiny_pipeline, tmp_path):
    """A stage's train_config.json records init_from as it was given; an absolute path (the training machine's
    layout) is released as its folder's name, a relative one as it is, the other settings untouched."""
    import json
    import shutil

    from dallebrain.pipelines.export import release_folder

    model = tmp_path / "model"
    shutil.copytree(tiny_pipeline, model, ignore=shutil.ignore_patterns("checkpoints", "cache"))
    settings = {"max_steps": 3, "init_from": str(tmp_path / "runs" / "v2.1")}
    (model / "unet" / "train_config.json").write_text(json.dumps(settings))
    release = release_folder(model, tmp_path / "release")
    assert json.loads((release / "unet" / "train_config.json").read_text()) == {"max_steps": 3, "init_from": "v2.1"}
    settings["init_from"] = "src/dallebrain/weights/default"
    (model / "unet" / "train_config.json").write_text(json.dumps(settings))
    release = release_folder(model, tmp_path / "release")
    assert json.loads((release / "unet" / "train_config.json").read_text()) == settings


def test_release_folder_keeps_the_bytes_of_a_file_already_in_fp16(tiny_pipeline, tmp_path):
    """A release of a release changes no weights file: one already fp16 is copied, not re-saved (a re-save with
    metadata wrote other bytes, so a recipe replacing one part stored the untouched leak table in git again)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from dallebrain.pipelines.export import LEAK_TABLE, release_folder

    model = tmp_path / "model"
    shutil.copytree(tiny_pipeline, model, ignore=shutil.ignore_patterns("checkpoints", "cache"))
    save_file({"a": torch.ones(3, dtype=torch.float16), "n": torch.arange(3)}, model / LEAK_TABLE,
              metadata={"z": "1", "a": "2", "m": "3"})
    first = release_folder(model, tmp_path / "first")
    second = release_folder(first, tmp_path / "second")
    assert (first / LEAK_TABLE).is_file()
    for path in first.rglob("*.safetensors"):
        assert (second / path.relative_to(first)).read_bytes() == path.read_bytes(), path.name
    assert load_file(first / "unet" / "diffusion_pytorch_model.safetensors").popitem()[1].dtype == torch.float16


def _model_with_leak_table(tiny_pipeline, tmp_path, monkeypatch, offset: float = 0.0):
    """A copy of the tiny pipeline with a leak table fitted on 8 seeded random latents (+ offset) of 8 axial
    slices: (folder, latent channels, latent side)."""
    import numpy as np
    import pandas as pd

    from dallebrain.pipelines import leak_table as LT

    model = tmp_path / "model"
    shutil.copytree(tiny_pipeline, model, ignore=shutil.ignore_patterns("checkpoints", "cache"))
    unet = json.loads((model / "unet" / "config.json").read_text())
    c, side = unet["in_channels"], unet["sample_size"]
    rows = pd.DataFrame({"orientation": "axial", "modality": ["T1w", "FLAIR"] * 4, "slice_mm": 20.0,
                         "age": np.linspace(20, 80, 8), "sex": ["F", "M"] * 4,
                         "subject_id": [f"s{i}" for i in range(8)]})
    latents = torch.randn(8, c, side, side, generator=torch.Generator().manual_seed(0)) + offset
    monkeypatch.setattr(LT, "MIN_SUBJECTS", 1)
    LT.fit_leak_table(latents, rows).save(model / LT.FILENAME)
    return model, c, side


def test_a_released_leak_table_is_the_same_table_in_fp16(tiny_pipeline, tmp_path, monkeypatch):
    """release_folder stores every float tensor as fp16 and keeps each file's metadata: the leak table's group
    keys live there, and without them the released model would not load."""

    from dallebrain.data.prompts import parse_prompt
    from dallebrain.pipelines import leak_table as LT
    from dallebrain.pipelines.export import release_folder

    model, c, side = _model_with_leak_table(tiny_pipeline, tmp_path, monkeypatch)
    release = release_folder(model, tmp_path / "release")
    before, after = (LT.load_leak_table(folder / LT.FILENAME, c, side) for folder in (model, release))
    assert after.keys == before.keys
    fields = parse_prompt("axial FLAIR slice of a healthy 70-year-old man")
    torch.testing.assert_close(after.start_mean(fields), before.start_mean(fields), atol=2e-3, rtol=2e-3)


def test_a_stock_client_starts_where_ours_does_with_the_exported_leak_table(tiny_pipeline, tmp_path, monkeypatch):
    """README "Stock clients": the export carries the leak table, and `stock_start_latents` gives a stock
    StableDiffusionPipeline exactly the first UNet input our pipeline would start from for that prompt."""
    from diffusers import StableDiffusionPipeline

    from dallebrain.data.prompts import parse_prompt
    from dallebrain.pipelines import leak_table as LT
    from dallebrain.pipelines.signal_leak import start_latents

    model, c, side = _model_with_leak_table(tiny_pipeline, tmp_path, monkeypatch, offset=1.5)
    out = tmp_path / "stock"
    assert run_cli("export", "--model", model, "--out", out).returncode == 0
    assert (out / LT.FILENAME).is_file()

    prompt = "axial FLAIR slice of a healthy 70-year-old man at z = 20 mm"
    stock = StableDiffusionPipeline.from_pretrained(str(out), safety_checker=None)
    stock.scheduler.set_timesteps(2)
    noise = torch.randn(1, c, side, side, generator=torch.Generator().manual_seed(3))
    given = LT.stock_start_latents(out, prompt, stock.scheduler, noise)
    first = []
    hook = stock.unet.register_forward_pre_hook(lambda module, args: first.append(args[0][:1].clone()))
    stock(prompt, latents=given, num_inference_steps=2, height=8 * side, width=8 * side, output_type="np")
    hook.remove()
    ours = start_latents(stock.scheduler, noise, LT.load_leak_table(model / LT.FILENAME, c, side)
                         .start_mean(parse_prompt(prompt))[None])
    torch.testing.assert_close(first[0], ours)
    assert (ours.mean() - noise.mean()).abs() > 0.05  # the table's mean (about +1.5) is really in it
    with pytest.raises(ValueError, match="set_timesteps"):
        fresh = type(stock.scheduler).from_config(stock.scheduler.config)
        LT.stock_start_latents(out, prompt, fresh, noise)
