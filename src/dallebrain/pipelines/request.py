"""One generation request, validated once with the limits of its caller (CLI and Python API, or the web page).

The rules live here and nowhere else: the CLI checks a request before loading any model, the pipelines check
the same request again for Python callers, and the web page checks it with its tighter limits. Every refusal is
a one-line ValueError. Kept free of torch so `dallebrain --help` and the CLI's early checks stay instant.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace

from dallebrain.pipelines import defaults as D
from dallebrain.pipelines.prompt_check import require_servable
from dallebrain.vocab import check_sampler

# Seeds live in [0, 2**63): torch.Generator.manual_seed silently wraps -1 onto 2**64 - 1 (the same image under
# another file name) and overflows past 2**64 only once the model has loaded.
MAX_SEED = 2**63 - 1
ROUTES = ("ldm", "unclip")
EXAMPLE_PROMPT = "axial T2-weighted slice of a healthy 70-year-old woman at the level of the lateral ventricles"


def check_attribute_guidance(value) -> float:
    """A finite attribute guidance scale in [0, 50], or a one-line ValueError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and 0.0 <= value <= 50.0):
        raise ValueError(f"attribute_guidance must be a number in [0, 50], got {value!r}")
    return float(value)


def attribute_guidance_by_contrast(info: dict) -> dict[str, float]:
    """The per-contrast attribute guidance a model's dallebrain.json records ("sampling" ->
    "attribute_guidance_by_contrast", e.g. {"T1w": 6, "T2w": 8}), {} when it records none. Why per contrast: one
    scale could not serve them all (v2.1, 32-seed age sweeps: at 6 T2w's young ventricles came out too large, at 8
    its 85/20 ratio is the cohort's within 25 %; at 10 T1w's overshoots; FLAIR follows age best at 4). A one-line
    ValueError for an unknown contrast or a bad scale, read when the model loads."""
    table = _contrast_table(info, "attribute_guidance_by_contrast", "scales")
    return {contrast: check_attribute_guidance(value) for contrast, value in table.items()}


def _contrast_table(info: dict, key: str, values: str) -> dict:
    """dallebrain.json "sampling" -> key, a table by contrast ({} when the model records none); a one-line
    ValueError when it is not a mapping from known contrasts. Its entries are the caller's to check."""
    from dallebrain.vocab import CONTRAST_LONG

    table = (info.get("sampling") or {}).get(key)
    if table is None:
        return {}
    if not isinstance(table, dict) or not set(table) <= set(CONTRAST_LONG):
        raise ValueError(f"dallebrain.json sampling.{key} must map contrasts ({', '.join(CONTRAST_LONG)}) to "
                         f"{values}, got {str(table)[:80]}")
    return table


MAX_STEP_FACTOR = 2  # a per-contrast sampler may at most double the requested steps (bounded cost per request)
# ... and never takes a request past this many steps by itself (the web page's limit; a request above it is run at
# the steps asked): the cost stays bounded, and no schedule is spaced finer than the training timesteps allow
MAX_AUTO_STEPS = 100


def auto_steps(steps: int, factor: int) -> int:
    """The steps a per-contrast sampler runs for a request of `steps`: factor x steps, at most MAX_AUTO_STEPS
    unless more were asked."""
    return min(steps * factor, max(steps, MAX_AUTO_STEPS))


def sampler_by_contrast(info: dict) -> dict[str, tuple[str, int]]:
    """{contrast: (sampler, step factor)} the "auto" sampler uses (dallebrain.json "sampling" ->
    "sampler_by_contrast", e.g. {"FLAIR": {"sampler": "dpm-sde", "step_factor": 2}}), {} when it records none.
    Why per contrast: the stochastic sampler's fresh noise brings back FLAIR's fine texture but not T2w's or PDw's
    (BENCHMARKS.md, "A stochastic sampler for FLAIR texture"), and an SDE solver needs more steps than the ODE one.
    A one-line ValueError for an unknown contrast or sampler or a bad factor, read when the model loads."""
    from dallebrain.vocab import SAMPLERS

    table = _contrast_table(info, "sampler_by_contrast", "samplers")
    out = {}
    for contrast, entry in table.items():
        sampler = entry.get("sampler") if isinstance(entry, dict) else None
        factor = entry.get("step_factor", 1) if isinstance(entry, dict) else None
        if sampler not in SAMPLERS or isinstance(factor, bool) or not isinstance(factor, int) \
                or not 1 <= factor <= MAX_STEP_FACTOR:
            raise ValueError(f"dallebrain.json sampling.sampler_by_contrast.{contrast} must be {{\"sampler\": one of "
                             f"{', '.join(SAMPLERS)}, \"step_factor\": 1..{MAX_STEP_FACTOR}}}, got {str(entry)[:80]}")
        out[contrast] = (sampler, factor)
    return out


