"""unCLIP decoder stage: a UNet2DConditionModel denoising cached VAE latents conditioned on the slice's cached
Brain-CLIP image embedding (Kandinsky 2.2 conditioning, see models/decoder.py), with embedding dropout (the
zero embedding) for classifier-free guidance, min-SNR weighting and EMA weights. With `unet.attributes` it also
reads each slice's ground-truth attributes (metadata.parquet, never its captions) with per-attribute dropout, as
the LDM stage does (models/decoder.py says why).

    dallebrain train decoder --data PREPARED --clip runs/clip --vae runs/vae --out runs/decoder [--into PIPELINE]

--out receives the decoder's save_pretrained folder (the EMA weights) with its noise schedule.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from dallebrain.models.conditioning import features_batch, table_attributes, training_dropout
from dallebrain.models.decoder import decoder_inputs, decoder_scheduler_config
from dallebrain.models.unet import UnetConfig
from dallebrain.training.cache import cached_arrays, dataset_meta, module_fingerprint, on_cache_device
from dallebrain.training.common import attach_to_pipeline, check_pipeline_parts
from dallebrain.training.config import TrainConfig
from dallebrain.training.diffusion import SeedStream, denoising_loss, ema_copy, micro_batch, update_ema
from dallebrain.training.loop import Stage, fit, prepare_trained, save_image_grid


@dataclasses.dataclass
class DecoderTrainConfig(TrainConfig):
    """Decoder settings: the UNet's architecture (as the LDM's) and how it is trained."""

    derived_settings: ClassVar[dict[str, str]] = {
        "unet.sample_size": "the VAE's latents", "unet.latent_channels": "the VAE's latents",
        "unet.extra_condition_tokens": "the stage (the image embedding enters through its projection)"}
    # cross_attention_dim: width of the 32 image-embedding tokens the UNet cross-attends to
    unet: UnetConfig = dataclasses.field(default_factory=lambda: UnetConfig(cross_attention_dim=256))
    embed_dropout: float = 0.1  # share of embeddings replaced by zeros so guidance has an unconditional model
    # with unet.attributes: each attribute left unstated with this probability (all of them where the embedding
    # is dropped), so a prompt silent on one samples the cohort's spread of it
    attribute_dropout: float = 0.3
    # with unet.attributes: share of the other embeddings replaced by zeros while the attributes stay: the
    # "attributes alone" input of attribute guidance (pipelines/text2mri.guide), which the model must have seen
    embed_only_dropout: float = 0.0
    max_rows: int = 0  # cache at most this many training slices (0: all)
    snr_gamma: float = 5.0  # min-SNR loss weighting (Hang et al. 2023); 0 disables
    ema_decay: float = 0.999  # exponential moving average of the weights (0: none)
    sample_steps: int = 20
    sample_guidance: float = 4.0
    # a trained UNet (the LDM's: a pipeline folder or its unet/) whose tensors of the same name and shape start the
    # decoder: the denoising blocks carry over, only the image-embedding path learns from scratch. Measured: the
    # shipped 800-step decoder trained from scratch speckled even on true embeddings (README "unCLIP")
    init_from: str = ""
    # "epsilon" or "v_prediction"; "" takes init_from's (the noise schedule saved beside its UNet), else
    # epsilon. Why: a warm start keeps its blocks' objective; a velocity LDM (v2.1) retrained to predict the
    # noise would first have to unlearn what it starts from
    prediction_type: str = ""

    def check(self) -> None:
        """ValueError (one line) for a setting value no run can use; called before any data is read."""
        if self.prediction_type:
            decoder_scheduler_config(self.prediction_type)
        for name in ("embed_dropout", "attribute_dropout", "embed_only_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def resolved_prediction_type(self) -> str:
        """The objective this run trains: the setting, else init_from's, else epsilon."""
        if self.prediction_type:
            return self.prediction_type
        if self.init_from:
            from dallebrain.models.unet import trained_prediction_type

            return trained_prediction_type(self.init_from) or "epsilon"
        return "epsilon"


