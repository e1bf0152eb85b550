"""Train the 1-channel VAE: L1 + SSIM reconstruction + a small KL term, on random crops that contain brain;
optionally against a patch discriminator (hinge loss, adaptive weight, feature matching) to sharpen the decoder.

The VAE is convolutional, so it trains on crops (about 5x cheaper per image on a CPU than whole slices)
and applies to whole slices unchanged. At export it sets `scaling_factor` so diffusion latents have unit
variance (as Stable Diffusion did), saves the `AutoencoderKL` folder, and measures reconstruction PSNR /
SSIM on whole held-out slices (`metrics.json`).

    python -m dallebrain.training.vae --data PREPARED --out runs/vae --config configs/vae.base.json

Sharpening a trained VAE (configs/vae.sharpen.json): `init_from` a VAE folder with `train_encoder=false`, so
only the decoder learns and the latent space, with every diffusion model trained in it, stays valid (as
Stable Diffusion's fine-tuned "ft-MSE" decoders did), while `adversarial_weight` / `feature_matching_weight` add
the patch discriminator of models/discriminator.py. The adversarial term's weight is scaled each step by the ratio
of the reconstruction loss's gradient norm to its own at the decoder's last layer (Esser et al. 2021), so neither
swamps the other whatever the loss scales.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from dallebrain.models.attention import use_cpu_training_attention
from dallebrain.models.discriminator import (
    DiscriminatorConfig,
    PatchDiscriminator,
    feature_matching_loss,
    features_frozen,
    hinge_discriminator_loss,
)
from dallebrain.models.vae import VaeConfig, build_vae, decode_latents, encode_images, load_vae
from dallebrain.training.common import held_out
from dallebrain.training.config import TrainConfig
from dallebrain.training.loop import Stage, save_image_grid


@dataclasses.dataclass
class VaeTrainConfig(TrainConfig):
    """TrainConfig plus the VAE architecture and its losses."""

    latent_channels: int = 4  # see VaeConfig
    block_out_channels: tuple[int, ...] = (32, 64, 64)  # see VaeConfig (3 levels: 4x downsampling)
    layers_per_block: int = 1  # see VaeConfig
    norm_num_groups: int = 8  # see VaeConfig
    mid_block_attention: bool = True  # see VaeConfig
    crop_size: int = 64  # side of the training crops (centred on brain); >= the slice size: whole slices
    horizontal_flip: bool = True  # mirror half the crops left-right (brains are nearly symmetric)
    kl_weight: float = 1e-6  # on the per-sample KL sum, relative to the per-pixel L1 summed (LDM's balance)
    ssim_weight: float = 0.2  # weight of (1 - SSIM); SSIM rewards kept structure that L1 alone blurs
    val_images: int = 64  # whole held-out slices for the export metrics
    scaling_images: int = 128  # training slices whose latent std sets scaling_factor
    learning_rate: float = 2e-4
    warmup_steps: int = 100
    init_from: str = ""  # a trained VAE folder (or a pipeline folder holding vae/) to continue from
    # false: only the decoder (and post_quant_conv) learn; the encoder, hence the latent space, stays as init_from's
    train_encoder: bool = True
    adversarial_weight: float = 0.0  # patch-adversarial term (times the adaptive weight); 0: no discriminator
    adversarial_start: int = 0  # steps the discriminator learns alone before the decoder is trained against it
    feature_matching_weight: float = 0.0  # L1 between discriminator features of decoded and real crops
    discriminator: DiscriminatorConfig = dataclasses.field(default_factory=DiscriminatorConfig)

    def vae_config(self, sample_size: int) -> VaeConfig:
        return VaeConfig(latent_channels=self.latent_channels, block_out_channels=tuple(self.block_out_channels),
                         layers_per_block=self.layers_per_block, norm_num_groups=self.norm_num_groups,
                         mid_block_attention=self.mid_block_attention, sample_size=sample_size)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Differentiable SSIM map (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, valid region) of
    (B, 1, H, W) images."""
    window = _gaussian_window().to(device=x.device, dtype=x.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(t):
        return torch.nn.functional.conv2d(t, window)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))


