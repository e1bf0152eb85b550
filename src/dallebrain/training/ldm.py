"""Latent diffusion stage: a UNet2DConditionModel denoising cached VAE latents, conditioned on cached
text-token states, with caption dropout for classifier-free guidance, min-SNR weighting and EMA weights.
Its output folder is a complete text-to-image pipeline (stock diffusers layout)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import ClassVar

import torch

from dallebrain.models.conditioning import features_batch, table_attributes, training_dropout
from dallebrain.models.unet import UnetConfig, build_unet, load_initial_weights, noise_scheduler_config
from dallebrain.training.common import data_provenance
from dallebrain.training.config import TrainConfig
from dallebrain.training.diffusion import SAMPLE_PROMPTS, SeedStream, denoising_loss, ema_copy, micro_batch, update_ema
from dallebrain.training.loop import Stage, fit, prepare_trained, save_image_grid, unwrap


@dataclasses.dataclass
class LdmTrainConfig(TrainConfig):
    """LDM settings: the UNet's architecture and how it is trained."""

    derived_settings: ClassVar[dict[str, str]] = {
        "unet.sample_size": "the VAE's latents", "unet.latent_channels": "the VAE's latents",
        "unet.cross_attention_dim": "the text encoder (MiniLM's width)",
        "unet.extra_condition_tokens": "the stage (the LDM is conditioned on text only)"}
    unet: UnetConfig = dataclasses.field(default_factory=UnetConfig)  # see UnetConfig
    caption_dropout: float = 0.1  # share of captions replaced by "" so guidance has an unconditional model
    # with unet.attributes: each attribute is left unstated with this probability (every attribute is when the
    # caption is dropped), so a prompt silent on one samples the cohort's spread of it
    attribute_dropout: float = 0.3
    # with unet.attributes: share of the other captions replaced by "" while the attributes stay, so the
    # attribute path alone must carry plane, contrast, age...: with the caption always there the text tokens did
    # that work and the attribute path stayed weak (same-seed 85/20 ventricle ratio 1.2, cohort 4.9)
    caption_only_dropout: float = 0.0
    init_from: str = ""  # a trained UNet (or pipeline) folder to start from: fine-tuning, e.g. adding attributes
    # the attribute projection (the UNet's class embedding) trains at learning_rate times this. Why: a fine-tune of a
    # converged UNet at its small rate barely moves a newly widened projection (unet.fine_level from v2.7.1, 1750
    # steps at 1e-4: the new inputs' weights 0.0023 on average against the old ones' 0.068; BENCHMARKS.md)
    attribute_learning_rate_scale: float = 1.0
    phrasings: int = 2  # cached caption phrasings per slice (the canonical one first)
    max_rows: int = 0  # cache at most this many training slices (0: all)
    snr_gamma: float = 5.0  # min-SNR loss weighting (Hang et al. 2023); 0 disables
    # "epsilon" or "v_prediction" (models/unet.py PREDICTION_TYPES); written into the exported scheduler. A UNet
    # trained on one can be fine-tuned to the other with init_from (Stable Diffusion 2's -v models were)
    prediction_type: str = "epsilon"
    ema_decay: float = 0.999  # exponential moving average of the weights (0: none)
    compact_text_encoder: bool = False  # store only the text-encoder weights that differ from MiniLM
    sample_steps: int = 20
    # how often each contrast's slices are drawn, relative to the others ("FLAIR=2": FLAIR slices twice as
    # often as each other contrast; unnamed contrasts 1; "" draws every row alike). Why: in one UNet a contrast
    # may learn its conditioning more slowly than the others (FLAIR's age response, README)
    modality_weights: str = ""

    def check(self) -> None:
        """ValueError (one line) for a setting value no run can use; called before any data is read."""
        noise_scheduler_config(self.prediction_type)
        parse_modality_weights(self.modality_weights)
        if not 0 < self.attribute_learning_rate_scale < float("inf"):
            raise ValueError(f"attribute_learning_rate_scale must be a positive number, got "
                             f"{self.attribute_learning_rate_scale}")


def parse_modality_weights(spec: str) -> dict[str, float]:
    """{"FLAIR": 2.0} from "FLAIR=2" (comma-separated); ValueError (one line) for anything else."""
    weights = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, value = item.partition("=")
        try:
            weight = float(value) if sep else float("nan")
        except ValueError:
            weight = float("nan")
        if not name.strip() or not weight > 0 or weight == float("inf"):
            raise ValueError(f"modality_weights: expected CONTRAST=POSITIVE_NUMBER[,...] (e.g. FLAIR=2), got {item!r}")
        weights[name.strip()] = weight
    return weights


