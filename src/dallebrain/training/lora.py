"""LoRA stage: low-rank adapters (peft) on the attention of a frozen Stable-Diffusion-format UNet (and
optionally its text encoder), trained on a prepared data set, as diffusers'
examples/text_to_image/train_text_to_image_lora.py does.

The base is any diffusers StableDiffusionPipeline folder on disk: ours (BertModel text encoder, full or
compact, 1-channel VAE) or a stock one (CLIPTextModel + CLIPTokenizer, 3-channel VAE: the grey slice is
replicated to 3 channels). The output folder holds `pytorch_lora_weights.safetensors` in the standard
diffusers/peft format (`StableDiffusionPipeline.load_lora_weights(folder)` reads it;
`dallebrain.pipelines.lora.apply_lora` too) and `adapter_info.json` (base path and hash, rank, targets).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dallebrain.models.attention import use_cpu_training_attention
from dallebrain.training.cache import caption_texts
from dallebrain.training.common import data_provenance
from dallebrain.training.config import TrainConfig
from dallebrain.training.diffusion import SAMPLE_PROMPTS, SeedStream, denoising_loss, micro_batch
from dallebrain.training.loop import Stage, fit, save_image_grid, unwrap
from dallebrain.vocab import LORA_WEIGHT_NAME as WEIGHT_NAME

INFO_NAME = "adapter_info.json"
BASE_RECORD = "lora_base.json"  # which base a run started from, so --resume cannot switch bases

UNET_CROSS_ATTENTION = ["attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0"]
UNET_SELF_ATTENTION = ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0"]
# attention projections per text-encoder family (names as peft matches them: a suffix after a dot)
TEXT_ATTENTION = {
    "clip": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"],
    "bert": ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"],
}


@dataclasses.dataclass
class LoraTrainConfig(TrainConfig):
    """LoRA settings: the adapters' size and placement, and how they are trained."""

    rank: int = 8  # rank of each low-rank update
    alpha: float = 8.0  # lora_alpha: the update is scaled by alpha / rank
    dropout: float = 0.0  # dropout on the LoRA branch
    self_attention: bool = False  # also adapt the UNet's self-attention (attn1), not only cross-attention (attn2)
    text_encoder: bool = False  # also adapt the text encoder's attention (its states are then computed each step)
    caption_dropout: float = 0.1  # share of captions replaced by "" so guidance keeps an unconditional model
    phrasings: int = 2  # caption phrasings per slice (the canonical one first)
    max_rows: int = 0  # train on at most this many slices (0: all)
    snr_gamma: float = 5.0  # min-SNR loss weighting (Hang et al. 2023); 0 disables
    sample_steps: int = 20


@dataclass
class BaseModel:
    """The frozen components of a Stable-Diffusion-format folder."""

    folder: Path
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict
    text_family: str  # "clip" or "bert"


def load_base(folder: str | Path) -> BaseModel:
    """Load a StableDiffusionPipeline folder (safetensors only) component by component, so a compact text
    encoder and a 3-channel VAE both work; one-line ValueError when it is not one."""
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from dallebrain.pipelines.folder import check_model_folder
    from dallebrain.pipelines.text_encoder import DELTA_FILE, load_pipeline_text_encoder

    folder = check_model_folder(folder, image_channels=(1, 3))  # stock SD bases are RGB
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ValueError(f"not a diffusers pipeline folder (no model_index.json): {folder}")
    index = json.loads(index_path.read_text())
    text_class = (index.get("text_encoder") or [None, None])[1]
    tokenizer_class = (index.get("tokenizer") or [None, None])[1]
    if text_class == "BertModel" or (folder / "text_encoder" / DELTA_FILE).exists():
        text_encoder = load_pipeline_text_encoder(folder / "text_encoder")
    elif text_class and hasattr(transformers, text_class):
        text_encoder = getattr(transformers, text_class).from_pretrained(str(folder / "text_encoder"),
                                                                        use_safetensors=True)
    else:
        raise ValueError(f"unsupported text encoder {text_class!r} in {folder}: expected CLIPTextModel or BertModel")
    if not tokenizer_class or not hasattr(transformers, tokenizer_class):
        raise ValueError(f"unsupported tokenizer {tokenizer_class!r} in {folder}")
    tokenizer = getattr(transformers, tokenizer_class).from_pretrained(str(folder / "tokenizer"))
    if tokenizer.model_max_length > 4096:  # "unset" in transformers: fall back to the encoder's positions
        tokenizer.model_max_length = text_encoder.config.max_position_embeddings
    names = [n for n, _ in text_encoder.named_modules()]
    family = next((f for f, targets in TEXT_ATTENTION.items() if any(n.endswith(targets[0]) for n in names)), None)
    if family is None:
        raise ValueError(f"unsupported text encoder {type(text_encoder).__name__} in {folder}: no CLIP or BERT "
                         "attention layers")
    kw = {"use_safetensors": True}
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", **kw)
    from dallebrain.models.conditioning import fold_unstated, uses_attributes

    if uses_attributes(unet):
        # Adapters learn on the base with every attribute unstated (the captions still say them), which is a
        # stock UNet after folding; at inference they sit on the attention layers of the attribute model.
        fold_unstated(unet)
    vae = AutoencoderKL.from_pretrained(folder / "vae", **kw)
    if vae.config.in_channels not in (1, 3):
        raise ValueError(f"unsupported VAE with {vae.config.in_channels} input channels in {folder}: expected 1 or 3")
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False).eval()
    return BaseModel(folder, unet, vae, text_encoder, tokenizer, scheduler_config, family)


