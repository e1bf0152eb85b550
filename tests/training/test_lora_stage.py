import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dallebrain.training import lora
from testing_constants import CONFIGS

TINY = str(CONFIGS / "lora.tiny.json")


def _bytes_to_unicode() -> list[str]:
    """The 256 byte symbols of GPT-2/CLIP byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def build_stock_pipeline(folder):
    """A tiny stock Stable Diffusion folder: CLIPTextModel + CLIPTokenizer (a byte-level vocabulary without
    merges, written here), a 3-channel AutoencoderKL, a UNet cross-attending to 32-d states."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    symbols = _bytes_to_unicode()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "vocab.json").write_text(json.dumps(vocab))
    (folder / "src" / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "src" / "vocab.json"), str(folder / "src" / "merges.txt"),
                              model_max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=37,
                                                num_hidden_layers=2, num_attention_heads=4,
                                                max_position_embeddings=77, bos_token_id=512, eos_token_id=513,
                                                pad_token_id=513))
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, sample_size=64)
    unet = UNet2DConditionModel(sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=4, norm_num_groups=4)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    out = folder / "stock"
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def _train(data, base, out, *extra):
    return lora.main(["--data", str(data), "--base", str(base), "--out", str(out), "--config", TINY,
                      "--no-progress", *extra])