def row_weights(table, spec: str):
    """Each row's probability of being drawn under `modality_weights` (None: uniform); ValueError naming a
    contrast the data does not hold."""
    import numpy as np

    weights = parse_modality_weights(spec)
    if not weights:
        return None
    held = set(table["modality"])
    missing = sorted(set(weights) - held)
    if missing:
        raise ValueError(f"modality_weights names {', '.join(missing)}, not in the data (it holds "
                         f"{', '.join(sorted(held))})")
    per_row = table["modality"].map(lambda m: weights.get(m, 1.0)).to_numpy(dtype=np.float64)
    return per_row / per_row.sum()


def unet_config_of(config: LdmTrainConfig, latent_channels: int, sample_size: int) -> UnetConfig:
    """The configured UNet, sized for the VAE's latents."""
    return dataclasses.replace(config.unet, sample_size=sample_size, latent_channels=latent_channels)


def load_conditioning(clip_dir: Path | None):
    """The text encoder the LDM is conditioned on: the brain-CLIP-tuned MiniLM when a CLIP folder is given,
    else the pretrained MiniLM."""
    from dallebrain.models.text import load_text_encoder, load_tokenizer

    if clip_dir is None:
        return load_text_encoder(), load_tokenizer()
    from dallebrain.models.clip import BrainCLIP

    encoder = BrainCLIP.from_pretrained(clip_dir).text_encoder_for_diffusers()
    encoder.config.use_attention_mask = True
    return encoder.eval(), load_tokenizer()


