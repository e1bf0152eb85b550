"""Text -> brain MRI slice with latent diffusion (the Stable Diffusion route), inference only.

The folder it reads is a stock diffusers StableDiffusionPipeline folder (BertModel text encoder, 1-channel
AutoencoderKL, UNet2DConditionModel), so `diffusers.StableDiffusionPipeline.from_pretrained` loads it too;
this class adds what brain MRI needs: grey-scale float output, a per-image seed (image i of a request is
the same, byte for byte, whatever n is), cached prompt encodings, the guided and unguided passes batched
together, and memory bounded by one pass of `images_per_pass` images whatever n is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from dallebrain.models.brain_outline import brain_outline_of, outline_contrasts_of
from dallebrain.models.conditioning import attribute_anchor_of, uses_attributes
from dallebrain.models.text import MAX_TOKENS, load_tokenizer, token_count, tokenize
from dallebrain.models.unet import make_scheduler
from dallebrain.pipelines import defaults as D
from dallebrain.pipelines.folder import check_model_folder, folder_hash, read_info
from dallebrain.pipelines.grey_levels import grey_level_map_of, remap
from dallebrain.pipelines.leak_table import leak_table_of
from dallebrain.pipelines.level_map import level_map_of
from dallebrain.pipelines.precision import check_precision, compute_context, keep_fp32_output, resolve_precision

# MAX_SEED and check_seed are re-exported: callers of the pipeline module use them
from dallebrain.pipelines.request import (  # noqa: F401
    API_LIMITS,
    MAX_SEED,
    GenerationRequest,
    attribute_guidance_by_contrast,
    attribute_guidance_early,
    auto_steps,
    check_attribute_guidance,
    check_seed,
    check_unguided_below,
    distilled_below,
    guidance_distilled,
    sampler_by_contrast,
    unguided_below_timestep,
)
from dallebrain.pipelines.signal_leak import latent_mean_of, start_latents
from dallebrain.vocab import AUTO_FALLBACK, AUTO_SAMPLER, STOCHASTIC_SAMPLERS, check_sampler

# Images denoised and decoded together in one pass. Batched CPU convolutions and GEMMs round differently
# across batch SIZES (measured on the shipped model: up to 1.9e-6 in the UNet output, 2 pixels of an 8-bit
# image), but at a fixed batch size a row's result depends neither on the other rows nor on its position
# (measured: 0.0). So every pass runs exactly `images_per_pass` rows, a short last pass padded with copies of
# its last image: image i is byte-identical whatever n for a given `images_per_pass`. One is the default (no
# padding waste for a single image); bulk callers raise it for throughput (1.8x at 8 images on one CPU thread);
# memory grows with it, never with n.
IMAGES_PER_PASS = 1
MAX_IMAGES_PER_PASS = 64
PROMPT_FORMS = ("caption", "literal")  # Text2MRIPipeline.prompt_form


@dataclass
class EncodedPrompt:
    """A prompt as the UNet gets it (`Text2MRIPipeline.encode_model_text`)."""

    states: torch.Tensor  # (1, tokens, width) text-encoder states
    truncated: bool  # the text was longer than the encoder reads
    text: str  # the text encoded (of a level map's two captions, the one weighted more)
    conditioning: str  # what the attributes and the start read: the prompt, or the caption at the mixed level
    level_map: dict | None = None  # the sidecar's record where the level map moved the caption


@dataclass
class GuidancePlan:
    """How one pass is guided (`Text2MRIPipeline.guidance_plan`)."""
    guidance: float  # the caption's scale
    attr_scale: float | torch.Tensor  # the attributes' (a float, or one per row)
    split: bool  # three guidance rows (attributes apart from the caption), else two
    guided: bool  # False: the conditional rows alone on every step
    inputs: dict  # the UNet's keyword inputs for every guidance row
    alone: dict  # ... for the conditional rows alone
    tail: torch.Tensor | None  # per row, the timestep below which it is unguided (`unguided_rows`)
    early_scales: torch.Tensor | None = None  # per row, the attribute scale at or above `early_from`
    early_from: torch.Tensor | None = None
    late_scales: torch.Tensor | None = None


@dataclass
class GenerationResult:
    images: np.ndarray  # (n, H, W) float32 in [0, 1]
    seeds: list[int]
    settings: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # the pipeline that made it: its folder, LoRA and dallebrain.json (the grid a NIfTI is placed on)
    provenance: dict = field(default_factory=dict)
    # one record per image for its sidecar (a variation's readings), or empty
    per_image: list[dict] = field(default_factory=list)

    @classmethod
    def join(cls, parts: list[GenerationResult]) -> GenerationResult:
        """One result from consecutive passes of the same request."""
        return cls(np.concatenate([p.images for p in parts]), [s for p in parts for s in p.seeds],
                   parts[0].settings, parts[0].warnings, parts[0].provenance, [r for p in parts for r in p.per_image])

    def save(self, folder: str | Path, png16: bool = False, overwrite: bool = False) -> list[dict]:
        """Write what `dallebrain generate` writes: PNG + NIfTI + JSON per image, named by seed; the folder is
        checked first and nothing is replaced without `overwrite`. Returns the paths written per image."""
        from dallebrain.pipelines.output import check_output_folder, image_stems, result_prefix, write_result

        if not len(self.seeds) or len(self.images) != len(self.seeds):
            raise ValueError(f"nothing to save: {len(self.images)} image(s) for {len(self.seeds)} seed(s)")
        check_output_folder(folder, image_stems(self.seeds, result_prefix(self.settings)), overwrite)
        return write_result(self, folder, self.seeds[0], len(self.seeds), png16)


def image_seeds(seed: int, n: int) -> list[int]:
    return [check_seed(seed, n) + i for i in range(n)]


def image_generator(seed: int) -> torch.Generator:
    """Image i's own random stream: its starting latents, then (stochastic samplers) its noise at every step."""
    return torch.Generator("cpu").manual_seed(check_seed(seed))