def build_decoder_cache(dataset, vae, clip, folder: Path, batch_size: int = 32,
                        progress: bool = True) -> dict[str, np.ndarray]:
    """latents (N, C, h, w) float16 (posterior means, scaled) and image_embeds (N, D) of every slice."""
    from tqdm import tqdm

    from dallebrain.models.vae import encode_images

    meta = {**dataset_meta(dataset), "vae": module_fingerprint(vae), "clip": module_fingerprint(clip)}

    @torch.no_grad()
    def fill(tmp: Path) -> None:
        latents, embeds = [], []
        with on_cache_device(vae, clip):
            for start in tqdm(range(0, len(dataset), batch_size), desc="cache latents", disable=not progress):
                images, _ = dataset.batch(range(start, min(len(dataset), start + batch_size)))
                latents.append(encode_images(vae, images).half().cpu())
                embeds.append(clip.encode_image(images).float().cpu())
        np.save(tmp / "latents.npy", torch.cat(latents).numpy())
        np.save(tmp / "image_embeds.npy", torch.cat(embeds).numpy())

    return cached_arrays(folder, meta, fill)


class DecoderStage(Stage):
    name = "decoder"
    compilable = True  # a UNet2DConditionModel: compiles (tests/training/test_unclip_stages.py, slow)

    def __init__(self, config: DecoderTrainConfig, dataset, clip_dir: Path, vae_dir: Path, out_dir: Path,
                 progress: bool = True):
        from dallebrain.models.clip import BrainCLIP
        from dallebrain.models.decoder import build_decoder
        from dallebrain.models.vae import load_vae

        self.config, self.dataset = config, dataset
        self.clip = BrainCLIP.from_pretrained(clip_dir).eval()
        self.vae = load_vae(vae_dir).eval()
        cache = build_decoder_cache(dataset, self.vae, self.clip, Path(out_dir) / "cache", progress=progress)
        self.latents = torch.from_numpy(np.array(cache["latents"]))
        self.image_embeds = torch.from_numpy(np.array(cache["image_embeds"]))
        # ground truth of the cached rows (the cache holds the dataset's rows in order)
        self.attributes = (features_batch(table_attributes(dataset.table), config.unet.fine_level)
                           if config.unet.attributes else None)
        channels, size = self.latents.shape[1], self.latents.shape[-1]
        torch.manual_seed(config.seed)
        unet_config = dataclasses.replace(config.unet, sample_size=size, latent_channels=channels)
        self.unet = build_decoder(unet_config, self.image_embeds.shape[1])
        if config.init_from:
            import sys

            from dallebrain.models.unet import load_matching_weights

            copied, fresh = load_matching_weights(self.unet, config.init_from)
            print(f"decoder warm start from {config.init_from}: {copied} tensors copied, {len(fresh)} fresh",
                  file=sys.stderr, flush=True)
        self.prediction_type = config.resolved_prediction_type()
        self.ema = ema_copy(self.unet, config.ema_decay)
        self.noise = None
        self.images_per_step = config.batch_size

    def setup(self, accelerator) -> None:
        from diffusers import DDPMScheduler

        self.accelerator = accelerator
        self.vae.to(accelerator.device)
        self.clip.to(accelerator.device)
        if self.ema is not None:
            self.ema.to(accelerator.device)
        self.live = prepare_trained(accelerator, self.unet, self.config.compile)
        self.rank = accelerator.process_index
        self.noise = DDPMScheduler.from_config(decoder_scheduler_config(self.prediction_type))

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet, **({"ema": self.ema} if self.ema is not None else {})}

    def trainable_parameters(self):
        return list(self.unet.parameters())

    def loss(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        cfg, device = self.config, self.accelerator.device
        rows, rng = micro_batch(len(self.latents), cfg.batch_size, cfg.seed, step, micro, self.rank,
                                SeedStream.DECODER_EMBEDS)
        latents = self.latents[rows].float().to(device)
        embeds = self.image_embeds[rows].clone()
        drop = rng.random(len(rows)) < cfg.embed_dropout
        embeds[torch.from_numpy(drop)] = 0.0
        attributes = None
        if self.attributes is not None:  # drawn after the embeddings': runs without attributes keep their stream
            # a dropped embedding drops every attribute too: the unconditional model
            attributes = training_dropout(self.attributes[rows], rng, cfg.attribute_dropout, drop).to(device)
            embeds[torch.from_numpy(rng.random(len(rows)) < cfg.embed_only_dropout)] = 0.0
        conditioning = decoder_inputs(embeds.to(device), attributes)
        return denoising_loss(lambda x, t: self.live(x, t, **conditioning).sample, self.noise, latents,
                              cfg.snr_gamma)

    def after_optimizer_step(self, step: int) -> None:
        if self.ema is not None:
            update_ema(self.ema, self.unet, step, self.config.ema_decay)

    def final_unet(self):
        return self.ema if self.ema is not None else self.unet

    def sample(self, step: int, path: Path) -> None:
        """Top row: training slices; bottom row: the decoder's slices from their embeddings."""
        from dallebrain.pipelines.unclip import UnCLIPPipeline

        unet = self.final_unet().eval()
        pipe = UnCLIPPipeline(self.clip, self.vae, None, unet, None, decoder_scheduler_config(self.prediction_type))
        rows = list(range(min(4, len(self.dataset))))
        images = self.dataset.batch(rows)[0]
        decoded = pipe.decode_embeddings(self.image_embeds[rows], [0] * len(rows), self.config.sample_steps,
                                         self.config.sample_guidance)
        save_image_grid(torch.cat([images, torch.from_numpy(decoded)[:, None]]), path, columns=len(rows))
        unet.train()

    def export(self, out_dir: Path) -> None:
        from dallebrain.models.decoder import save_decoder

        save_decoder(self.final_unet(), out_dir, self.prediction_type)


def main(argv: list[str] | None = None) -> dict:
    """Train the unCLIP decoder; returns fit's summary."""
    started = time.perf_counter()  # time_budget_s counts the data and caches too
    from dallebrain.data.dataset import SliceDataset
    from dallebrain.training.args import stage_config, stage_parser

    parser = stage_parser("decoder", "Train the unCLIP decoder (Brain-CLIP image embedding -> VAE latents).")
    parser.add_argument("--clip", type=Path, required=True, help="Brain-CLIP folder (dallebrain train clip)")
    parser.add_argument("--vae", type=Path, required=True, help="VAE folder (dallebrain train vae)")
    parser.add_argument("--into", type=Path, default=None, metavar="PIPELINE",
                        help="after export, copy the decoder into PIPELINE/decoder (and --clip / --vae if absent)")
    args = parser.parse_args(argv)
    config = stage_config(DecoderStage, DecoderTrainConfig, args)
    parts = {"clip": args.clip, "vae": args.vae}
    if args.into is not None:
        check_pipeline_parts(args.into, parts)  # fail before training, not after
    dataset = SliceDataset(args.data, "train", max_rows=config.max_rows or None, seed=config.seed)
    stage = DecoderStage(config, dataset, args.clip, args.vae, args.out, progress=not args.no_progress)
    summary = fit(stage, config, args.out, resume=args.resume, progress=not args.no_progress,
                  started=started)
    if summary["steps"] == config.max_steps and args.into is not None:
        from dallebrain.data.prepare import read_settings

        try:
            grid = read_settings(dataset.root).get("grid")
        except FileNotFoundError:
            grid = None
        attach_to_pipeline(args.into, "decoder", args.out, parts,
                           {"image_size": int(dataset.image_size), "grid": grid, "decoder_steps": config.max_steps})
    return summary


if __name__ == "__main__":
    main()
