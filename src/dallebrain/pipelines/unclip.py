"""Text -> brain MRI slice the unCLIP way (DALL-E 2; Kandinsky 2.2's prior / decoder / combined split), inference
only: prompt -> Brain-CLIP text embedding and token states -> diffusion prior -> Brain-CLIP image embedding ->
decoder UNet over VAE latents -> VAE decoder. The image embedding also gives variations of a real slice and
interpolations between two slices.

The folder holds clip/ (Brain-CLIP), vae/, prior/ and decoder/ (each a save_pretrained folder, safetensors only);
it may be the LDM pipeline folder with those added (`dallebrain train prior|decoder --into FOLDER`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dallebrain.data.prompts import PromptFields
from dallebrain.models.text import MAX_TOKENS, shared_tokenizer, token_count
from dallebrain.pipelines import defaults as D
from dallebrain.pipelines.folder import UNCLIP_COMPONENTS, check_model_folder
from dallebrain.pipelines.request import API_LIMITS, GenerationRequest
from dallebrain.pipelines.text2mri import (
    GenerationResult,
    Text2MRIPipeline,
    check_generation_args,
    check_seed,
    chunk_results,
    image_seeds,
    record_encoded_text,
    requested,
)
from dallebrain.vocab import concrete_sampler

# The prior's noise for image i comes from its own stream, distinct from the decoder's stream of the same seed.
_PRIOR_STREAM = 0x9E3779B97F4A7C15


def prior_generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed((check_seed(seed) + _PRIOR_STREAM) % 2**64)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between unit vectors a and b (D,) at fractions t (K,): (K, D) unit vectors."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    omega = torch.arccos((a * b).sum().clamp(-1.0, 1.0))
    t = t[:, None].to(a)
    if float(omega) < 1e-4:  # (nearly) the same direction: linear is exact enough
        return F.normalize((1 - t) * a + t * b, dim=-1)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


@torch.no_grad()
def sample_image_embeds(prior, scheduler_config: dict, text_embeds: torch.Tensor, text_states: torch.Tensor,
                        text_mask: torch.Tensor, uncond: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                        seeds: list[int], steps: int = D.PRIOR_STEPS,
                        guidance: float = D.PRIOR_GUIDANCE) -> torch.Tensor:
    """Image embeddings (n, D), L2-normalised like Brain-CLIP's, sampled by the prior for n texts (text_embeds
    (n, D), token states (n, T, 384), masks (n, T)); `uncond` is the same triple for the empty prompt (1, ...),
    mixed in by classifier-free guidance. Embedding i depends only on seeds[i]."""
    from dallebrain.models.prior import make_prior_scheduler

    device = prior.device
    scheduler = make_prior_scheduler(scheduler_config)
    scheduler.set_timesteps(steps, device=device)
    generators = [prior_generator(s) for s in seeds]
    dim = prior.config.clip_embed_dim or prior.config.embedding_dim
    latents = torch.cat([torch.randn((1, dim), generator=g) for g in generators]).to(device)
    latents = latents * scheduler.init_noise_sigma
    n = len(seeds)
    guided = guidance != 1.0
    cond = [x.to(device) for x in (text_embeds, text_states, text_mask)]
    if guided:
        cond = [torch.cat([u.to(device).expand(n, *u.shape[1:]), c]) for u, c in zip(uncond, cond, strict=True)]
    embeds, states, mask = cond
    for t in scheduler.timesteps:
        model_in = torch.cat([latents, latents]) if guided else latents
        pred = prior(model_in, t, proj_embedding=embeds, encoder_hidden_states=states,
                     attention_mask=mask).predicted_image_embedding
        if guided:
            pred_uncond, pred_cond = pred.chunk(2)
            pred = pred_uncond + guidance * (pred_cond - pred_uncond)
        latents = scheduler.step(pred, t, latents, generator=generators).prev_sample
    return F.normalize(prior.post_process_latents(latents).float(), dim=-1)


def _check_image(image, name: str = "image") -> torch.Tensor:
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be one 2-D slice (H, W), got shape {arr.shape}")
    if arr.shape[0] % 8 or arr.shape[1] % 8:
        raise ValueError(f"{name} sides must be multiples of 8, got {arr.shape}")
    if not np.isfinite(arr).all() or arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
        raise ValueError(f"{name} must hold finite values in [0, 1], got [{arr.min():.3g}, {arr.max():.3g}]")
    return torch.from_numpy(np.clip(arr, 0, 1))[None, None]


def _check_prior_args(prior_steps: int, prior_guidance: float) -> tuple[int, float]:
    """The prior's steps and guidance as checked (an int, a float), or a one-line ValueError."""
    r = GenerationRequest("prior", prior_steps=prior_steps, prior_guidance=prior_guidance).checked(API_LIMITS)
    return r.prior_steps, r.prior_guidance


