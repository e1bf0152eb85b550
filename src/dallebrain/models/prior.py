"""The unCLIP prior (DALL-E 2): a diffusers `PriorTransformer` that turns a Brain-CLIP text embedding and the
caption's token states into a Brain-CLIP image embedding, by diffusion over the (normalised) image embedding.

diffusers' `PriorTransformer` projects the text token states with a Linear of width `embedding_dim`, i.e. it
assumes the text tower's width equals the CLIP embedding's (true of Kandinsky's CLIP, not of ours: MiniLM states
are 384-d, our embedding 32-256-d). `BrainPriorTransformer` only changes that projection's input width
(`text_hidden_dim`); forward, `clip_mean` / `clip_std`, `post_process_latents`, peft adapters are the stock ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import PriorTransformer
from diffusers.configuration_utils import register_to_config
from torch import nn

from dallebrain.models.text import HIDDEN_SIZE, MAX_TOKENS

PRIOR_SCHEDULER_FILE = "scheduler_config.json"  # the noise schedule travels inside the prior's folder


class BrainPriorTransformer(PriorTransformer):
    """`PriorTransformer` whose token-state projection maps `text_hidden_dim` (MiniLM: 384) to its width."""

    @register_to_config
    def __init__(self, num_attention_heads: int = 8, attention_head_dim: int = 32, num_layers: int = 6,
                 embedding_dim: int = 256, num_embeddings: int = MAX_TOKENS, additional_embeddings: int = 4,
                 dropout: float = 0.0, time_embed_act_fn: str = "silu", norm_in_type: str | None = "layer",
                 embedding_proj_norm_type: str | None = None, encoder_hid_proj_type: str | None = "linear",
                 added_emb_type: str | None = "prd", time_embed_dim: int | None = None,
                 embedding_proj_dim: int | None = None, clip_embed_dim: int | None = None,
                 text_hidden_dim: int = HIDDEN_SIZE):
        super().__init__(num_attention_heads=num_attention_heads, attention_head_dim=attention_head_dim,
                         num_layers=num_layers, embedding_dim=embedding_dim, num_embeddings=num_embeddings,
                         additional_embeddings=additional_embeddings, dropout=dropout,
                         time_embed_act_fn=time_embed_act_fn, norm_in_type=norm_in_type,
                         embedding_proj_norm_type=embedding_proj_norm_type,
                         encoder_hid_proj_type=encoder_hid_proj_type, added_emb_type=added_emb_type,
                         time_embed_dim=time_embed_dim, embedding_proj_dim=embedding_proj_dim,
                         clip_embed_dim=clip_embed_dim)
        if encoder_hid_proj_type == "linear":
            self.encoder_hidden_states_proj = nn.Linear(text_hidden_dim, num_attention_heads * attention_head_dim)


@dataclass
class PriorConfig:
    """Size of the prior; the embedding width comes from the Brain-CLIP it serves."""

    num_layers: int = 6  # transformer blocks
    num_attention_heads: int = 8  # heads per block
    attention_head_dim: int = 32  # channels per head (width = heads * head_dim)
    dropout: float = 0.0  # inside the transformer blocks


def build_prior(config: PriorConfig, embed_dim: int) -> BrainPriorTransformer:
    """A fresh prior for a Brain-CLIP of embedding size `embed_dim` (clip_mean 0, clip_std 1 until training
    sets them from the training image embeddings)."""
    prior = BrainPriorTransformer(num_attention_heads=config.num_attention_heads,
                                  attention_head_dim=config.attention_head_dim, num_layers=config.num_layers,
                                  embedding_dim=embed_dim, dropout=config.dropout)
    set_embedding_statistics(prior, torch.zeros(embed_dim), torch.ones(embed_dim))
    return prior


@torch.no_grad()
def set_embedding_statistics(prior: PriorTransformer, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Store the image-embedding statistics the prior works in (its `clip_mean` / `clip_std`); they are
    constants, not trained."""
    prior.clip_mean.copy_(mean.reshape(1, -1))
    prior.clip_std.copy_(std.reshape(1, -1))
    prior.clip_mean.requires_grad_(False)
    prior.clip_std.requires_grad_(False)


def normalise_embeddings(prior: PriorTransformer, image_embeds: torch.Tensor) -> torch.Tensor:
    """Image embeddings -> the space the prior diffuses in (the inverse of `post_process_latents`)."""
    return (image_embeds - prior.clip_mean.to(image_embeds.device)) / prior.clip_std.to(image_embeds.device)


def prior_scheduler_config() -> dict:
    """DDPM as DALL-E 2 / Karlo's prior ran it (diffusers folded UnCLIPScheduler into DDPMScheduler): cosine
    betas, the network predicts the clean embedding, predictions clipped to +-10 std, steps spread evenly."""
    return {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
            "prediction_type": "sample", "variance_type": "fixed_small_log", "clip_sample": True,
            "clip_sample_range": 10.0, "timestep_spacing": "linspace"}


def make_prior_scheduler(config: dict | None = None):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(config or prior_scheduler_config())


def save_prior(prior: PriorTransformer, folder: str | Path, scheduler_config: dict | None = None) -> Path:
    """save_pretrained (safetensors) plus the prior's noise schedule."""
    import json

    from dallebrain.data.io import write_text_atomic

    folder = Path(folder)
    prior.save_pretrained(folder, safe_serialization=True)
    write_text_atomic(folder / PRIOR_SCHEDULER_FILE,
                      json.dumps(scheduler_config or prior_scheduler_config(), indent=2) + "\n")
    return folder


def load_prior(folder: str | Path) -> tuple[BrainPriorTransformer, dict]:
    """(prior, its scheduler config) from a folder written by `save_prior` (safetensors only)."""
    import json

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"not a prior folder (no config.json): {folder}")
    prior = BrainPriorTransformer.from_pretrained(folder, use_safetensors=True)
    sched_path = folder / PRIOR_SCHEDULER_FILE
    scheduler_config = json.loads(sched_path.read_text()) if sched_path.is_file() else prior_scheduler_config()
    return prior.eval(), scheduler_config