class _VaeForward(torch.nn.Module):
    """encode -> sample -> decode in one forward, so DistributedDataParallel sees the whole graph."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(x).latent_dist
        return self.vae.decode(posterior.sample()).sample, posterior.kl()


def brain_crops(images: np.ndarray, crop: int, rng: np.random.Generator, flip: bool = False) -> np.ndarray:
    """(B, H, W) slices -> (B, crop, crop) crops whose centre is a brain (nonzero) pixel, shifted to lie
    inside the slice; a slice without brain gets a uniform random crop."""
    out = np.empty((len(images), crop, crop), dtype=np.float32)
    h, w = images.shape[1:]
    for k, img in enumerate(images):
        ys, xs = np.nonzero(img > 0)
        if len(ys):
            j = int(rng.integers(len(ys)))
            cy, cx = int(ys[j]), int(xs[j])
        else:
            cy, cx = int(rng.integers(h)), int(rng.integers(w))
        top = min(max(cy - crop // 2, 0), h - crop)
        left = min(max(cx - crop // 2, 0), w - crop)
        out[k] = img[top:top + crop, left:left + crop]
        if flip and rng.random() < 0.5:
            out[k] = out[k, :, ::-1]
    return out


def _psnr(mse: float) -> float:
    return float(10 * math.log10(1.0 / mse)) if mse > 0 else float("inf")


@torch.no_grad()
def reconstruct(vae, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Posterior-mean reconstructions of (N, 1, H, W) images in [0, 1], on the CPU."""
    outs = []
    for i in range(0, len(images), batch_size):
        outs.append(decode_latents(vae, encode_images(vae, images[i:i + batch_size])).float().cpu())
    return torch.cat(outs)


def reconstruction_metrics(originals: torch.Tensor, reconstructions: torch.Tensor) -> dict[str, float]:
    """PSNR / SSIM (data range 1, Gaussian SSIM as in Wang et al.) over whole slices and within the brain
    (nonzero pixels of the original), averaged over slices."""
    from skimage.metrics import structural_similarity

    psnr, ssim, psnr_brain, ssim_brain = [], [], [], []
    pairs = zip(originals[:, 0].double().numpy(), reconstructions[:, 0].double().numpy(), strict=True)
    for a, b in pairs:
        _, smap = structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, full=True)
        brain = a > 0
        psnr.append(_psnr(float(np.mean((a - b) ** 2))))
        ssim.append(float(smap.mean()))
        if brain.any():
            psnr_brain.append(_psnr(float(np.mean((a[brain] - b[brain]) ** 2))))
            ssim_brain.append(float(smap[brain].mean()))
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)),
            "psnr_brain": float(np.mean(psnr_brain)) if psnr_brain else float("nan"),
            "ssim_brain": float(np.mean(ssim_brain)) if ssim_brain else float("nan"),
            "images": len(psnr)}