class UnCLIPPipeline(Text2MRIPipeline):
    """unCLIP pipeline: `pipe(prompt)`, `pipe.variations(slice)`, `pipe.interpolate(a, b)`.

    It shares Text2MRIPipeline's decoder loop (`denoise`: per-image seeds, batched guidance, every sampler, passes
    of `images_per_pass` images, the prior's included, so image i is the same whatever n is); `unet` is the
    decoder's UNet, so LoRA adapters apply to it as to the LDM's."""

    def __init__(self, clip, vae, prior, unet, prior_scheduler_config: dict | None, scheduler_config: dict,
                 folder: Path | None = None):
        from dallebrain.models.prior import prior_scheduler_config as default_prior_schedule

        super().__init__(vae, None, None, unet, scheduler_config, folder)
        self.clip, self.prior = clip, prior
        self.prior_scheduler_config = dict(prior_scheduler_config or default_prior_schedule())
        self.lora = None
        # the prior's guidance for `sample` (an evaluation's many captions; evaluate --prior-guidance); __call__
        # takes its own
        self.prior_guidance = D.PRIOR_GUIDANCE
        # "auto" is DPM-Solver++ here: the per-contrast samplers of dallebrain.json were measured on the LDM's UNet
        self.sampler_table = {}
        # likewise its attribute guidance: a decoder with attributes takes only what dallebrain.json measured on it
        # ("unclip" -> "sampling": attribute_guidance, attribute_guidance_by_contrast, attribute_guidance_anchor,
        # checked as the LDM's are), else plain guidance
        from dallebrain.models.brain_outline import brain_outline_of, outline_contrasts_of
        from dallebrain.models.conditioning import attribute_anchor_of
        from dallebrain.pipelines.grey_levels import grey_level_map_of
        from dallebrain.pipelines.request import attribute_guidance_by_contrast, unguided_below_timestep

        decoder_info = {"sampling": self.decoder_sampling}
        self.attribute_guidance_table = attribute_guidance_by_contrast(decoder_info)
        self.early_guidance_table = {}
        self.guidance_distilled = self.student_below = None  # the LDM's: the decoder is its own UNet
        self.unguided_table = unguided_below_timestep(decoder_info)
        self.attribute_anchor = attribute_anchor_of(decoder_info)
        # and its own grey-level maps, fitted on the decoder's samples (pipelines/grey_levels.py)
        self.grey_level_map = grey_level_map_of(self.decoder_sampling)
        # and the contrasts whose halo it trims, measured on its own samples (models/brain_outline.py)
        self.outline_contrasts = outline_contrasts_of(self.decoder_sampling)
        self.brain_outline = brain_outline_of(folder, self.outline_contrasts)
        self.level_map = None  # the LDM's (pipelines/level_map.py), measured on its UNet's slices, not the prior's
        self._uncond_text: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def decoder_sampling(self) -> dict:
        """The decoder's own sampling settings in dallebrain.json ("unclip" -> "sampling"), {} where none."""
        return (self.info.get("unclip") or {}).get("sampling") or {}

    @property
    def model_attribute_guidance(self) -> float | None:
        value = self.decoder_sampling.get("attribute_guidance")
        return None if value is None else float(value)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str = "cpu") -> UnCLIPPipeline:
        from dallebrain.models.clip import BrainCLIP
        from dallebrain.models.decoder import image_embed_dim_of, load_decoder
        from dallebrain.models.prior import load_prior
        from dallebrain.models.vae import load_vae

        folder = check_model_folder(folder, UNCLIP_COMPONENTS)
        clip = BrainCLIP.from_pretrained(folder / "clip", device=device).eval()
        vae = load_vae(folder / "vae").to(device).eval()
        prior, prior_schedule = load_prior(folder / "prior")
        unet, schedule = load_decoder(folder / "decoder")
        dims = {"clip": clip.config.embed_dim, "prior": prior.config.clip_embed_dim or prior.config.embedding_dim,
                "decoder": image_embed_dim_of(unet)}
        if len(set(dims.values())) != 1:
            raise ValueError(f"mismatched unCLIP folder {folder}: embedding sizes {dims} (train prior and decoder "
                             "on the folder's clip/)")
        if unet.config.in_channels != vae.config.latent_channels:
            raise ValueError(f"mismatched unCLIP folder {folder}: decoder has {unet.config.in_channels} latent "
                             f"channels, vae/ {vae.config.latent_channels}")
        return cls(clip, vae, prior.to(device), unet.to(device), prior_schedule, schedule, folder)

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], bool]:
        """((text embedding (1, D), token states (1, 64, 384), mask (1, 64)), truncated?) - cached."""
        if prompt not in self._prompt_cache:
            embeds = self.clip.encode_text([prompt])
            states, mask = self.clip.text_states([prompt])
            truncated = token_count(shared_tokenizer(), prompt) > MAX_TOKENS
            if len(self._prompt_cache) > 256:
                self._prompt_cache.clear()
            self._prompt_cache[prompt] = ((embeds, states, mask.bool()), truncated)
        return self._prompt_cache[prompt]

    @torch.no_grad()
    def image_embeds_of_prompt(self, prompt: str, seeds: list[int], prior_steps: int = D.PRIOR_STEPS,
                               prior_guidance: float = D.PRIOR_GUIDANCE, negative_prompt: str = "") -> torch.Tensor:
        """The prior's Brain-CLIP image embeddings (n, D) for a prompt, one per seed, sampled in passes of
        `images_per_pass` seeds (as the decoder's, so embedding i does not depend on n). The prior reads the
        prompt's caption form (`model_text`), as the LDM's text encoder does: it was trained on captions, and a
        short prompt's level in mm alone ("at z = 10 mm") reached it as noise (6 seeds, level judge: z = 0 at
        +9 mm, z = 10 at +26 mm; in caption form +3 and +7.5)."""
        if self.prior is None:
            raise ValueError("this pipeline has no prior: it can make variations, not text-to-image")
        (embeds, states, mask), _ = self.encode_prompt(self.model_text(prompt))
        uncond, _ = self.encode_prompt(negative_prompt)
        parts = []
        for rows in self.passes(len(seeds)):
            k = len(seeds[rows])
            # every pass of the fixed size `images_per_pass` (a short one padded), as the decoder's passes are
            pass_seeds = seeds[rows] + [seeds[rows][-1]] * max(0, self.images_per_pass - k)
            size = len(pass_seeds)
            cond = (embeds.expand(size, -1), states.expand(size, -1, -1), mask.expand(size, -1))
            parts.append(sample_image_embeds(self.prior, self.prior_scheduler_config, *cond, uncond, pass_seeds,
                                             prior_steps, prior_guidance)[:k])
        return torch.cat(parts)

    @torch.no_grad()
    def image_embeds_of_image(self, image, name: str = "image") -> torch.Tensor:
        """Brain-CLIP image embedding (1, D) of a slice (H, W) in [0, 1]."""
        return self.clip.encode_image(_check_image(image, name).to(self.device)).float()

    def decode_embeddings(self, image_embeds: torch.Tensor, seeds: list[int], steps: int = D.STEPS,
                          guidance: float = D.GUIDANCE, sampler: str = D.SAMPLER,
                          starts: torch.Tensor | None = None, prompts: list[str] | None = None,
                          negative_prompt: str = "") -> np.ndarray:
        """Decoder + VAE: (n, H, W) float32 slices in [0, 1] for image embeddings (n, D); guidance mixes in the
        zero embedding, which the decoder learned as "no condition"; starts as `denoise_passes`'. A decoder with
        attributes reads what `prompts` (one, or one per embedding) state, guided apart from the embedding as the
        LDM guides its attributes apart from the caption (text2mri.guide); without prompts (variations,
        interpolations) every attribute is unstated and guidance is plain."""
        return np.concatenate(list(self.decode_embedding_passes(image_embeds, seeds, steps, guidance, sampler,
                                                                starts, prompts, negative_prompt)))

    def decode_embedding_passes(self, image_embeds: torch.Tensor, seeds: list[int], steps: int = D.STEPS,
                                guidance: float = D.GUIDANCE, sampler: str = D.SAMPLER,
                                starts: torch.Tensor | None = None, prompts: list[str] | None = None,
                                negative_prompt: str = "") -> Iterator[np.ndarray]:
        """`decode_embeddings` one pass of images at a time."""
        from dallebrain.models.conditioning import unet_features, uses_attributes

        embeds = image_embeds.to(self.device, self.unet.dtype)
        uncond = torch.zeros_like(embeds)
        attributes = scales = None
        if uses_attributes(self.unet) and prompts:
            attributes = self._attribute_pair(prompts, negative_prompt)
            scales = self.attribute_scales(prompts, guidance)
        elif uses_attributes(self.unet):  # nothing stated: the attribute rows equal, so one guidance scale
            unstated = unet_features(self.unet, [{}]).to(self.device)
            attributes, scales = (unstated, unstated), torch.full((1,), float(guidance))
        # the decoder's own unguided steps per contrast, where prompts state one (none for variations)
        unguided = self.unguided_rows(prompts) if prompts else None
        return self.denoise_passes(embeds[:, None], uncond[:, None], seeds, steps, guidance, sampler, embeds,
                                   attributes, starts, scales, None, unguided)

    def _settings(self, **extra) -> dict:
        return {**extra, "precision": self.compute_precision, "route": "unclip", "start": self.start_kind,
                "model_hash": self.model_hash}

    def generate_chunks(self, prompt: str, n: int = 1, seed: int = 0, steps: int = D.STEPS,
                        guidance: float = D.GUIDANCE, sampler: str = D.SAMPLER, prior_steps: int = D.PRIOR_STEPS,
                        prior_guidance: float = D.PRIOR_GUIDANCE,
                        negative_prompt: str = "") -> Iterator[GenerationResult]:
        """`self(...)` one pass at a time: the prior and the decoder run per pass, so memory stays bounded."""
        r = check_generation_args(prompt, n, steps, guidance, seed=seed, negative_prompt=negative_prompt)
        n, steps, guidance, seed = r.n, r.steps, r.guidance, r.seed
        prior_steps, prior_guidance = _check_prior_args(prior_steps, prior_guidance)
        asked, sampler = sampler, concrete_sampler(sampler)  # an unknown sampler is refused now
        if self.prior is None:
            raise ValueError("this pipeline has no prior: it can make variations, not text-to-image")
        seeds = image_seeds(seed, n)
        text = self.model_text(prompt)
        _, truncated = self.encode_prompt(text)
        warnings = [f"prompt longer than {MAX_TOKENS} tokens: truncated"] if truncated else []
        settings = self._settings(prompt=prompt, negative_prompt=negative_prompt, steps=steps, guidance=guidance,
                                  sampler=sampler, prior_steps=prior_steps, prior_guidance=prior_guidance)
        settings.update(requested(asked, steps))
        record_encoded_text(prompt, text, settings, warnings)
        self.record_guidance(settings, prompt, guidance)  # the decoder's own tables (no early scale, no student)
        starts = self.start_means([prompt])
        passes = (self.decode_embeddings(self.image_embeds_of_prompt(prompt, seeds[rows], prior_steps, prior_guidance,
                                                                     negative_prompt), seeds[rows], steps, guidance,
                                         sampler, starts, [prompt], negative_prompt) for rows in self.passes(n))
        return chunk_results(self.standardised_passes(passes, prompt, settings), seeds, settings, warnings,
                             self.provenance())

    def __call__(self, prompt: str, n: int = 1, seed: int = 0, steps: int = D.STEPS, guidance: float = D.GUIDANCE,
                 sampler: str = D.SAMPLER, prior_steps: int = D.PRIOR_STEPS, prior_guidance: float = D.PRIOR_GUIDANCE,
                 negative_prompt: str = "") -> GenerationResult:
        return GenerationResult.join(list(self.generate_chunks(prompt, n, seed, steps, guidance, sampler, prior_steps,
                                                               prior_guidance, negative_prompt)))

    def _sample_batch(self, prompts: list[str], seeds: list[int], steps: int, guidance: float,
                      sampler: str) -> np.ndarray:
        # as __call__ does: embedding i comes from the prior with seeds[i] alone, then the decoder makes the slices
        embeds = torch.cat([self.image_embeds_of_prompt(p, [s], prior_guidance=self.prior_guidance)
                            for p, s in zip(prompts, seeds, strict=True)])
        images = self.decode_embeddings(embeds, seeds, steps, guidance, sampler, self.start_means(prompts), prompts)
        return self.standardised_for(images, prompts)

    def variation_chunks(self, image, n: int = 4, seed: int = 0, steps: int = D.STEPS, guidance: float = D.GUIDANCE,
                         sampler: str = D.SAMPLER) -> Iterator[GenerationResult]:
        """`variations` one pass at a time."""
        r = check_generation_args("variations", n, steps, guidance, seed=seed)
        n, steps, guidance, seed = r.n, r.steps, r.guidance, r.seed
        asked, sampler = sampler, concrete_sampler(sampler)
        from dallebrain.pipelines.variation_check import describe, with_readings

        seeds = image_seeds(seed, n)
        source = self.image_embeds_of_image(image)
        reading = describe(self.clip, np.asarray(image, dtype=np.float32)[None], source)[0]
        settings = self._settings(mode="variations", prompt="", steps=steps, guidance=guidance, sampler=sampler,
                                  source_estimated=reading)
        settings.update(requested(asked, steps))
        # the start mean of what the source reads as (its plane, contrast and level), where the model has a table
        starts = None if self.leak_table is None else self.leak_table.start_mean(
            PromptFields(orientation=reading["orientation"], slice_mm=reading["level_mm"],
                         modality=reading["contrast"]))[None]
        # the grey-level map of the contrast and plane the source reads as
        contrast, plane = reading["contrast"], reading["orientation"]
        self.record_grey_levels(settings, contrast, plane, " (the source's contrast and plane as read)")
        passes = (self.standardised(images, contrast, plane) for images in
                  self.decode_embedding_passes(source.expand(n, -1), seeds, steps, guidance, sampler, starts))
        chunks = chunk_results(passes, seeds, settings, [], self.provenance())
        return with_readings(chunks, self.clip, reading)

    def variations(self, image, n: int = 4, seed: int = 0, steps: int = D.STEPS, guidance: float = D.GUIDANCE,
                   sampler: str = D.SAMPLER) -> GenerationResult:
        """n new slices sharing the Brain-CLIP image embedding of `image` (H, W) in [0, 1]."""
        return GenerationResult.join(list(self.variation_chunks(image, n, seed, steps, guidance, sampler)))

    def interpolate(self, image_a, image_b, n_frames: int = 8, seed: int = 0, steps: int = D.STEPS,
                    guidance: float = D.GUIDANCE, sampler: str = D.SAMPLER, prior_steps: int = D.PRIOR_STEPS,
                    prior_guidance: float = D.PRIOR_GUIDANCE) -> GenerationResult:
        """n_frames slices along the great circle between the embeddings of two slices (or prompts: a str is
        sent through the prior); every frame uses the same decoder seed, so only the embedding changes."""
        r = check_generation_args("interpolate", n_frames, steps, guidance, seed=seed)
        n_frames, steps, guidance, seed = r.n, r.steps, r.guidance, r.seed
        prior_steps, prior_guidance = _check_prior_args(prior_steps, prior_guidance)
        asked, sampler = sampler, concrete_sampler(sampler)
        if n_frames < 2:
            raise ValueError(f"n_frames must be at least 2, got {n_frames}")
        ends = []
        for name, item in (("image_a", image_a), ("image_b", image_b)):
            if isinstance(item, str):
                ends.append(self.image_embeds_of_prompt(item, [seed], prior_steps, prior_guidance)[0])
            else:
                ends.append(self.image_embeds_of_image(item, name)[0])
        fractions = torch.linspace(0, 1, n_frames)
        embeds = slerp(ends[0], ends[1], fractions)
        seeds = [seed] * n_frames
        images = self.decode_embeddings(embeds, seeds, steps, guidance, sampler)
        settings = self._settings(mode="interpolation", prompt="", fractions=[round(float(t), 6) for t in fractions],
                                  steps=steps, guidance=guidance, sampler=sampler)
        settings.update(requested(asked, steps))
        if self.grey_level_map is not None:  # frames between two contrasts or planes have no one map
            settings["grey_levels"] = "as sampled (interpolations are not standardised)"
        if any(isinstance(item, str) for item in (image_a, image_b)):  # the text each prompt end reached the prior as
            settings["ends_as_encoded"] = [self.model_text(item) if isinstance(item, str) else None
                                           for item in (image_a, image_b)]
        return GenerationResult(images, seeds, settings, provenance=self.provenance())