class LdmStage(Stage):
    name = "ldm"
    compilable = True  # a UNet2DConditionModel: compiles (tests/training/test_compile.py)

    def __init__(self, config: LdmTrainConfig, dataset, vae_dir: Path, clip_dir: Path | None, out_dir: Path,
                 progress: bool = True):
        from diffusers import DDPMScheduler

        from dallebrain.models.vae import load_vae
        from dallebrain.pipelines.leak_table import fit_leak_table
        from dallebrain.pipelines.signal_leak import training_latent_mean
        from dallebrain.training.cache import build_latent_cache

        self.config, self.dataset, self.clip_dir, self.out_dir = config, dataset, clip_dir, Path(out_dir)
        self.scheduler_config = noise_scheduler_config(config.prediction_type)  # a bad value: refused before any work
        self.vae = load_vae(vae_dir).eval()
        self.text_encoder, self.tokenizer = load_conditioning(clip_dir)
        self.cache = build_latent_cache(dataset, self.vae, self.text_encoder, self.tokenizer,
                                        self.out_dir / "cache", config.phrasings, progress=progress)
        channels, size = self.cache.latents.shape[1], self.cache.latents.shape[-1]
        # where sampling starts from (pipelines/signal_leak.py): recorded in the exported dallebrain.json
        self.latent_mean = training_latent_mean(self.cache.latents)
        # and per prompt (pipelines/leak_table.py), unless no group of slices holds enough subjects (a tiny cohort)
        try:
            self.leak_table = fit_leak_table(self.cache.latents, dataset.table)
        except ValueError:
            self.leak_table = None
        torch.manual_seed(config.seed)
        self.unet = build_unet(unet_config_of(config, channels, size))
        if config.init_from:
            load_initial_weights(self.unet, Path(config.init_from))
        # ground truth from metadata.parquet, never re-parsed from the captions
        self.attributes = (features_batch(table_attributes(dataset.table), config.unet.fine_level)
                           if config.unet.attributes else None)
        self.row_weights = row_weights(dataset.table, config.modality_weights)
        self.ema = ema_copy(self.unet, config.ema_decay)
        self.noise = DDPMScheduler.from_config(self.scheduler_config)
        self.images_per_step = config.batch_size

    def setup(self, accelerator) -> None:
        self.accelerator = accelerator
        # beside the trained UNet: its EMA (updated from it every step) and what sampling runs (the VAE and text
        # encoder, back on the CPU after the cache); on a GPU a CPU-side EMA fails at the first update
        for module in (self.ema, self.vae, self.text_encoder):
            if module is not None:
                module.to(accelerator.device)
        self.unet = prepare_trained(accelerator, self.unet, self.config.compile)
        self.rank = accelerator.process_index

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet, **({"ema": self.ema} if self.ema is not None else {})}

    def trainable_parameters(self):
        """Every UNet parameter; two AdamW groups when the attribute projection has its own rate."""
        scale = self.config.attribute_learning_rate_scale
        if scale == 1.0 or self.unet.class_embedding is None:
            return list(self.unet.parameters())
        projection = list(self.unet.class_embedding.parameters())
        mine = {id(p) for p in projection}
        rest = [p for p in self.unet.parameters() if id(p) not in mine]
        return [{"params": rest, "lr": self.config.learning_rate},
                {"params": projection, "lr": self.config.learning_rate * scale}]

    def loss(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        cfg = self.config
        device = self.accelerator.device
        rows, rng = micro_batch(len(self.cache), cfg.batch_size, cfg.seed, step, micro, self.rank,
                                SeedStream.CAPTIONS, self.row_weights)
        latents = self.cache.latents[rows].float().to(device)
        states = self.cache.text(rows, rng.integers(self.cache.phrasings, size=len(rows))).float()
        drop = torch.from_numpy(rng.random(len(rows)) < cfg.caption_dropout)
        states[drop] = self.cache.uncond.float()
        extra = {}
        if self.attributes is not None:
            attributes = training_dropout(self.attributes[rows], rng, cfg.attribute_dropout, drop.numpy())
            if cfg.caption_only_dropout > 0:  # drawn last: runs without it keep their random stream
                states[torch.from_numpy(rng.random(len(rows)) < cfg.caption_only_dropout)] = self.cache.uncond.float()
            extra["class_labels"] = attributes.to(device)
        states = states.to(device)
        return denoising_loss(lambda x, t: self.unet(x, t, encoder_hidden_states=states, **extra).sample,
                              self.noise, latents, cfg.snr_gamma)

    def after_optimizer_step(self, step: int) -> None:
        if self.ema is not None:
            update_ema(self.ema, unwrap(self.accelerator, self.unet), step, self.config.ema_decay)

    def final_unet(self):
        return self.ema if self.ema is not None else unwrap(self.accelerator, self.unet)

    def pipeline(self):
        from dallebrain.pipelines.text2mri import Text2MRIPipeline

        pipe = Text2MRIPipeline(self.vae, self.text_encoder, self.tokenizer, self.final_unet().eval(),
                                self.scheduler_config)
        pipe.latent_mean = torch.tensor(self.latent_mean)  # the training samples start as generate's do
        pipe.leak_table = self.leak_table
        return pipe

    def sample(self, step: int, path: Path) -> None:
        pipe = self.pipeline()
        images = [torch.from_numpy(pipe(p, n=1, seed=0, steps=self.config.sample_steps).images)
                  for p in SAMPLE_PROMPTS]
        save_image_grid(torch.cat(images)[:, None], path)
        self.final_unet().train()

    def export(self, out_dir: Path) -> None:
        from dallebrain.data.prepare import read_settings
        from dallebrain.pipelines.export import write_ldm_pipeline

        try:
            settings = read_settings(self.dataset.root)
        except FileNotFoundError:
            settings = {}
        info = {"image_size": int(self.dataset.image_size), "grid": settings.get("grid"),
                "trained_on": {**data_provenance(self.dataset), "source": settings.get("source"),
                               "slices": len(self.dataset),
                               "subjects": int(self.dataset.table["subject_id"].nunique())},
                "ldm_steps": self.config.max_steps, "sampling": {"latent_mean": self.latent_mean}}
        write_ldm_pipeline(Path(out_dir), self.final_unet(), self.vae, self.text_encoder, self.tokenizer,
                           self.clip_dir, info, self.config.compact_text_encoder, self.leak_table,
                           self.scheduler_config)


def main(argv: list[str] | None = None) -> dict:
    started = time.perf_counter()  # time_budget_s counts the data and caches too
    from dallebrain.data.dataset import SliceDataset
    from dallebrain.training.args import stage_config, stage_parser

    parser = stage_parser("ldm", "Train the latent diffusion UNet (writes a complete text-to-image pipeline).")
    parser.add_argument("--vae", type=Path, required=True, help="VAE folder (dallebrain train vae)")
    parser.add_argument("--clip", type=Path, default=None, help="brain-CLIP folder: its tuned text tower conditions "
                        "the UNet (default: the pretrained MiniLM)")
    args = parser.parse_args(argv)
    config = stage_config(LdmStage, LdmTrainConfig, args)
    dataset = SliceDataset(args.data, "train", max_rows=config.max_rows or None, seed=config.seed,
                           columns=("captions", "subject_id"))
    stage = LdmStage(config, dataset, args.vae, args.clip, args.out, progress=not args.no_progress)
    summary = fit(stage, config, args.out, resume=args.resume, progress=not args.no_progress,
                  started=started)
    return summary


if __name__ == "__main__":
    main()