class VaeStage(Stage):
    """The VAE stage for `fit`: random brain crops in, L1 + SSIM + KL out; exports an AutoencoderKL folder."""

    name = "vae"

    def __init__(self, config: VaeTrainConfig, train_set, data_dir: str | Path):
        self.config = config
        self.train_set = train_set
        self.data_dir = Path(data_dir)
        self.image_size = train_set.image_size
        self.crop = min(config.crop_size, self.image_size)
        self.images_per_step = config.batch_size
        vae_config = config.vae_config(self.image_size)
        factor = vae_config.downsampling_factor
        if self.crop % factor or self.image_size % factor:
            raise ValueError(f"crop_size {self.crop} and image size {self.image_size} must be multiples of the "
                             f"VAE downsampling factor {factor}")
        if not config.train_encoder and not config.init_from:
            raise ValueError("train_encoder=false keeps the encoder of init_from: set init_from to a trained VAE")
        torch.manual_seed(config.seed)
        self.vae = build_vae(vae_config)
        if config.init_from:
            _load_initial_vae(self.vae, config.init_from)
        if not config.train_encoder:
            for module in (self.vae.encoder, self.vae.quant_conv):
                module.requires_grad_(False)
        self.net = _VaeForward(self.vae)
        self.discriminator = PatchDiscriminator(config.discriminator) if config.adversarial_weight > 0 else None
        self.disc_net = self.discriminator
        self.accelerator = None
        self._sample_images: torch.Tensor | None = None

    def setup(self, accelerator) -> None:
        self.accelerator = accelerator
        use_cpu_training_attention(self.vae)  # its mid-block attention: the faster kernel on a CPU
        self.net = accelerator.prepare(self.net)
        if self.discriminator is not None:
            self.disc_net = accelerator.prepare(self.discriminator)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"vae": self.vae, **({"discriminator": self.discriminator} if self.discriminator is not None else {})}

    def trainable_parameters(self):
        vae = [p for p in self.vae.parameters() if p.requires_grad]
        if self.discriminator is None:
            return vae
        # the discriminator's gradients are clipped apart (fit's "clip_apart"): a joint norm would let the
        # one network's gradient scale shrink the other's steps
        return [{"params": vae}, {"params": list(self.discriminator.parameters()), "weight_decay": 0.0,
                                  "clip_apart": True}]

    def _batch(self, step: int, micro: int) -> torch.Tensor:
        from dallebrain.data.dataset import batch_indices

        rank = self.accelerator.process_index if self.accelerator is not None else 0
        cfg = self.config
        stream = step * cfg.gradient_accumulation + micro
        rows = batch_indices(len(self.train_set), cfg.batch_size, cfg.seed, stream, rank)
        images = np.stack([self.train_set.image(int(i)) for i in rows])
        rng = np.random.default_rng([cfg.seed, stream, rank, 1])
        crops = brain_crops(images, self.crop, rng, cfg.horizontal_flip)
        return torch.from_numpy(crops)[:, None]

    def loss(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        device = self.accelerator.device if self.accelerator is not None else torch.device("cpu")
        x = self._batch(step, micro).to(device)
        target = x * 2 - 1
        recon, kl = self.net(target)
        l1 = (recon - target).abs().mean()
        ssim = ssim_map(((recon + 1) / 2).float(), x.float()).mean()
        # LDM weighs the per-sample KL sum against the per-sample *sum* of pixel losses; ours are pixel means
        kl_per_pixel = kl.mean() / x[0].numel()
        reconstruction = l1 + self.config.ssim_weight * (1 - ssim)
        losses = {"loss": reconstruction + self.config.kl_weight * kl_per_pixel, "l1": l1, "ssim": ssim,
                  "kl": kl.mean()}
        if self.discriminator is not None:
            losses.update(self._adversarial(step, target, recon, reconstruction))
            # one backward trains both: the discriminator's loss reaches only its weights (decoded crops detached)
            # and the decoder's adversarial terms only the decoder's (features_frozen); "loss" logs their sum
            losses["loss"] = losses["loss"] + losses.pop("adversarial_total")
        return losses

    def _adversarial(self, step: int, real: torch.Tensor, decoded: torch.Tensor,
                     reconstruction: torch.Tensor) -> dict[str, torch.Tensor]:
        """The discriminator's hinge loss on real and (detached) decoded crops, and from adversarial_start the
        decoder's terms: -logits (adaptively weighted) and feature matching, through the discriminator with its
        weights held constant. Every key on every step, so losses.csv keeps one set of columns."""
        cfg = self.config
        # one pass over real and decoded together (GroupNorm is per image, so they do not mix): a
        # DistributedDataParallel module may run forward only once per backward
        both = self.disc_net(torch.cat([real, decoded.detach()]))
        real_features = [f[:len(real)] for f in both]
        d_loss = hinge_discriminator_loss(both[-1][:len(real)], both[-1][len(real):])
        zero = d_loss.new_zeros(())
        out = {"d_loss": d_loss, "d_real": both[-1][:len(real)].mean().detach(),
               "d_fake": both[-1][len(real):].mean().detach(), "g_adv": zero, "adv_weight": zero,
               "feature_matching": zero}
        total = d_loss
        if step >= cfg.adversarial_start:
            fake_features = features_frozen(self.discriminator, decoded)
            g_adv = -fake_features[-1].mean()
            weight = cfg.adversarial_weight * self._adaptive_weight(reconstruction, g_adv)
            matching = feature_matching_loss(fake_features, real_features)
            total = total + weight * g_adv + cfg.feature_matching_weight * matching
            out.update(g_adv=g_adv.detach(), adv_weight=weight, feature_matching=matching.detach())
        out["adversarial_total"] = total
        return out

    def _adaptive_weight(self, reconstruction: torch.Tensor, g_adv: torch.Tensor) -> torch.Tensor:
        """|grad of the reconstruction loss| / |grad of the adversarial loss| at the decoder's last layer
        (taming-transformers' calculate_adaptive_weight), clamped and held constant."""
        last = self.vae.decoder.conv_out.weight
        g_rec = torch.autograd.grad(reconstruction, last, retain_graph=True)[0]
        g_gan = torch.autograd.grad(g_adv, last, retain_graph=True)[0]
        return (g_rec.norm() / (g_gan.norm() + 1e-4)).clamp(0.0, 1e4).detach()

    def _held_out_images(self, count: int) -> torch.Tensor:
        dataset, _ = held_out(self.data_dir, self.config.seed, max_rows=count)
        return dataset.batch(range(len(dataset)))[0]

    def sample(self, step: int, path: Path) -> None:
        if self._sample_images is None:
            self._sample_images = self._held_out_images(8)
        vae = self.vae
        was_training = vae.training
        vae.eval()
        originals = self._sample_images
        recon = reconstruct(vae, originals)
        vae.train(was_training)
        save_image_grid(torch.cat([originals, recon]), path, columns=len(originals))

    @torch.no_grad()
    def latent_std(self, vae) -> float:
        """Std of posterior-mean latents (unscaled) of a fixed sample of whole training slices."""
        n = len(self.train_set)
        rows = np.random.default_rng(self.config.seed).choice(n, size=min(n, self.config.scaling_images),
                                                              replace=False)
        images = self.train_set.batch(sorted(int(i) for i in rows))[0]
        stds = []
        for i in range(0, len(images), 16):
            x = images[i:i + 16].to(device=vae.device, dtype=vae.dtype) * 2 - 1
            stds.append(vae.encode(x).latent_dist.mode().float().cpu())
        return float(torch.cat(stds).std())

    def export(self, out_dir: Path) -> None:
        from dallebrain.data.io import write_json_atomic

        vae = self.vae
        vae.eval()
        if self.config.train_encoder:
            std = self.latent_std(vae)
            if not math.isfinite(std) or std <= 0:
                raise FloatingPointError(f"latent std is {std}: the VAE did not train")
            vae.register_to_config(scaling_factor=1.0 / std)
        else:  # the encoder is init_from's: so are its latents and their scale, exactly
            std = 1.0 / float(vae.config.scaling_factor)
        vae.save_pretrained(out_dir, safe_serialization=True)
        dataset, split = held_out(self.data_dir, self.config.seed, max_rows=self.config.val_images)
        originals = dataset.batch(range(len(dataset)))[0]
        metrics = reconstruction_metrics(originals, reconstruct(vae, originals))
        metrics.update({"split": split, "scaling_factor": 1.0 / std, "latent_std": std})
        write_json_atomic(Path(out_dir) / "metrics.json", metrics)
        print("vae reconstruction (" + split + ", whole slices): "
              + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))