def encode_slices(vae, images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) grey slices in [0, 1] -> scaled latents of a 1- or 3-channel VAE (grey replicated)."""
    x = images.to(device=vae.device, dtype=vae.dtype) * 2 - 1
    x = x.expand(-1, vae.config.in_channels, -1, -1)
    return vae.encode(x).latent_dist.mode() * vae.config.scaling_factor


def encode_prompts(text_encoder, tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states and mask as StableDiffusionPipeline.encode_prompt computes them: padded to the tokenizer's
    model_max_length, the mask passed only to encoders whose config asks for it (ours do, CLIP does not)."""
    device = next(text_encoder.parameters()).device
    tok = tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt")
    mask = tok["attention_mask"].to(device) if getattr(text_encoder.config, "use_attention_mask", False) else None
    return text_encoder(tok["input_ids"].to(device), attention_mask=mask)[0], tok["attention_mask"].bool()


def build_lora_cache(dataset, base: BaseModel, folder: Path, phrasings: int, with_text: bool,
                     batch_size: int = 32, progress: bool = True):
    """The shared latent cache, with this base's VAE (1 or 3 channels) and tokenisation."""
    from dallebrain.training.cache import build_latent_cache

    return build_latent_cache(
        dataset, base.vae, base.text_encoder, base.tokenizer, folder, phrasings, batch_size, progress,
        encode_fn=lambda images: encode_slices(base.vae, images),
        text_fn=lambda texts: encode_prompts(base.text_encoder, base.tokenizer, texts),
        with_text=with_text, extra_meta={"max_length": int(base.tokenizer.model_max_length)})


