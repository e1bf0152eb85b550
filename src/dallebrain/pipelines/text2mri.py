"""Text -> brain MRI slice with latent diffusion (the Stable Diffusion route), inference only.

The folder it reads is a stock diffusers StableDiffusionPipeline folder (BertModel text encoder, 1-channel
AutoencoderKL, UNet2DConditionModel), so `diffusers.StableDiffusionPipeline.from_pretrained` loads it too;
this class adds what brain MRI needs: grey-scale float output, a per-image seed (image i of a request is
the same whatever n is), cached prompt encodings, and the guided and unguided passes batched together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dallebrain.models.text import MAX_TOKENS, load_tokenizer, token_count, tokenize
from dallebrain.models.unet import make_scheduler
from dallebrain.pipelines import defaults as D
from dallebrain.pipelines.folder import check_model_folder, folder_hash, read_info


@dataclass
class GenerationResult:
    images: np.ndarray  # (n, H, W) float32 in [0, 1]
    seeds: list[int]
    settings: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def check_generation_args(prompt: str, n: int, steps: int, guidance: float, max_n: int = 1000) -> None:
    """One-line ValueError for a request that cannot be served."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("empty prompt: describe the slice, e.g. 'axial T2-weighted slice of a healthy 70-year-old "
                         "woman'")
    if n < 1 or n > max_n:
        raise ValueError(f"number of images must be between 1 and {max_n}, got {n}")
    if steps < 1 or steps > 1000:
        raise ValueError(f"steps must be between 1 and 1000, got {steps}")
    if not np.isfinite(guidance) or guidance < 0:
        raise ValueError(f"guidance must be a non-negative number, got {guidance}")


class Text2MRIPipeline:
    """Latent diffusion pipeline: call it with a prompt to get slices."""

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler_config: dict, folder: Path | None = None):
        self.vae, self.text_encoder, self.tokenizer, self.unet = vae, text_encoder, tokenizer, unet
        self.scheduler_config = dict(scheduler_config)
        self.folder = folder
        self._prompt_cache: dict[str, tuple[torch.Tensor, bool]] = {}
        self.info = read_info(folder) if folder else {}
        self._hash: str | None = None

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str = "cpu") -> Text2MRIPipeline:
        from diffusers import AutoencoderKL, UNet2DConditionModel

        from dallebrain.pipelines.text_encoder import load_pipeline_text_encoder

        folder = check_model_folder(folder)
        kw = {"use_safetensors": True}
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", **kw).to(device).eval()
        vae = AutoencoderKL.from_pretrained(folder / "vae", **kw).to(device).eval()
        text_encoder = load_pipeline_text_encoder(folder / "text_encoder").to(device).eval()
        tokenizer = load_tokenizer(folder / "tokenizer")
        import json

        scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        return cls(vae, text_encoder, tokenizer, unet, scheduler_config, folder)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def model_hash(self) -> str:
        if self._hash is None:
            self._hash = folder_hash(self.folder) if self.folder else "in-memory"
        return self._hash

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> tuple[torch.Tensor, bool]:
        """(token states (1, 64, 384), truncated?) - cached: a batch of requests re-uses the encoding."""
        if prompt not in self._prompt_cache:
            tok = tokenize(self.tokenizer, [prompt])
            states = self.text_encoder(tok["input_ids"].to(self.device),
                                       attention_mask=tok["attention_mask"].to(self.device))[0]
            truncated = token_count(self.tokenizer, prompt) > MAX_TOKENS
            if len(self._prompt_cache) > 256:
                self._prompt_cache.clear()
            self._prompt_cache[prompt] = (states, truncated)
        return self._prompt_cache[prompt]

    @torch.no_grad()
    def denoise(self, cond: torch.Tensor, uncond: torch.Tensor, seeds: list[int], steps: int, guidance: float,
                sampler: str, extra_unet_kwargs: dict | None = None) -> np.ndarray:
        """The sampling loop shared by the text and image-embedding routes: (n, H, W) float32 in [0, 1]."""
        from dallebrain.models.vae import decode_latents

        scheduler = make_scheduler(sampler, self.scheduler_config)
        scheduler.set_timesteps(steps, device=self.device)
        n = len(seeds)
        shape = (self.unet.config.in_channels, self.unet.config.sample_size, self.unet.config.sample_size)
        # One generator per image: image i depends only on its own seed.
        latents = torch.cat([torch.randn((1, *shape), generator=torch.Generator("cpu").manual_seed(s))
                             for s in seeds]).to(self.device) * scheduler.init_noise_sigma
        guided = guidance != 1.0
        context = torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)]) if guided else cond.expand(n, -1, -1)
        extra = extra_unet_kwargs or {}
        for t in scheduler.timesteps:
            model_in = torch.cat([latents, latents]) if guided else latents
            model_in = scheduler.scale_model_input(model_in, t)
            eps = self.unet(model_in, t, encoder_hidden_states=context, **extra).sample
            if guided:  # classifier-free guidance, both passes in one batch
                eps_uncond, eps_cond = eps.chunk(2)
                eps = eps_uncond + guidance * (eps_cond - eps_uncond)
            latents = scheduler.step(eps, t, latents).prev_sample
        return decode_latents(self.vae, latents)[:, 0].float().cpu().numpy()

    def __call__(self, prompt: str, n: int = 1, seed: int = 0, steps: int = D.STEPS, guidance: float = D.GUIDANCE,
                 sampler: str = D.SAMPLER, negative_prompt: str = "") -> GenerationResult:
        check_generation_args(prompt, n, steps, guidance)
        cond, truncated = self.encode_prompt(prompt)
        uncond, _ = self.encode_prompt(negative_prompt)
        seeds = [seed + i for i in range(n)]
        images = self.denoise(cond, uncond, seeds, steps, guidance, sampler)
        warnings = [f"prompt longer than {MAX_TOKENS} tokens: truncated"] if truncated else []
        settings = {"prompt": prompt, "negative_prompt": negative_prompt, "steps": steps, "guidance": guidance,
                    "sampler": sampler, "route": "ldm", "model_hash": self.model_hash}
        return GenerationResult(images, seeds, settings, warnings)