@pytest.fixture(scope="module")
def tiny_lora(tiny_prepared, tiny_pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora")
    _train(tiny_prepared, tiny_pipeline, out)
    return out


def test_lora_trains_only_adapters_and_exports_the_diffusers_format(tiny_lora, tiny_pipeline):
    weights = load_file(tiny_lora / lora.WEIGHT_NAME)
    assert weights and all(k.startswith("unet.") for k in weights)
    assert all(".attn2." in k for k in weights)  # cross-attention only by default
    assert {k.split(".attn2.")[1].split(".lora")[0] for k in weights} == {"to_q", "to_k", "to_v", "to_out.0"}
    # the up matrices start at zero (a LoRA starts as the base model) and moved
    assert any(v.abs().max() > 0 for k, v in weights.items() if ".up." in k or "lora_B" in k)
    with safe_open(str(tiny_lora / lora.WEIGHT_NAME), framework="pt") as f:
        assert "lora_adapter_metadata" in f.metadata()  # rank/alpha travel with the weights
    info = json.loads((tiny_lora / lora.INFO_NAME).read_text())
    from dallebrain.pipelines.folder import folder_hash

    assert info["base_hash"] == folder_hash(tiny_pipeline) and info["rank"] == 4 and info["steps"] == 3
    assert info["targets"]["unet"] == lora.UNET_CROSS_ATTENTION and info["targets"]["text_encoder"] == []
    rows = list(csv.DictReader(open(tiny_lora / "losses.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3] and all(np.isfinite(float(r["loss"])) for r in rows)
    # checkpoints hold the adapters, not the frozen base
    ckpt = load_file(tiny_lora / "checkpoints" / "step-0000003" / "unet_lora.safetensors")
    assert ckpt and all("lora_" in k for k in ckpt)
    assert not list(tiny_lora.rglob("*.bin")) and not list(tiny_lora.rglob("*.pt"))
    # the training folder itself is the adapter folder apply_lora reads
    from diffusers import UNet2DConditionModel

    from dallebrain.pipelines.lora import apply_lora

    unet = UNet2DConditionModel.from_pretrained(tiny_pipeline / "unet")
    apply_lora(unet, tiny_lora, 1.0)
    assert "dallebrain_lora" in unet.peft_config


def test_resume_continues_exactly(tiny_lora, tiny_prepared, tiny_pipeline, tmp_path):
    """A run preempted after step 2 (fit's stop_at) and resumed ends with the adapter of a straight run."""
    from dallebrain.data.dataset import SliceDataset
    from dallebrain.training.config import load_config
    from dallebrain.training.loop import fit

    config = load_config(lora.LoraTrainConfig, TINY)
    dataset = SliceDataset(tiny_prepared, "train", max_rows=config.max_rows, seed=config.seed)
    fit(lora.LoraStage(config, dataset, tiny_pipeline, tmp_path, progress=False), config, tmp_path,
        progress=False, stop_at=2)
    assert not (tmp_path / lora.WEIGHT_NAME).exists()
    with pytest.raises(ValueError, match="--resume"):
        _train(tiny_prepared, tiny_pipeline, tmp_path)
    stamp = (tmp_path / "cache" / "latents.npy").stat().st_mtime_ns
    _train(tiny_prepared, tiny_pipeline, tmp_path, "--resume")
    assert (tmp_path / "cache" / "latents.npy").stat().st_mtime_ns == stamp  # the cache is reused
    assert [int(r["step"]) for r in csv.DictReader(open(tmp_path / "losses.csv"))] == [1, 2, 3]
    resumed, straight = load_file(tmp_path / lora.WEIGHT_NAME), load_file(tiny_lora / lora.WEIGHT_NAME)
    assert resumed.keys() == straight.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], atol=1e-6, rtol=1e-5)


@pytest.fixture(scope="module")
def stock_base(tmp_path_factory):
    return build_stock_pipeline(tmp_path_factory.mktemp("stock"))


def test_stock_stable_diffusion_base(tiny_prepared, stock_base, tmp_path):
    """A CLIP text encoder and a 3-channel VAE; self- and cross-attention adapters; the result loads with
    diffusers' own load_lora_weights and changes what the pipeline generates."""
    from diffusers import StableDiffusionPipeline

    _train(tiny_prepared, stock_base, tmp_path, "--max-steps", "2", "--set", "self_attention=true")
    weights = load_file(tmp_path / lora.WEIGHT_NAME)
    assert any(".attn1." in k for k in weights) and any(".attn2." in k for k in weights)
    pipe = StableDiffusionPipeline.from_pretrained(str(stock_base), safety_checker=None)

    def generate():
        return pipe("axial T1-weighted brain MRI", num_inference_steps=2, height=64, width=64, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images

    before = generate()
    pipe.load_lora_weights(str(tmp_path))
    after = generate()
    assert after.shape == (1, 64, 64, 3) and np.isfinite(after).all() and not np.array_equal(before, after)


def test_text_encoder_adapters(tiny_prepared, stock_base, tmp_path):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    from dallebrain.pipelines.lora import apply_lora

    _train(tiny_prepared, stock_base, tmp_path, "--max-steps", "2", "--set", "text_encoder=true")
    weights = load_file(tmp_path / lora.WEIGHT_NAME)
    text_keys = [k for k in weights if k.startswith("text_encoder.")]
    assert text_keys and all("self_attn" in k for k in text_keys)
    info = json.loads((tmp_path / lora.INFO_NAME).read_text())
    assert info["targets"]["text_encoder"] == lora.TEXT_ATTENTION["clip"]
    assert not (tmp_path / "cache" / "text_states.npy").stat().st_size > 1024  # states computed in the loop
    unet = UNet2DConditionModel.from_pretrained(stock_base / "unet")
    text_encoder = CLIPTextModel.from_pretrained(stock_base / "text_encoder")
    ids = torch.arange(10)[None]
    base_states = text_encoder(ids)[0]
    with pytest.raises(ValueError, match="text encoder"):
        apply_lora(unet, tmp_path, 1.0)
    apply_lora(unet, tmp_path, 1.0, text_encoder=text_encoder)
    assert not torch.allclose(text_encoder(ids)[0], base_states)
    apply_lora(unet, tmp_path, 0.0, text_encoder=text_encoder)
    torch.testing.assert_close(text_encoder(ids)[0], base_states)


def test_resume_on_another_base_is_refused(tiny_prepared, tiny_pipeline, stock_base, tmp_path):
    _train(tiny_prepared, tiny_pipeline, tmp_path, "--max-steps", "1")
    with pytest.raises(ValueError, match="not the base this run started from"):
        _train(tiny_prepared, stock_base, tmp_path, "--resume")


def test_bad_bases(tiny_prepared, tiny_pipeline, tmp_path):
    import shutil

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_pipeline, pickled, ignore=shutil.ignore_patterns("checkpoints", "cache"))
    (pickled / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not allowed")
    with pytest.raises(ValueError, match="pickle"):
        _train(tiny_prepared, pickled, tmp_path / "o")
    with pytest.raises(ValueError, match="rank"):
        _train(tiny_prepared, tiny_pipeline, tmp_path / "o2", "--set", "rank=0")
    result = subprocess.run([sys.executable, "-m", "dallebrain.cli", "train", "lora", "--data", str(tiny_prepared),
                             "--base", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o3")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "not found" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