TRAIN_TIMESTEPS = 1000  # the noise schedule's length (every shipped scheduler_config.json)


def attribute_guidance_early(info: dict) -> dict[str, tuple[float, int]]:
    """{contrast: (scale, from timestep)}: the attributes' guidance on the sampling steps at timestep >= that
    value, the contrast's own scale on the later ones (dallebrain.json "sampling" -> "attribute_guidance_early",
    e.g. {"FLAIR": {"scale": 8, "from_timestep": 500}}), {} when it records none. Why: the noisy steps lay out
    the coarse anatomy (how large the ventricles are for the age asked) and the late ones the texture, so a
    strong scale early and a mild one late follows age without the late steps' texture cost of a strong scale
    throughout (guidance in a limited interval, Kynkaenniemi et al. 2024; BENCHMARKS.md, "Attribute guidance on
    the noisy steps"). Set by timestep, not step count, so it covers the same noise levels at any --steps. A
    one-line ValueError for an unknown contrast, a bad scale or timestep, read when the model loads."""
    table = _contrast_table(info, "attribute_guidance_early", '{"scale", "from_timestep"}')
    out = {}
    for contrast, entry in table.items():
        scale = entry.get("scale") if isinstance(entry, dict) else None
        start = entry.get("from_timestep") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or set(entry) != {"scale", "from_timestep"} or isinstance(start, bool) \
                or not isinstance(start, int) or not 1 <= start < TRAIN_TIMESTEPS:
            raise ValueError(f"dallebrain.json sampling.attribute_guidance_early.{contrast} must be {{\"scale\": "
                             f"0..50, \"from_timestep\": 1..{TRAIN_TIMESTEPS - 1}}}, got {str(entry)[:80]}")
        try:
            out[contrast] = (check_attribute_guidance(scale), start)
        except ValueError as exc:
            raise ValueError(f"dallebrain.json sampling.attribute_guidance_early.{contrast}.scale: {exc}") from None
    return out


def unguided_below_timestep(info: dict) -> dict[str, int]:
    """{contrast: timestep}: the sampling steps below that timestep take the conditional prediction alone, for
    prompts of that contrast (dallebrain.json "sampling" -> "unguided_below_timestep", e.g. {"PDw": 400}), {} when
    the model records none. Why: guidance on the low-noise steps, which only refine texture, pulls a contrast's
    texture away from real and costs two of every three UNet rows (guidance in a limited interval, Kynkaenniemi
    et al. 2024); but those steps also hold part of the age response (BENCHMARKS.md, "Guidance off on the
    low-noise steps"), hence per contrast. By timestep, so the same noise levels at any --steps. A one-line
    ValueError for an unknown contrast or a value that is not a timestep, read when the model loads."""
    table = _contrast_table(info, "unguided_below_timestep", "timesteps")
    for contrast, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < TRAIN_TIMESTEPS:
            raise ValueError(f"dallebrain.json sampling.unguided_below_timestep.{contrast} must be a whole number "
                             f"in 1..{TRAIN_TIMESTEPS - 1}, got {str(value)[:80]}")
    return dict(table)


def guidance_distilled(info: dict) -> float | None:
    """The caption guidance a model's UNet was taught to give in one row (dallebrain.json "sampling" ->
    "guidance_distilled" -> "guidance", recipes/guidance_distill.py), or None for a model sampled with guidance.
    Such a UNet takes the conditional inputs alone on every step: its output already holds the teacher's guidance
    (caption, attributes, per contrast). A one-line ValueError for a malformed record, read when the model loads."""
    record = (info.get("sampling") or {}).get("guidance_distilled")
    if record is None:
        return None
    value = record.get("guidance") if isinstance(record, dict) else None
    below = record.get("below_timestep") if isinstance(record, dict) else None
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not 1.0 <= value <= 30.0
            or (below is not None and (isinstance(below, bool) or not isinstance(below, int)
                                       or not 1 <= below < TRAIN_TIMESTEPS))):
        raise ValueError("dallebrain.json sampling.guidance_distilled must be a record with a guidance in [1, 30] "
                         f"(and a below_timestep in 1..{TRAIN_TIMESTEPS - 1}), got {str(record)[:80]}")
    return float(value)


def distilled_below(info: dict) -> int | None:
    """The timestep below which a model's student UNet (unet_distilled/) replaces its guided teacher
    (sampling.guidance_distilled.below_timestep), or None: no student, or one that replaces the teacher throughout
    (unet/ is the student). Checked by `guidance_distilled`."""
    if guidance_distilled(info) is None:
        return None
    return info["sampling"]["guidance_distilled"].get("below_timestep")