def _load_initial_vae(vae, folder: str | Path) -> None:
    """Copy a trained VAE's weights and scaling factor into `vae` (built from this config's architecture);
    another architecture is a one-line ValueError."""
    trained = load_vae(folder)
    own, theirs = vae.state_dict(), trained.state_dict()
    differ = [k for k in own if k not in theirs or theirs[k].shape != own[k].shape] + [
        k for k in theirs if k not in own]
    if differ:
        raise ValueError(f"the VAE in {folder} has another architecture ({len(differ)} tensors differ, e.g. "
                         f"{differ[0]}): set the same block_out_channels / layers_per_block / latent_channels")
    vae.load_state_dict(theirs)
    vae.register_to_config(scaling_factor=float(trained.config.scaling_factor))


def main(argv: list[str] | None = None) -> dict:
    """Train the VAE stage; returns fit's summary plus the export metrics (when the run finished)."""
    started = time.perf_counter()  # time_budget_s counts the data and caches too
    from dallebrain.data.dataset import SliceDataset
    from dallebrain.training.args import stage_config, stage_parser
    from dallebrain.training.loop import fit

    parser = stage_parser("vae", "Train the 1-channel AutoencoderKL on random brain crops.")
    args = parser.parse_args(argv)
    config = stage_config(VaeStage, VaeTrainConfig, args)
    stage = VaeStage(config, SliceDataset(args.data, "train"), args.data)
    summary = fit(stage, config, args.out, resume=args.resume, progress=not args.no_progress,
                  started=started)
    metrics_path = Path(args.out) / "metrics.json"
    if summary["steps"] == config.max_steps and metrics_path.exists():
        summary["metrics"] = json.loads(metrics_path.read_text())
    return summary


if __name__ == "__main__":
    main()