def initial_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Image i's starting latents (1, *shape), from its own generator: they depend on its seed alone."""
    return torch.randn((1, *shape), generator=image_generator(seed))


def requested(sampler: str, steps: int) -> dict:
    """What a sidecar records of the request beside the sampler and steps used: for "auto", what was asked."""
    return {"sampler_requested": sampler, "steps_requested": steps} if sampler == AUTO_SAMPLER else {}


def step_noise(generators: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    """(len(generators), *shape) noise for one step of a stochastic sampler, row i from image i's generator."""
    return torch.cat([torch.randn((1, *shape), generator=g) for g in generators])


def chunk_results(passes: Iterator[np.ndarray], seeds: list[int], settings: dict,
                  warnings: list[str], provenance: dict | None = None) -> Iterator[GenerationResult]:
    """A GenerationResult per pass of images, with the seeds of those images."""
    done = 0
    for images in passes:
        yield GenerationResult(images, seeds[done:done + len(images)], settings, warnings, provenance or {})
        done += len(images)


def _pad_rows(x: torch.Tensor | None, pad: int) -> torch.Tensor | None:
    """x with its last row repeated `pad` times (a 1-row x is broadcast to every image: left as it is)."""
    if x is None or x.shape[0] == 1:
        return x
    return torch.cat([x, x[-1:].expand(pad, *x.shape[1:])])


def record_encoded_text(prompt: str, text: str, settings: dict, warnings: list[str]) -> None:
    """Where the text encoder got another text than the prompt (its caption form, `model_text`): that text in
    the settings (the sidecar's prompt_as_encoded) and a warning naming the prompt's words it left out."""
    if text != prompt:
        settings["prompt_as_encoded"] = text
        from dallebrain.pipelines.caption_form import caption_form_warnings

        warnings += caption_form_warnings(prompt, text)


def guide(eps: tuple[torch.Tensor, ...], guidance: float, attribute_guidance: float) -> torch.Tensor:
    """Classifier-free guidance. Two predictions (unconditional, conditional): the usual mix. Three
    (unconditional; attributes without the caption; caption and attributes): the attributes and the caption
    each get their own scale, as InstructPix2Pix guides its two conditions (Brooks et al. 2023):
    e0 + s_attr (e1 - e0) + s_text (e2 - e1). Why: with one scale the caption's direction, which knows little of
    age, outweighed the attributes' (same seed, 85/20-year ventricle ratio 1.2 where the cohort's is 4.9)."""
    if len(eps) == 2:
        return eps[0] + guidance * (eps[1] - eps[0])
    e0, e1, e2 = eps
    if isinstance(attribute_guidance, torch.Tensor):  # one scale per row (per-contrast guidance): (rows, 1, 1, 1)
        attribute_guidance = attribute_guidance.to(e0).view(-1, *[1] * (e0.dim() - 1))
    return e0 + attribute_guidance * (e1 - e0) + guidance * (e2 - e1)


def check_generation_args(prompt: str, n: int, steps: int, guidance: float, max_n: int = API_LIMITS.max_n,
                          seed: int = 0, negative_prompt: str = "") -> GenerationRequest:
    """The request as the pipelines use it (n, steps and seed as ints: 2.0 or "2" passed the check and then failed
    in range()), or a one-line ValueError for one that cannot be served (the rules of `GenerationRequest`)."""
    return GenerationRequest(prompt, n, seed, steps, guidance, negative_prompt=negative_prompt).checked(
        replace(API_LIMITS, max_n=max_n))


class Text2MRIPipeline:
    """Latent diffusion pipeline: call it with a prompt to get slices."""

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler_config: dict, folder: Path | None = None):
        self.vae, self.text_encoder, self.tokenizer, self.unet = vae, text_encoder, tokenizer, unet
        self.scheduler_config = dict(scheduler_config)
        self.folder = folder
        self._prompt_cache: dict[str, tuple[torch.Tensor, bool]] = {}
        self.info = read_info(folder) if folder else {}
        # per-channel mean of the training latents, where sampling starts from (pipelines/signal_leak.py); read
        # now, so a bad value in dallebrain.json is refused when the model loads
        self.latent_mean = latent_mean_of(self.info, unet.config.in_channels)
        self.attribute_guidance_table = attribute_guidance_by_contrast(self.info)
        # a stronger attribute guidance on the noisy steps, per contrast (request.attribute_guidance_early)
        self.early_guidance_table = attribute_guidance_early(self.info)
        self.sampler_table = sampler_by_contrast(self.info)  # what the "auto" sampler picks per contrast
        # per contrast, the steps below a timestep run the conditional rows alone (request.unguided_below_timestep)
        self.unguided_table = unguided_below_timestep(self.info)
        # one unguided timestep for every prompt, set per request (0: guide every step); None: the model's table
        self.unguided_below: int | None = None
        # a UNet taught to give the guided prediction in one row (request.guidance_distilled): the caption guidance
        # it holds, or None
        self.guidance_distilled = None if distilled_below(self.info) else guidance_distilled(self.info)
        # a student UNet for the low-noise steps (recipes/guidance_distill.py --below): it gives in one row what the
        # teacher's guided rows give there, for the setting it was taught (`student_below_for`); from_pretrained loads
        # it from unet_distilled/ where the model has one
        self.student_unet = None
        self.student_below = distilled_below(self.info)
        # attributes kept stated on the unconditional side of attribute guidance (models/conditioning.py)
        self.attribute_anchor = attribute_anchor_of(self.info)
        # per-prompt start means (pipelines/leak_table.py) where the folder has them; checked now, as the above
        self.leak_table = leak_table_of(folder, unet.config.in_channels, unet.config.sample_size)
        self._hash: str | None = None
        self.images_per_pass = IMAGES_PER_PASS
        self.precision = D.PRECISION  # "auto", "bf16" or "fp32" (pipelines/precision.py); settable per request
        # the guidance scale of the attributes alone (None: the model's own, `model_attribute_guidance`)
        self.attribute_guidance: float | None = None
        # "caption": a prompt is encoded in the form the model was trained on (pipelines/caption_form.py), on a
        # model whose dallebrain.json gives its grid; "literal": as written
        self.prompt_form = "caption"
        # the model's grey levels put on the cohort's scale per contrast and plane (pipelines/grey_levels.py),
        # where its dallebrain.json has the maps; False: the slices as the decoder gives them
        self.grey_level_map = grey_level_map_of(self.info.get("sampling") or {})
        self.standardise_grey_levels = True
        # where the model draws each caption level, per contrast and plane (pipelines/level_map.py): a prompt in
        # caption form is encoded as the mix of the two captions judged to bracket its level; None: no map
        self.level_map = level_map_of(self.info.get("sampling") or {})
        # the decoder's halo around the brain removed, for the contrasts the model's record names
        # (models/brain_outline.py); False: the outline as the decoder draws it
        self.outline_contrasts = outline_contrasts_of(self.info.get("sampling") or {})
        self.brain_outline = brain_outline_of(folder, self.outline_contrasts)
        self.trim_outline = True
        if vae is not None:
            keep_fp32_output(vae.decoder.conv_out)  # the image itself at full precision (see there)

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
        pipe = cls(vae, text_encoder, tokenizer, unet, scheduler_config, folder)
        if pipe.student_below is not None:
            from dallebrain.pipelines.folder import ModelFolderError

            if not (folder / "unet_distilled" / "config.json").is_file():
                raise ModelFolderError(f"incomplete model folder {folder}: its dallebrain.json names a distilled "
                                       "student, but 'unet_distilled/' is missing")
            pipe.student_unet = UNet2DConditionModel.from_pretrained(folder / "unet_distilled", **kw).to(device).eval()
        return pipe

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def compute_precision(self) -> str:
        """The precision the UNet and VAE decoder run in now: `precision` with "auto" resolved for this device."""
        return resolve_precision(check_precision(self.precision), self.device.type)

    @property
    def model_attribute_guidance(self) -> float | None:
        """The attribute guidance the model's dallebrain.json chose from measurements ("sampling"), or None."""
        value = (self.info.get("sampling") or {}).get("attribute_guidance")
        return None if value is None else float(value)

    def attribute_scale(self, guidance: float, prompt: str | None = None) -> float | None:
        """The attribute guidance a request gets (None for a UNet without attributes): the one set on the
        pipeline, else the model's for the contrast the prompt asks for (`attribute_guidance_table`), else the
        model's own, else `guidance` itself (plain classifier-free guidance)."""
        if not uses_attributes(self.unet):
            return None
        by_contrast = None
        if prompt is not None and self.attribute_guidance_table:
            from dallebrain.data.prompts import parse_prompt

            by_contrast = self.attribute_guidance_table.get(parse_prompt(prompt).modality)
        for value in (self.attribute_guidance, by_contrast, self.model_attribute_guidance):
            if value is not None:
                return check_attribute_guidance(value)
        return guidance

    def sampling_of(self, prompt: str, sampler: str, steps: int) -> tuple[str, int]:
        """(sampler, steps) a request is denoised with: as asked, or for "auto" the model's choice for the
        prompt's contrast (`sampler_table`: a sampler and a multiple of the steps, at most MAX_AUTO_STEPS unless
        more were asked), else AUTO_FALLBACK."""
        if check_sampler(sampler) != AUTO_SAMPLER:
            return sampler, steps
        if self.sampler_table:
            from dallebrain.data.prompts import parse_prompt

            chosen = self.sampler_table.get(parse_prompt(prompt).modality)
            if chosen is not None:
                return chosen[0], auto_steps(steps, chosen[1])
        return AUTO_FALLBACK, steps

    def check_distilled(self, guidance: float) -> None:
        """A guidance-distilled model (`guidance_distilled`) serves the guidance it was taught and no other: a
        one-line ValueError for another caption guidance, or an attribute guidance or unguided steps set on the
        pipeline (the CLI's --guidance, --attribute-guidance, --unguided-below)."""
        taught = self.guidance_distilled
        if taught is None:
            return
        if guidance != taught or self.attribute_guidance is not None or self.unguided_below is not None:
            raise ValueError(f"this model's UNet holds its guidance (sampling.guidance_distilled: caption guidance "
                             f"{taught:g}, its attribute guidance per contrast): guidance must be {taught:g}, with no "
                             f"attribute guidance or unguided steps set; got guidance {guidance:g}")

    def student_below_for(self, guidance: float, sampler: str, steps: int, negative_prompt: str = "") -> int | None:
        """The timestep below which a request's steps run the student UNet (`student_unet`), or None (the teacher
        throughout): only for what the student was taught, the recorded caption guidance, sampler and steps, the
        model's own attribute guidance and unguided steps, no negative prompt and no LoRA adapter."""
        if self.student_unet is None or getattr(self, "lora", None):
            return None
        taught = self.info["sampling"]["guidance_distilled"]
        if (guidance != taught["guidance"] or sampler != taught.get("sampler") or steps != taught.get("sampler_steps")
                or negative_prompt or self.attribute_guidance is not None or self.unguided_below is not None):
            return None
        return self.student_below

    def unguided_below_for(self, prompt: str) -> int | None:
        """The timestep below which the prompt is sampled without guidance: the one set on the pipeline
        (`unguided_below`, 0 meaning none), else its contrast's in `unguided_table`; None: guided on every step."""
        if self.unguided_below is not None:
            return check_unguided_below(self.unguided_below) or None
        if not self.unguided_table:
            return None
        from dallebrain.data.prompts import parse_prompt

        return self.unguided_table.get(parse_prompt(prompt).modality)

    def unguided_rows(self, prompts: list[str]) -> torch.Tensor | None:
        """(len(prompts),) of `unguided_below_for` (0 where None: every step guided), or None when no prompt has
        one."""
        below = [self.unguided_below_for(p) for p in prompts]
        if all(b is None for b in below):
            return None
        return torch.tensor([b or 0 for b in below], dtype=torch.float32)

    def record_unguided(self, settings: dict, prompt: str) -> None:
        below = self.unguided_below_for(prompt)
        if below is not None:
            settings["unguided_below_timestep"] = below

    def early_attribute_guidance(self, prompt: str) -> tuple[float, int] | None:
        """(scale, from timestep) of the prompt's contrast's early attribute guidance (`early_guidance_table`),
        or None: none for that contrast, a UNet without attributes, or one scale set on the pipeline for every
        step (`attribute_guidance`, the CLI's --attribute-guidance)."""
        if not self.early_guidance_table or self.attribute_guidance is not None or not uses_attributes(self.unet):
            return None
        from dallebrain.data.prompts import parse_prompt

        return self.early_guidance_table.get(parse_prompt(prompt).modality)

    def attribute_schedule(self, prompts: list[str], guidance: float) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(scales, from timesteps), one row per prompt, of the early attribute guidance
        (`early_attribute_guidance`; a prompt without one gets its own scale from timestep 0), or None when no
        prompt has one."""
        early = [self.early_attribute_guidance(p) for p in prompts]
        if all(e is None for e in early):
            return None
        rows = [e if e is not None else (self.attribute_scale(guidance, p), 0) for e, p in zip(early, prompts,
                                                                                                strict=True)]
        return (torch.tensor([r[0] for r in rows], dtype=torch.float32),
                torch.tensor([r[1] for r in rows], dtype=torch.float32))

    def attribute_scales(self, prompts: list[str], guidance: float) -> torch.Tensor | None:
        """(len(prompts),) attribute guidance of each prompt (`attribute_scale`), or None for a UNet without
        attributes."""
        scales = [self.attribute_scale(guidance, p) for p in prompts]
        return None if scales[0] is None else torch.tensor(scales, dtype=torch.float32)

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

    @property
    def standardising(self) -> bool:
        """Whether slices go through grey-level maps: the model has them, standardisation is on
        (`standardise_grey_levels`), and no LoRA adapter is loaded (the maps were fitted without it, and an adapter
        tuned on other scans brings its own grey levels)."""
        return self.grey_level_map is not None and self.standardise_grey_levels and not getattr(self, "lora", None)

    def grey_level_curve(self, contrast: str | None, plane: str | None) -> tuple[str, tuple] | None:
        """(name, curve) of the grey-level map slices of this contrast and plane get, or None: not `standardising`,
        or the model has no map for them."""
        return self.grey_level_map.curve_for(contrast, plane) if self.standardising else None

    def record_grey_levels(self, settings: dict, contrast: str | None, plane: str | None, how: str = "") -> None:
        """The sidecar's `grey_levels`: which map the slices went through, or why none (a model with no maps
        records nothing, so its sidecars are as before); and its `outline` where the model has a brain-outline head."""
        if self.trims(contrast):
            settings["outline"] = "trimmed: the decoder's halo around the brain removed (models/brain_outline.py)"
        elif self.brain_outline is not None:
            settings["outline"] = "as decoded" + ("" if self.trim_outline else " (trimming turned off)")
        if self.grey_level_map is None:
            return
        found = self.grey_level_curve(contrast, plane)
        if found is not None:
            settings["grey_levels"] = f"standardised: {found[0]} map{how}"
        elif not self.standardise_grey_levels:
            settings["grey_levels"] = "as sampled (standardisation turned off)"
        elif getattr(self, "lora", None):
            settings["grey_levels"] = "as sampled (a LoRA adapter is loaded: the maps were fitted without it)"
        else:
            settings["grey_levels"] = "as sampled (no map for " + (f"{contrast})" if contrast else
                                                                    "a prompt that states no contrast)")

    def standardised(self, images: np.ndarray, contrast: str | None, plane: str | None) -> np.ndarray:
        """`images` with the decoder's halo trimmed where the model does it for their contrast (`trims`), then through
        the grey-level map of their contrast and plane (`grey_level_curve`); or as they are."""
        if self.trims(contrast):  # before the map: it would lift the halo's grey levels into the brain's
            images = self.brain_outline.trim(images)
        found = self.grey_level_curve(contrast, plane)
        return images if found is None else remap(images, *found[1])

    @property
    def trimming(self) -> bool:
        """Whether the model has a brain-outline head and trimming is on (models/brain_outline.py)."""
        return self.trim_outline and self.brain_outline is not None

    def trims(self, contrast: str | None) -> bool:
        """Whether slices of this contrast lose the decoder's halo (`trimming`, and the model names the contrast)."""
        return self.trimming and contrast in self.outline_contrasts

    def standardised_for(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        """Row i of `images` standardised for what prompts[i] states (one prompt: every row)."""
        if not self.standardising and not self.trimming:
            return images
        from dallebrain.data.prompts import parse_prompt

        asked = [parse_prompt(p) for p in prompts]
        if len(asked) == 1:
            return self.standardised(images, asked[0].modality, asked[0].orientation)
        return np.stack([self.standardised(x[None], a.modality, a.orientation)[0]
                         for x, a in zip(images, asked, strict=True)]).astype(np.float32)

    def model_text(self, prompt: str) -> str:
        """The text the text encoder gets for a prompt: its caption form (pipelines/caption_form.py) where
        `prompt_form` is "caption" and the prompt can be put in that form, else the prompt as written."""
        if self.prompt_form not in PROMPT_FORMS:
            raise ValueError(f"prompt_form must be one of {', '.join(PROMPT_FORMS)}, got {self.prompt_form!r}")
        if self.prompt_form == "literal":
            return prompt
        from dallebrain.data.grid import grid_in_info
        from dallebrain.pipelines.caption_form import caption_form

        return caption_form(prompt, grid_in_info(self.info)) or prompt

    def encode_model_text(self, prompt: str) -> EncodedPrompt:
        """What the UNet is given for a prompt: its `model_text` encoded; or, where the level map moves a prompt in
        caption form (a map for its contrast and plane that reaches its level), the states of the two grid captions
        judged to bracket the level, mixed, with the attributes and the start read from the caption at the mixed
        level: the map was measured with caption, attributes and start at one level (recipes/level_map.py), and the
        leak table's start alone holds a slice in its 12 mm band (asked +36 mm with only the text moved: +39.4)."""
        text = self.model_text(prompt)
        if self.level_map is None or self.prompt_form != "caption" or text == prompt:
            return EncodedPrompt(*self.encode_prompt(text), text, prompt)
        from dallebrain.data.grid import grid_in_info
        from dallebrain.data.prompts import parse_prompt
        from dallebrain.pipelines.caption_form import caption_at

        fields = parse_prompt(prompt)
        found = self.level_map.caption_for(fields.modality, fields.orientation, fields.slice_mm)
        if found is None:
            return EncodedPrompt(*self.encode_prompt(text), text, prompt)
        lower_mm, upper_mm, weight = found
        level = round(lower_mm + weight * (upper_mm - lower_mm), 2)
        grid = grid_in_info(self.info)
        lower, upper = caption_at(fields, lower_mm, grid), caption_at(fields, upper_mm, grid)
        (a, cut_a), (b, cut_b) = self.encode_prompt(lower), self.encode_prompt(upper)
        record = {"asked_mm": fields.slice_mm, "caption_mm": [lower_mm, upper_mm], "weight_upper": round(weight, 4),
                  "model_level_mm": level, "texts": [lower, upper]}
        return EncodedPrompt(torch.lerp(a, b, weight), cut_a or cut_b, upper if weight > 0.5 else lower,
                             caption_at(fields, level, grid), record)

    def provenance(self) -> dict:
        """What a result records of the pipeline that made it (`GenerationResult.provenance`)."""
        return {"model": str(self.folder) if self.folder else None, "lora": getattr(self, "lora", None),
                "info": self.info}

    def passes(self, n: int) -> list[slice]:
        """The rows of each pass over n images: consecutive runs of at most `images_per_pass`."""
        k = self.images_per_pass
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_IMAGES_PER_PASS:
            raise ValueError(f"images_per_pass must be a whole number in [1, {MAX_IMAGES_PER_PASS}], got {k!r}")
        return [slice(start, min(start + k, n)) for start in range(0, n, k)]

    def encode_attributes(self, prompt: str) -> torch.Tensor | None:
        """(1, F) attribute features of what the prompt states (models/conditioning.py), or None when this
        UNet takes none (a text-only model, an unCLIP decoder)."""
        from dallebrain.models.conditioning import prompt_attributes, unet_features, uses_attributes

        if not uses_attributes(self.unet):
            return None
        return unet_features(self.unet, [prompt_attributes(prompt)]).to(self.device)

    def start_means(self, prompts: list[str]) -> torch.Tensor | None:
        """(len(prompts), C, H, W) means sampling starts from, one per prompt (pipelines/leak_table.py), or None
        for a folder without a leak table (then the per-channel `latent_mean`, or pure noise)."""
        from dallebrain.data.prompts import parse_prompt

        if self.leak_table is None:
            return None
        return torch.stack([self.leak_table.start_mean(parse_prompt(p)) for p in prompts])

    @property
    def start_kind(self) -> str:
        """What sampling starts from, for a result's settings."""
        if self.leak_table is not None:
            return "leak table"
        return "pure noise" if self.latent_mean is None else "channel mean"

    def denoise_passes(self, cond: torch.Tensor, uncond: torch.Tensor, seeds: list[int], steps: int,
                       guidance: float, sampler: str, image_embeds: torch.Tensor | None = None,
                       attributes: tuple[torch.Tensor, torch.Tensor] | None = None,
                       starts: torch.Tensor | None = None,
                       attribute_scales: torch.Tensor | None = None,
                       attribute_schedule: tuple[torch.Tensor, torch.Tensor] | None = None,
                       unguided_below: torch.Tensor | None = None,
                       student_below: int | None = None) -> Iterator[np.ndarray]:
        """The sampling loop shared by the text and image-embedding routes, one pass at a time: yields (k, H, W)
        float32 in [0, 1], k <= images_per_pass, in seed order. cond and uncond hold 1 or len(seeds) rows;
        image_embeds (n, D) feed an unCLIP decoder, whose unconditional input is the zero embedding; attributes
        (conditional, unconditional) features, 1 or len(seeds) rows each, feed an attribute-conditioned UNet;
        starts, 1 or len(seeds) rows (`start_means`), replace the per-channel mean sampling starts from;
        attribute_scales, len(seeds) rows (`attribute_scales`), give each image its prompt's attribute guidance
        (None: the model-wide `attribute_scale`); attribute_schedule, len(seeds) rows each (`attribute_schedule`),
        replaces it by an early scale on the steps at or above a timestep; unguided_below, len(seeds) rows
        (`unguided_rows`), runs each row's steps below its timestep on the conditional prediction alone;
        student_below (`student_below_for`) runs the steps below it on the student UNet, one row each."""
        def rows_of(x: torch.Tensor | None, rows: slice) -> torch.Tensor | None:
            return x if x is None or x.shape[0] == 1 else x[rows]

        cond_attr, uncond_attr = attributes if attributes is not None else (None, None)
        early = attribute_schedule if attribute_schedule is not None else (None, None)
        return (self._denoise_pass(rows_of(cond, rows), rows_of(uncond, rows), seeds[rows], steps, guidance, sampler,
                                   rows_of(image_embeds, rows), rows_of(cond_attr, rows), rows_of(uncond_attr, rows),
                                   rows_of(starts, rows), rows_of(attribute_scales, rows),
                                   rows_of(early[0], rows), rows_of(early[1], rows), rows_of(unguided_below, rows),
                                   student_below)
                for rows in self.passes(len(seeds)))

    def denoise(self, cond: torch.Tensor, uncond: torch.Tensor, seeds: list[int], steps: int, guidance: float,
                sampler: str, image_embeds: torch.Tensor | None = None,
                attributes: tuple[torch.Tensor, torch.Tensor] | None = None,
                starts: torch.Tensor | None = None, attribute_scales: torch.Tensor | None = None,
                attribute_schedule: tuple[torch.Tensor, torch.Tensor] | None = None,
                unguided_below: torch.Tensor | None = None, student_below: int | None = None) -> np.ndarray:
        """`denoise_passes` joined: (n, H, W) float32 in [0, 1]."""
        return np.concatenate(list(self.denoise_passes(cond, uncond, seeds, steps, guidance, sampler, image_embeds,
                                                       attributes, starts, attribute_scales, attribute_schedule,
                                                       unguided_below, student_below)))

    def guidance_plan(self, cond: torch.Tensor, uncond: torch.Tensor, rows: int, guidance: float,
                      image_embeds: torch.Tensor | None = None, cond_attr: torch.Tensor | None = None,
                      uncond_attr: torch.Tensor | None = None, attribute_scales: torch.Tensor | None = None,
                      early_scales: torch.Tensor | None = None, early_from: torch.Tensor | None = None,
                      unguided_below: torch.Tensor | None = None) -> GuidancePlan:
        """How `rows` images are guided on every step (`guided_prediction`), from what `_denoise_pass` gets (each
        tensor 1 or `rows` rows): built once per pass. Also what a guidance-distilled student is taught
        (recipes/guidance_distill.py): the teacher's prediction is exactly the one sampling uses."""
        distilled = self.guidance_distilled is not None
        if distilled:  # the guidance is in the UNet's output: the conditional rows alone
            guidance, attribute_scales, early_scales, unguided_below = 1.0, None, None, None
        attr_scale = guidance if cond_attr is None or distilled else self.attribute_scale(guidance)
        if cond_attr is not None and attribute_scales is not None:  # each row its own (per-contrast guidance)
            attribute_scales = attribute_scales.expand(rows)
            # one scale for the whole pass stays a float: the same arithmetic, so the same images, as before
            uniform = bool((attribute_scales == attribute_scales[0]).all())
            attr_scale = float(attribute_scales[0]) if uniform else attribute_scales
        early = cond_attr is not None and early_scales is not None
        late_scales = None
        if early:  # the early scale on the steps at or above each row's timestep, its own scale below
            early_scales, early_from = early_scales.expand(rows), early_from.expand(rows)
            late_scales = torch.as_tensor(attr_scale, dtype=torch.float32).expand(rows)
        # attributes guided apart from the text: three passes (see `guide`); at equal scales it is plain guidance
        split = bool((torch.as_tensor(attr_scale) != guidance).any()) or (
            early and bool((early_scales != guidance).any()))
        guided = guidance != 1.0 or split
        cond = cond.expand(rows, *cond.shape[1:])
        uncond = uncond.expand(rows, *uncond.shape[1:])
        context = torch.cat([uncond, uncond, cond] if split else [uncond, cond]) if guided else cond
        extra = {}
        if image_embeds is not None:  # rows in the order of `context`: [unconditional, (attributes only,) both]
            image_embeds = image_embeds.expand(rows, *image_embeds.shape[1:])  # one row: the padded pass's too
            zero = torch.zeros_like(image_embeds)
            embeds = image_embeds if not guided else torch.cat([zero, zero, image_embeds] if split else
                                                               [zero, image_embeds])
            extra = {"added_cond_kwargs": {"image_embeds": embeds}}
        if cond_attr is not None:  # the same row order
            cond_attr = cond_attr.expand(rows, *cond_attr.shape[1:])
            uncond_attr = uncond_attr.expand(rows, *uncond_attr.shape[1:])
            both = [uncond_attr, cond_attr, cond_attr] if split else [uncond_attr, cond_attr]
            extra["class_labels"] = torch.cat(both) if guided else cond_attr
        # the conditional rows alone, for the steps below `unguided_below` (the last chunk of each guided input)
        alone = {"encoder_hidden_states": cond}
        if image_embeds is not None:
            alone["added_cond_kwargs"] = {"image_embeds": image_embeds}
        if cond_attr is not None:
            alone["class_labels"] = cond_attr
        return GuidancePlan(guidance, attr_scale, split, guided, {"encoder_hidden_states": context, **extra},
                            alone, None if unguided_below is None or not guided else unguided_below.expand(rows),
                            early_scales if early else None, early_from if early else None, late_scales)

    def guided_prediction(self, plan: GuidancePlan, latents: torch.Tensor, t: torch.Tensor,
                          scheduler=None) -> torch.Tensor:
        """The UNet's guided output (fp32) for `latents` at timestep `t` (one for every row), as `plan` says: every
        guidance row in one batch, or the conditional rows alone on a step no row is guided at. `scheduler` (a
        sampler's) scales the model input where it asks to."""
        # rows guided at this step: all (no tail), none (one row each), or some (a pass of mixed contrasts: the
        # guided batch, and the conditional chunk for the rest)
        guided_rows = None if plan.tail is None else t.cpu() >= plan.tail
        guide_now = plan.guided and (guided_rows is None or bool(guided_rows.any()))
        model_in = torch.cat([latents] * (3 if plan.split else 2)) if guide_now else latents
        if scheduler is not None:
            model_in = scheduler.scale_model_input(model_in, t)
        # the UNet's output back in fp32 before guidance and the sampler step: the latents and the multistep
        # sampler's history stay fp32, so bf16 rounding does not accumulate over the steps
        eps = self.unet(model_in, t, **(plan.inputs if guide_now else plan.alone)).sample.float()
        if not guide_now:
            return eps
        step_scale = plan.attr_scale if plan.early_scales is None else torch.where(
            t.cpu() >= plan.early_from, plan.early_scales, plan.late_scales)
        chunks = eps.chunk(3 if plan.split else 2)
        eps = guide(chunks, plan.guidance, step_scale)
        if guided_rows is not None and not bool(guided_rows.all()):
            eps = torch.where(guided_rows.to(eps.device).view(-1, 1, 1, 1), eps, chunks[-1])
        return eps

    @torch.no_grad()
    def _denoise_pass(self, cond: torch.Tensor, uncond: torch.Tensor, seeds: list[int], steps: int, guidance: float,
                      sampler: str, image_embeds: torch.Tensor | None, cond_attr: torch.Tensor | None = None,
                      uncond_attr: torch.Tensor | None = None, starts: torch.Tensor | None = None,
                      attribute_scales: torch.Tensor | None = None, early_scales: torch.Tensor | None = None,
                      early_from: torch.Tensor | None = None, unguided_below: torch.Tensor | None = None,
                      student_below: int | None = None) -> np.ndarray:
        from dallebrain.models.vae import decode_latents

        # a fresh scheduler per pass: the multistep samplers keep the previous model outputs
        scheduler = make_scheduler(sampler, self.scheduler_config)
        scheduler.set_timesteps(steps, device=self.device)
        n = len(seeds)
        pad = self.images_per_pass - n  # a short last pass: pad it to the fixed pass size (see IMAGES_PER_PASS)
        if pad > 0:
            seeds = list(seeds) + [seeds[-1]] * pad
            (cond, uncond, image_embeds, cond_attr, uncond_attr, starts, attribute_scales, early_scales, early_from,
             unguided_below) = (_pad_rows(x, pad) for x in (cond, uncond, image_embeds, cond_attr, uncond_attr, starts,
                                                            attribute_scales, early_scales, early_from,
                                                            unguided_below))
        shape = (self.unet.config.in_channels, self.unet.config.sample_size, self.unet.config.sample_size)
        generators = [image_generator(s) for s in seeds]
        noise = step_noise(generators, shape).to(self.device)  # = initial_noise(shape, seed) row by row
        stochastic = sampler in STOCHASTIC_SAMPLERS
        # the signal leak: pipelines/signal_leak.py, per prompt where the model has a table (leak_table.py)
        latents = start_latents(scheduler, noise, self.latent_mean if starts is None else starts)
        plan = self.guidance_plan(cond, uncond, len(seeds), guidance, image_embeds, cond_attr, uncond_attr,
                                  attribute_scales, early_scales, early_from, unguided_below)
        with compute_context(self.compute_precision, self.device.type):
            for t in scheduler.timesteps:
                if student_below is not None and int(t) < student_below:  # what the guided rows would give, in one
                    eps = self.student_unet(scheduler.scale_model_input(latents, t), t, **plan.alone).sample.float()
                else:
                    eps = self.guided_prediction(plan, latents, t, scheduler)
                # a stochastic sampler's step noise from each image's own generator: image i still depends on
                # its seed alone (the scheduler's one generator would tie it to the other rows of the pass)
                fresh = {"variance_noise": step_noise(generators, shape).to(self.device)} if stochastic else {}
                latents = scheduler.step(eps, t, latents, **fresh).prev_sample
            images = decode_latents(self.vae, latents)
        return images[:n, 0].float().cpu().numpy()

    def generate_chunks(self, prompt: str, n: int = 1, seed: int = 0, steps: int = D.STEPS,
                        guidance: float = D.GUIDANCE, sampler: str = D.SAMPLER,
                        negative_prompt: str = "") -> Iterator[GenerationResult]:
        """`self(...)` one pass at a time (the request is checked now, the images made as they are asked for):
        a caller can write each pass as it comes, holding one pass in memory whatever n is."""
        r = check_generation_args(prompt, n, steps, guidance, seed=seed, negative_prompt=negative_prompt)
        n, steps, guidance, seed = r.n, r.steps, r.guidance, r.seed
        self.check_distilled(guidance)
        asked = (sampler, steps)
        sampler, steps = self.sampling_of(prompt, sampler, steps)  # an unknown sampler is refused now
        encoded = self.encode_model_text(prompt)
        cond, truncated, text = encoded.states, encoded.truncated, encoded.text
        uncond, _ = self.encode_prompt(negative_prompt)
        seeds = image_seeds(seed, n)
        warnings = [f"prompt longer than {MAX_TOKENS} tokens: truncated"] if truncated else []
        settings = {"prompt": prompt, "negative_prompt": negative_prompt, "steps": steps, "guidance": guidance,
                    "sampler": sampler, "precision": self.compute_precision, "route": "ldm",
                    "start": self.start_kind, "model_hash": self.model_hash}
        settings.update(requested(*asked))
        record_encoded_text(prompt, text, settings, warnings)
        if encoded.level_map is not None:
            settings["level_map"] = encoded.level_map
        self.record_guidance(settings, prompt, guidance)
        student = self.student_below_for(guidance, sampler, steps, negative_prompt)
        if student is not None:
            settings["distilled_below_timestep"] = student
        attributes = self._attribute_pair([encoded.conditioning], negative_prompt)
        passes = self.denoise_passes(cond, uncond, seeds, steps, guidance, sampler, None, attributes,
                                     self.start_means([encoded.conditioning]),
                                     self.attribute_scales([prompt], guidance),
                                     self.attribute_schedule([prompt], guidance), self.unguided_rows([prompt]),
                                     student)
        return chunk_results(self.standardised_passes(passes, prompt, settings), seeds, settings, warnings,
                             self.provenance())

    def record_guidance(self, settings: dict, prompt: str, guidance: float) -> None:
        """A result's record of how the prompt was guided beyond the caption's scale: its attribute guidance, early
        scale and unguided steps; or, on a guidance-distilled model, that record (its UNet gave them in one row)."""
        if self.guidance_distilled is not None:
            settings["guidance_distilled"] = self.info["sampling"]["guidance_distilled"]
            return
        attribute_guidance = self.attribute_scale(guidance, prompt)
        if attribute_guidance is not None:
            settings["attribute_guidance"] = attribute_guidance
        early = self.early_attribute_guidance(prompt)
        if early is not None:
            settings["attribute_guidance_early"] = {"scale": early[0], "from_timestep": early[1]}
        self.record_unguided(settings, prompt)

    def standardised_passes(self, passes: Iterator[np.ndarray], prompt: str, settings: dict) -> Iterator[np.ndarray]:
        """Each pass through the grey-level map of the prompt's contrast and plane, recorded in `settings`."""
        from dallebrain.data.prompts import parse_prompt

        asked = parse_prompt(prompt)
        self.record_grey_levels(settings, asked.modality, asked.orientation)
        return (self.standardised(images, asked.modality, asked.orientation) for images in passes)

    def __call__(self, prompt: str, n: int = 1, seed: int = 0, steps: int = D.STEPS, guidance: float = D.GUIDANCE,
                 sampler: str = D.SAMPLER, negative_prompt: str = "") -> GenerationResult:
        return GenerationResult.join(list(self.generate_chunks(prompt, n, seed, steps, guidance, sampler,
                                                               negative_prompt)))

    @torch.no_grad()
    def sample(self, prompts: list[str], seeds: list[int], steps: int = D.STEPS, guidance: float = D.GUIDANCE,
               sampler: str = D.SAMPLER, batch_size: int = 8, progress: bool = False) -> np.ndarray:
        """(N, H, W) float32 slices for N (prompt, seed) pairs, one call for many captions (an evaluation's):
        image i is exactly `self(prompts[i], seed=seeds[i]).images[0]` at the same `images_per_pass`, its noise
        drawn from seeds[i] alone and denoised in fixed-size passes as __call__'s are (prompts of one pass may
        differ; one whose contrast has unguided steps, in a pass with prompts that have other ones, to float
        rounding: see below). Prompts are encoded `batch_size` at a time."""
        from tqdm.auto import tqdm

        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise ValueError(f"batch_size must be a whole number, got {batch_size!r}")
        if not prompts or len(prompts) != len(seeds) or batch_size < 1:
            raise ValueError(f"sample needs one seed per prompt and batch_size >= 1, got {len(prompts)} prompts, "
                             f"{len(seeds)} seeds, batch_size {batch_size}")
        for prompt in dict.fromkeys(prompts):
            check_generation_args(prompt, 1, steps, guidance)
        self.check_distilled(guidance)
        # prompts grouped by the (sampler, steps) each is denoised with ("auto": per contrast), in order within a
        # group: a pass holds one sampler, and each image depends on its seed alone, so grouping changes none.
        # Not by unguided steps (a contrast's own split would add a padded pass per batch): a pass mixing them
        # runs the guided batch, so its unguided rows equal their single-prompt images to float rounding only
        groups: dict[tuple[str, int], list[int]] = {}
        for i, prompt in enumerate(prompts):
            groups.setdefault(self.sampling_of(prompt, sampler, steps), []).append(i)
        batches = [(how, rows[s:s + batch_size]) for how, rows in groups.items()
                   for s in range(0, len(rows), batch_size)]
        made: list[np.ndarray | None] = [None] * len(prompts)
        for (how_sampler, how_steps), rows in tqdm(batches, desc="sampling", disable=not progress, leave=False):
            images = self._sample_batch([prompts[i] for i in rows], [seeds[i] for i in rows], how_steps, guidance,
                                        how_sampler)
            for i, image in zip(rows, images, strict=True):
                made[i] = image
        return np.stack(made).astype(np.float32)

    def _sample_batch(self, prompts: list[str], seeds: list[int], steps: int, guidance: float,
                      sampler: str) -> np.ndarray:
        uncond, _ = self.encode_prompt("")
        encoded = [self.encode_model_text(p) for p in prompts]
        cond = torch.cat([e.states for e in encoded])
        conditioning = [e.conditioning for e in encoded]  # the prompts, or where the level map moved one, its level
        images = self.denoise(cond, uncond, seeds, steps, guidance, sampler, None,
                              self._attribute_pair(conditioning, ""), self.start_means(conditioning),
                              self.attribute_scales(prompts, guidance),
                              self.attribute_schedule(prompts, guidance), self.unguided_rows(prompts),
                              self.student_below_for(guidance, sampler, steps))
        return self.standardised_for(images, prompts)

    def _attribute_pair(self, prompts: list[str], negative_prompt: str):
        """(conditional rows, unconditional row or rows) of attribute features, or None for a text-only UNet. The
        unconditional side is what the negative prompt states (nothing, for the empty one: all unstated) and,
        where the model has an `attribute_anchor`, each prompt's own value of those attributes (one row each)."""
        from dallebrain.models.conditioning import anchored_unconditional, unet_features

        if not uses_attributes(self.unet):
            return None
        cond = torch.cat([self.encode_attributes(p) for p in prompts])
        if not self.attribute_anchor:
            return cond, self.encode_attributes(negative_prompt)
        rows = anchored_unconditional(prompts, negative_prompt, self.attribute_anchor)
        return cond, unet_features(self.unet, rows).to(self.device)
