import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dallebrain.models.vae import VaeConfig, build_vae, load_vae
from dallebrain.training.config import load_config
from dallebrain.training.vae import VaeTrainConfig, brain_crops, main, reconstruct, reconstruction_metrics, ssim_map

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_configs_load():
    base = load_config(VaeTrainConfig, CONFIGS / "vae.base.json")
    assert base.vae_config(128).downsampling_factor == 4
    assert base.crop_size % 4 == 0
    tiny = load_config(VaeTrainConfig, CONFIGS / "vae.tiny.json")
    assert tiny.max_steps == 3


def test_train_export_and_resume(tiny_prepared, tmp_path, capsys):
    out = tmp_path / "vae"
    args = ["--data", str(tiny_prepared), "--out", str(out), "--config", str(CONFIGS / "vae.tiny.json"),
            "--no-progress"]
    summary = main(args + ["--max-steps", "3"])
    assert summary["steps"] == 3
    assert [int(r["step"]) for r in _rows(out / "losses.csv")] == [1, 2, 3]
    assert {"loss", "l1", "ssim", "kl", "images_per_second"} <= set(_rows(out / "losses.csv")[0])
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"psnr", "ssim", "psnr_brain", "ssim_brain"} <= set(metrics)
    assert all(math.isfinite(metrics[k]) for k in ("psnr", "ssim", "psnr_brain", "ssim_brain"))
    assert "psnr" in capsys.readouterr().out
    saved = json.loads((out / "config.json").read_text())
    assert math.isfinite(saved["scaling_factor"]) and saved["scaling_factor"] != 1.0
    assert load_vae(out).config.scaling_factor == saved["scaling_factor"]

    resumed = main(args + ["--resume", "--max-steps", "4"])
    assert (resumed["resumed_from"], resumed["steps"]) == (3, 4)
    assert [int(r["step"]) for r in _rows(out / "losses.csv")] == [1, 2, 3, 4]


def test_crops_are_centred_on_brain():
    images = np.zeros((8, 64, 64), dtype=np.float32)
    images[:, 50:60, 2:12] = 1.0  # a small "brain" in a corner
    crops = brain_crops(images, 16, np.random.default_rng(0), flip=True)
    assert crops.shape == (8, 16, 16)
    assert all(c.sum() > 0 for c in crops)


def test_ssim_map_matches_identity_and_skimage():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 1, 32, 32, generator=g)
    b = (a + 0.1 * torch.randn(1, 1, 32, 32, generator=g)).clamp(0, 1)
    assert abs(ssim_map(a, a).mean().item() - 1) < 1e-5
    ours = ssim_map(a.double(), b.double()).mean().item()
    ref = structural_similarity(a[0, 0].double().numpy(), b[0, 0].double().numpy(), data_range=1.0,
                                gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert abs(ours - ref) < 1e-6  # both average the valid (unpadded) region


def test_short_overfit_improves_psnr():
    torch.manual_seed(0)
    vae = build_vae(VaeConfig(block_out_channels=(8, 16), norm_num_groups=4, mid_block_attention=False,
                              sample_size=32))
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    disc = ((yy ** 2 + xx ** 2) < 0.8).float()
    images = (disc * (0.5 + 0.3 * torch.sin(4 * yy) * torch.cos(3 * xx))).expand(4, 1, 32, 32).clone()
    images[1] = images[1].flip(-1) * 0.8
    images[2] = images[2].transpose(-1, -2).clone()

    def psnr():
        vae.eval()
        value = reconstruction_metrics(images, reconstruct(vae, images))["psnr"]
        vae.train()
        return value

    before = psnr()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=3e-3)
    target = images * 2 - 1
    for _ in range(25):
        posterior = vae.encode(target).latent_dist
        recon = vae.decode(posterior.sample()).sample
        loss = (recon - target).abs().mean() + 0.2 * (1 - ssim_map((recon + 1) / 2, images).mean())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = psnr()
    assert after > before + 3, (before, after)


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "diffusion_pytorch_model.safetensors"))