def check_unguided_below(value) -> int:
    """A request's unguided timestep: a whole number in 0..999 (0: every step guided); one-line ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < TRAIN_TIMESTEPS:
        raise ValueError(f"unguided_below must be a whole number in 0..{TRAIN_TIMESTEPS - 1} (0: guide every "
                         f"step), got {value!r}")
    return value


@dataclass(frozen=True)
class Limits:
    """What one kind of caller may ask for."""

    max_n: int
    max_steps: int
    max_guidance: float
    max_seed: int = MAX_SEED
    max_prompt_chars: int | None = None  # None: the text encoder truncates (and says so in the sidecar)
    max_lora_scale: float = 4.0


# The CLI and the Python API: memory is bounded per pass, so n may be large (a data set is `synthesize`'s job).
API_LIMITS = Limits(max_n=1000, max_steps=1000, max_guidance=math.inf)
# The web page: a shared server, so smaller bounds; seeds fit a number box (2**32 - 1).
WEB_LIMITS = Limits(max_n=16, max_steps=100, max_guidance=20.0, max_seed=2**32 - 1, max_prompt_chars=300)


def whole_number(value, name: str, low: int, high: int) -> int:
    """value as an int in [low, high]; accepts 3, 3.0 and "3" (a web form's numbers), refuses True and 3.5."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if isinstance(value, numbers.Integral):
        number = int(value)
    else:
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a whole number, got {value!r}") from None
        if not math.isfinite(as_float) or as_float != int(as_float):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        number = int(as_float)
    if not low <= number <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {number}")
    return number


def real_number(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or not low <= number <= high:  # NaN, and inf where the bound is open
        bound = f"between {low:g} and {high:g}" if math.isfinite(high) else f"a number of at least {low:g}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return number


def check_seed(seed, n: int = 1, max_seed: int = MAX_SEED) -> int:
    """Image i uses seed + i, and each of those must lie in [0, max_seed]."""
    return whole_number(seed, f"seed (for {n} image(s))" if n > 1 else "seed", 0, max_seed - (n - 1))


def check_prompt(prompt, max_chars: int | None = None) -> str:
    if prompt is not None and not isinstance(prompt, str):  # None: a form left empty, refused as empty below
        raise ValueError(f"the prompt must be text, got {type(prompt).__name__} {prompt!r:.40}")
    if not prompt or not prompt.strip():
        raise ValueError(f"empty prompt: describe the slice, e.g. '{EXAMPLE_PROMPT}'")
    if max_chars is not None:
        prompt = " ".join(prompt.split())
        if len(prompt) > max_chars:
            raise ValueError(f"prompt too long: {len(prompt)} characters, at most {max_chars}")
    return prompt


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate and how; `checked(limits)` returns the normalised request or raises a one-line
    ValueError. Image i of a request uses seed + i (`seeds`)."""

    prompt: str
    n: int = 1
    seed: int = 0
    steps: int = D.STEPS
    guidance: float = D.GUIDANCE
    sampler: str = D.SAMPLER
    route: str = "ldm"
    negative_prompt: str = ""
    prior_steps: int = D.PRIOR_STEPS
    prior_guidance: float = D.PRIOR_GUIDANCE
    lora_scale: float = 1.0

    def checked(self, limits: Limits = API_LIMITS) -> GenerationRequest:
        n = whole_number(self.n, "number of images", 1, limits.max_n)
        check_sampler(self.sampler)
        if self.route not in ROUTES:
            raise ValueError(f"unknown route {self.route!r}: choose {' or '.join(ROUTES)}")
        if not isinstance(self.negative_prompt, str):
            raise ValueError(f"negative prompt must be text, got {self.negative_prompt!r}")
        return replace(
            self,
            prompt=check_prompt(self.prompt, limits.max_prompt_chars),
            n=n,
            seed=check_seed(self.seed, n, limits.max_seed),
            steps=whole_number(self.steps, "steps", 1, limits.max_steps),
            guidance=real_number(self.guidance, "guidance", 0.0, limits.max_guidance),
            prior_steps=whole_number(self.prior_steps, "prior_steps", 1, limits.max_steps),
            prior_guidance=real_number(self.prior_guidance, "prior_guidance", 0.0, limits.max_guidance),
            lora_scale=real_number(self.lora_scale, "LoRA scale", 0.0, limits.max_lora_scale),
        )

    def served(self, limits: Limits = API_LIMITS) -> GenerationRequest:
        """checked(limits) for a user's generate request, whose prompt must also be one the healthy-brain MRI
        model can serve (pipelines.prompt_check: a one-line ValueError for another modality or body part, a
        pathology or a contradiction; its warnings reach the JSON sidecar through pipelines.output). The
        pipelines check numbers only (`checked`): generate-lesion hands them prompts with lesions on purpose."""
        request = self.checked(limits)
        require_servable(request.prompt)
        return request

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.n)]
