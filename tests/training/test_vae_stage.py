import csv
import json
import math
from pathlib import Path

import numpy as np
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