def test_sharpening_trains_the_decoder_only_against_the_discriminator(tiny_prepared, tmp_path):
    base = ["--data", str(tiny_prepared), "--config", str(CONFIGS / "vae.tiny.json"), "--no-progress"]
    first = tmp_path / "vae"
    main(base + ["--out", str(first), "--max-steps", "3"])
    out = tmp_path / "sharp"
    sharpen = base + ["--out", str(out), "--set", f"init_from={first}", "--set", "train_encoder=false",
                      "--set", "adversarial_weight=0.5", "--set", "adversarial_start=2",
                      "--set", "feature_matching_weight=1", "--set", "discriminator.layers=2",
                      "--set", "discriminator.channels=8"]
    main(sharpen + ["--max-steps", "3"])
    rows = _rows(out / "losses.csv")
    assert {"d_loss", "d_real", "d_fake", "g_adv", "adv_weight", "feature_matching"} <= set(rows[0])
    # the discriminator learns from step 1, the decoder is judged by it after adversarial_start (2) steps
    assert [float(r["adv_weight"]) > 0 for r in rows] == [False, False, True]
    assert float(rows[0]["d_loss"]) > 0 and float(rows[2]["feature_matching"]) > 0
    before, after = _weights(first), _weights(out)
    assert set(before) == set(after)
    for name in before:
        same = torch.equal(before[name], after[name])
        if name.startswith(("encoder.", "quant_conv.")):
            assert same, f"{name} changed: the latent space must stay init_from's"
    assert not torch.equal(before["decoder.conv_out.weight"], after["decoder.conv_out.weight"])
    # same encoder, same latents: the scaling factor is kept exactly, not re-estimated
    assert json.loads((out / "config.json").read_text())["scaling_factor"] == \
        json.loads((first / "config.json").read_text())["scaling_factor"]
    resumed = main(sharpen + ["--resume", "--max-steps", "4"])  # the discriminator is in the checkpoint
    assert (resumed["resumed_from"], resumed["steps"]) == (3, 4)


def test_sharpening_refuses_a_frozen_random_encoder_and_another_architecture(tiny_prepared, tmp_path):
    base = ["--data", str(tiny_prepared), "--config", str(CONFIGS / "vae.tiny.json"), "--no-progress"]
    with pytest.raises(ValueError, match="train_encoder=false keeps the encoder of init_from"):
        main(base + ["--out", str(tmp_path / "a"), "--set", "train_encoder=false"])
    other = tmp_path / "other"
    build_vae(VaeConfig(block_out_channels=(8, 8), norm_num_groups=4, mid_block_attention=False,
                        sample_size=32)).save_pretrained(other, safe_serialization=True)
    with pytest.raises(ValueError, match="another architecture"):
        main(base + ["--out", str(tmp_path / "b"), "--set", f"init_from={other}"])


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    from dallebrain.training.vae import VaeStage

    torch.manual_seed(0)
    vae = build_vae(VaeConfig(block_out_channels=(8, 16), norm_num_groups=4, mid_block_attention=False,
                              sample_size=16))
    stage = VaeStage.__new__(VaeStage)  # only _adaptive_weight is exercised: it needs the VAE alone
    stage.vae = vae
    out = vae.decode(torch.randn(2, 4, 8, 8)).sample
    rec, adv = out.abs().mean(), -(3 * out).mean()
    last = vae.decoder.conv_out.weight
    expected = (torch.autograd.grad(rec, last, retain_graph=True)[0].norm()
                / (torch.autograd.grad(adv, last, retain_graph=True)[0].norm() + 1e-4))
    weight = stage._adaptive_weight(rec, adv)
    assert not weight.requires_grad
    assert torch.allclose(weight, expected)
    # scaling the adversarial loss scales its weight inversely: the product's gradient is what it is
    assert torch.allclose(stage._adaptive_weight(rec, 2 * adv) * 2, weight, rtol=1e-4)