class LoraWeights(torch.nn.Module):
    """The trainable (LoRA) tensors of a model: what a checkpoint holds, instead of the frozen base."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        object.__setattr__(self, "_model", model)  # not a submodule: its frozen weights stay out of state_dict

    def _trainable(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self._model.named_parameters() if p.requires_grad}

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self._trainable().items()}

    @torch.no_grad()
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        own = self._trainable()
        if set(own) != set(state_dict):
            raise ValueError("the checkpoint's LoRA tensors do not match this run (rank, targets or base changed?)")
        for name, param in own.items():
            if param.shape != state_dict[name].shape:
                raise ValueError(f"the checkpoint's LoRA tensor {name} has shape {tuple(state_dict[name].shape)}, "
                                 f"this run's {tuple(param.shape)} (rank or base changed?)")
            param.copy_(state_dict[name])


def add_text_encoder_adapter(text_encoder, config, adapter_name: str = "default") -> None:
    """peft adapters on a transformers text encoder. peft's own injection rather than transformers'
    `add_adapter`, which transformers 5 refuses with peft < 0.22 (installed: 0.21)."""
    from peft import inject_adapter_in_model

    inject_adapter_in_model(config, text_encoder, adapter_name=adapter_name)
    # where get_peft_model_state_dict (and transformers' own add_adapter) keep the config
    text_encoder.peft_config = {**(getattr(text_encoder, "peft_config", None) or {}), adapter_name: config}


class LoraStage(Stage):
    name = "lora"

    def __init__(self, config: LoraTrainConfig, dataset, base_dir: Path, out_dir: Path, base_hash: str = "",
                 progress: bool = True):
        from diffusers import DDPMScheduler
        from peft import LoraConfig

        if config.rank < 1:
            raise ValueError(f"rank must be at least 1, got {config.rank}")
        if not 0 <= config.dropout < 1 or not 0 <= config.caption_dropout < 1:
            raise ValueError("dropout and caption_dropout must be in [0, 1)")
        self.config, self.dataset, self.out_dir = config, dataset, Path(out_dir)
        self.base_hash, self.progress = base_hash, progress
        self.base = load_base(base_dir)
        self.noise = DDPMScheduler.from_config(self.base.scheduler_config)
        if self.noise.config.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"unsupported prediction_type {self.noise.config.prediction_type!r} of the base "
                             "scheduler: expected epsilon or v_prediction")
        self.unet_targets = UNET_CROSS_ATTENTION + (UNET_SELF_ATTENTION if config.self_attention else [])
        self.text_targets = TEXT_ATTENTION[self.base.text_family] if config.text_encoder else []
        torch.manual_seed(config.seed)  # the gaussian init of lora_A
        self.base.unet.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                              init_lora_weights="gaussian", target_modules=self.unet_targets))
        self.unet = self.base.unet
        self.text_encoder = self.base.text_encoder
        if config.text_encoder:
            add_text_encoder_adapter(self.text_encoder, LoraConfig(
                r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, init_lora_weights="gaussian",
                target_modules=self.text_targets))
        self.images_per_step = config.batch_size

    def setup(self, accelerator) -> None:
        self.accelerator = accelerator
        self.rank = accelerator.process_index
        device = accelerator.device
        self.base.vae.to(device)
        self.text_encoder.to(device)
        with accelerator.main_process_first():  # one process builds the cache, the others read it
            self.cache = build_lora_cache(self.dataset, self.base, self.out_dir / "cache", self.config.phrasings,
                                          with_text=not self.config.text_encoder,
                                          progress=self.progress and accelerator.is_local_main_process)
        self.unet = accelerator.prepare(use_cpu_training_attention(self.unet.to(device).train()))
        if self.config.text_encoder:
            self.text_encoder = accelerator.prepare(self.text_encoder.train())

    def _models(self) -> dict[str, torch.nn.Module]:
        models = {"unet": unwrap(self.accelerator, self.unet)}
        if self.config.text_encoder:
            models["text_encoder"] = unwrap(self.accelerator, self.text_encoder)
        return models

    def modules(self) -> dict[str, torch.nn.Module]:
        return {f"{name}_lora": LoraWeights(model) for name, model in self._models().items()}

    def trainable_parameters(self):
        return [p for model in self._models().values() for p in model.parameters() if p.requires_grad]

    def conditioning(self, rows: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """Text states of a batch: one random phrasing per row, "" for a caption_dropout share."""
        cfg = self.config
        phrasing = rng.integers(cfg.phrasings, size=len(rows))
        drop = rng.random(len(rows)) < cfg.caption_dropout
        if not cfg.text_encoder:
            states = self.cache.text(rows, phrasing).float()
            states[torch.from_numpy(drop)] = self.cache.uncond.float()
            return states.to(self.accelerator.device)
        texts = ["" if d else t for d, t in zip(drop, caption_texts(self.dataset, rows, phrasing), strict=True)]
        return encode_prompts(self.text_encoder, self.base.tokenizer, texts)[0].float()

    def loss(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        cfg = self.config
        device = self.accelerator.device
        rows, rng = micro_batch(len(self.cache), cfg.batch_size, cfg.seed, step, micro, self.rank,
                                SeedStream.CAPTIONS)
        latents = self.cache.latents[rows].float().to(device)
        states = self.conditioning(rows, rng)
        return denoising_loss(lambda x, t: self.unet(x, t, encoder_hidden_states=states).sample, self.noise,
                              latents, cfg.snr_gamma)

    def pipeline(self):
        """The base with the adapters in training, as a stock in-memory StableDiffusionPipeline."""
        from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

        models = self._models()
        return StableDiffusionPipeline(self.base.vae, models.get("text_encoder", self.base.text_encoder),
                                       self.base.tokenizer, models["unet"],
                                       DPMSolverMultistepScheduler.from_config(self.base.scheduler_config),
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)

    @torch.no_grad()
    def sample(self, step: int, path: Path) -> None:
        pipe = self.pipeline()
        size = self.cache.latents.shape[-1] * pipe.vae_scale_factor
        pipe.unet.eval()
        try:
            images = pipe(SAMPLE_PROMPTS, num_inference_steps=self.config.sample_steps, height=size, width=size,
                          output_type="np", generator=torch.Generator("cpu").manual_seed(0)).images
        finally:
            pipe.unet.train()
        grey = torch.from_numpy(np.asarray(images)).mean(dim=-1, keepdim=True).permute(0, 3, 1, 2)
        save_image_grid(grey, path)

    def export(self, out_dir: Path) -> None:
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        from dallebrain.data.io import atomic_path, write_json_atomic

        out_dir = Path(out_dir)
        models = self._models()
        layers, metadata = {}, {}
        for name, model in models.items():
            layers[f"{name}_lora_layers"] = convert_state_dict_to_diffusers(get_peft_model_state_dict(model))
            metadata[f"{name}_lora_adapter_metadata"] = model.peft_config["default"].to_dict()
        with atomic_path(out_dir / WEIGHT_NAME) as tmp:
            StableDiffusionPipeline.save_lora_weights(tmp.parent, **layers, **metadata, safe_serialization=True,
                                                      weight_name=tmp.name)
        cfg = self.config
        info = {"format": "diffusers/peft LoRA: StableDiffusionPipeline.load_lora_weights(folder) or "
                          "dallebrain.pipelines.lora.apply_lora(unet, folder, scale)",
                "weights": WEIGHT_NAME, "base": str(self.base.folder.resolve()), "base_hash": self.base_hash,
                "rank": cfg.rank, "alpha": cfg.alpha, "dropout": cfg.dropout,
                "targets": {"unet": self.unet_targets, "text_encoder": self.text_targets},
                "steps": cfg.max_steps, "image_size": int(self.dataset.image_size),
                "trained_on": {**data_provenance(self.dataset), "slices": len(self.dataset)}}
        write_json_atomic(out_dir / INFO_NAME, info)


def _check_base_record(out: Path, base: Path, base_hash: str, resume: bool) -> None:
    """A resumed run must continue on the base it started from."""
    from dallebrain.data.io import write_json_atomic

    record = out / BASE_RECORD
    if resume and record.exists():
        previous = json.loads(record.read_text())
        if previous.get("base_hash") != base_hash:
            raise ValueError(f"--base {base} is not the base this run started from ({previous.get('base')}): "
                             "resume with that base, or choose another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record, {"base": str(base.resolve()), "base_hash": base_hash})


def main(argv: list[str] | None = None) -> dict:
    started = time.perf_counter()  # time_budget_s counts the data and caches too
    from dallebrain.data.dataset import SliceDataset
    from dallebrain.pipelines.folder import check_model_folder, folder_hash
    from dallebrain.training.args import stage_config, stage_parser
    from dallebrain.training.checkpoint import latest_checkpoint

    parser = stage_parser("lora", "Train LoRA adapters on the attention of a frozen Stable-Diffusion-format "
                                  "pipeline (ours or a stock one).")
    parser.add_argument("--base", type=Path, required=True, help="base pipeline folder (diffusers "
                        "StableDiffusionPipeline layout, safetensors)")
    args = parser.parse_args(argv)
    config = stage_config(LoraStage, LoraTrainConfig, args)
    base = check_model_folder(args.base, image_channels=(1, 3))
    if not args.resume and latest_checkpoint(args.out / "checkpoints") is not None:
        raise ValueError(f"{args.out} already holds a training run: pass --resume to continue it, or choose "
                         "another --out")
    base_hash = folder_hash(base)
    _check_base_record(args.out, base, base_hash, args.resume)
    dataset = SliceDataset(args.data, "train", max_rows=config.max_rows or None, seed=config.seed,
                           columns=("captions",))
    stage = LoraStage(config, dataset, base, args.out, base_hash, progress=not args.no_progress)
    return fit(stage, config, args.out, resume=args.resume, progress=not args.no_progress,
               started=started)


if __name__ == "__main__":
    main()
