"""`dallebrain generate | variations | export`: images from the shipped (or a given) model.

Every request is checked (pipelines.request.GenerationRequest, the output folder, a slice's header) before the
model loads, so bad input costs nothing."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from dallebrain.cli._common import fail, first_line
from dallebrain.pipelines import defaults as D
from dallebrain.pipelines.precision import check_precision
from dallebrain.pipelines.request import (
    API_LIMITS,
    GenerationRequest,
    check_attribute_guidance,
    check_unguided_below,
)

DEFAULT_OUT = Path("dallebrain-output")


# A refusal names the option the user typed, not the Python argument behind it.
_OPTION_OF = {"prior_steps": "--prior-steps", "prior_guidance": "--prior-guidance", "LoRA scale": "--lora-scale"}


def _request(**fields) -> GenerationRequest:
    try:
        return GenerationRequest(**fields).served(API_LIMITS)  # a prompt the model cannot serve: exit 2 here
    except ValueError as exc:
        message = str(exc)
        for name, option in _OPTION_OF.items():
            if message.startswith(name + " "):
                message = option + message[len(name):]
        fail(message)


def _free_default_folder(seed: int, n: int, prefix: str = "seed") -> Path:
    """The default output folder, or the first numbered one (dallebrain-output-2, -3, ...) that holds no file of
    these seeds: rerunning the README's command writes beside the first run instead of failing. An --out the
    user chose is never renumbered."""
    from dallebrain.api import check_output

    for number in range(1, 1000):
        folder = DEFAULT_OUT if number == 1 else DEFAULT_OUT.with_name(f"{DEFAULT_OUT.name}-{number}")
        try:
            check_output(folder, seed, n, False, prefix)
        except FileExistsError:
            continue
        if number > 1:
            typer.echo(f"note: {DEFAULT_OUT} already holds these seeds: writing to {folder} (--out chooses)",
                       err=True)
        return folder
    fail(f"{DEFAULT_OUT}-2 ... -999 are all taken: choose --out")


def _warnings(written: list[dict]) -> list[str]:
    return json.loads(written[0]["json"].read_text()).get("warnings", []) if written else []


def generate_cmd(
    prompt: str = typer.Argument(..., help="What to generate, e.g. 'axial T2-weighted slice of a healthy "
                                 "70-year-old woman at the level of the lateral ventricles'."),
    n: int = typer.Option(1, "--n", help=f"Number of images (1-{API_LIMITS.max_n})."),
    seed: int = typer.Option(0, help="Seed of the first image; image i uses seed + i (0 to 2**63 - n)."),
    steps: int = typer.Option(D.STEPS, help="Denoising steps."),
    guidance: float = typer.Option(D.GUIDANCE, help="Classifier-free guidance scale of the caption (1 = none; "
                                   "0 = unconditional when --attribute-guidance is 0 too)."),
    sampler: str = typer.Option(D.SAMPLER, help="auto (the model's choice per contrast, else dpm), dpm "
                                 "(DPM-Solver++), dpm-karras (on Karras noise levels), dpm-sde (its SDE form), "
                                 "unipc (UniPC, for few steps), ddim or euler."),
    negative_prompt: str = typer.Option("", help="What to steer away from (replaces the empty prompt of guidance)."),
    route: str = typer.Option("ldm", help="ldm (latent diffusion) or unclip (prior + decoder)."),
    model: Path = typer.Option(None, help="Pipeline folder (default: the model shipped in the package)."),
    lora: Path = typer.Option(None, help="LoRA adapter folder to apply."),
    lora_scale: float = typer.Option(1.0, help="LoRA strength (0 = base model, at most 4)."),
    out: Path = typer.Option(None, help=f"Output folder for PNG, NIfTI and JSON (default: {DEFAULT_OUT}, or "
                             f"{DEFAULT_OUT}-2, -3, ... when it already holds these seeds)."),
    png16: bool = typer.Option(False, "--png16", help="Write 16-bit PNG instead of 8-bit."),
    overwrite: bool = typer.Option(False, help="Replace files of the same seeds in --out."),
    prior_steps: int = typer.Option(D.PRIOR_STEPS, help="unCLIP only: denoising steps of the prior."),
    prior_guidance: float = typer.Option(D.PRIOR_GUIDANCE, help="unCLIP only: guidance scale of the prior."),
    precision: str = typer.Option(D.PRECISION, help="What the UNet and VAE decoder compute in: bf16, fp32, or "
                                  "auto (bf16 where the hardware computes it natively, else fp32)."),
    attribute_guidance: float = typer.Option(None, help="Guidance scale of the attributes the prompt states (age, "
                                             "sex, plane, level...), apart from the caption's, for every "
                                             "contrast (default: the model's own, per contrast where it has one: "
                                             "sampling.attribute_guidance_by_contrast in its dallebrain.json, "
                                             "recorded in each sidecar; equal to "
                                             "--guidance: plain guidance)."),
    literal_prompt: bool = typer.Option(False, "--literal-prompt", help="Encode the prompt as written. By "
                                        "default a prompt naming plane, level and contrast but no structures is "
                                        "encoded as the caption the model was trained on (the sidecar's "
                                        "prompt_as_encoded), mixed with its neighbour where the model's level "
                                        "map says the slice lands between them (the sidecar's level_map): "
                                        "short prompts then land at the level they name."),
    unguided_below: int = typer.Option(None, help="Sample the steps below this timestep (1-999) without "
                                       "guidance, whatever the contrast: texture closer to real, the age asked "
                                       "shown more weakly (BENCHMARKS.md, 'Guidance off on the low-noise "
                                       "steps'); 0 = guide every step (default: the model's own per contrast)."),
    raw_grey_levels: bool = typer.Option(False, "--raw-grey-levels", help="Keep the slices' grey levels as the "
                                         "model draws them. By default a model with grey-level maps puts them on "
                                         "its cohort's scale for the contrast and plane asked (the sidecar's "
                                         "grey_levels)."),
    keep_outline: bool = typer.Option(False, "--keep-outline", help="Keep the brain's outline as the VAE "
                                      "decodes it, with its faint one-pixel halo. By default a model with a "
                                      "brain-outline head removes the halo for the contrasts it was measured to "
                                      "help (the sidecar's outline)."),
) -> None:
    """Generate synthetic brain MRI slices from a text prompt (PNG + NIfTI + JSON per image)."""
    r = _request(prompt=prompt, n=n, seed=seed, steps=steps, guidance=guidance, sampler=sampler, route=route,
                 negative_prompt=negative_prompt, prior_steps=prior_steps, prior_guidance=prior_guidance,
                 lora_scale=lora_scale)
    try:
        check_precision(precision, "--precision")
        if attribute_guidance is not None:
            check_attribute_guidance(attribute_guidance)
        if unguided_below is not None:
            check_unguided_below(unguided_below)
    except ValueError as exc:
        fail(str(exc).replace("attribute_guidance", "--attribute-guidance").replace("unguided_below",
                                                                                     "--unguided-below"))
    from dallebrain.api import check_output, default_model, generate_to_folder, load_pipeline

    model_dir = model or default_model()
    try:
        if out is None and not overwrite:
            out = _free_default_folder(r.seed, r.n)
        out = out or DEFAULT_OUT
        check_output(out, r.seed, r.n, overwrite)  # before the model loads: a bad --out costs nothing
        pipe = load_pipeline(model_dir, route=r.route, lora=lora, lora_scale=r.lora_scale, precision=precision)
        pipe.attribute_guidance = attribute_guidance
        pipe.unguided_below = unguided_below
        if literal_prompt:
            pipe.prompt_form = "literal"
        pipe.standardise_grey_levels = not raw_grey_levels
        pipe.trim_outline = not keep_outline
        extra = {"prior_steps": r.prior_steps, "prior_guidance": r.prior_guidance} if r.route == "unclip" else {}
        written = generate_to_folder(pipe, r.prompt, out, r.n, r.seed, r.steps, r.guidance, r.sampler, png16,
                                     overwrite, str(model_dir), negative_prompt=r.negative_prompt, **extra)
    except (ValueError, FileExistsError, OSError) as exc:
        fail(first_line(exc))
    for w in _warnings(written):
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"{len(written)} image(s) in {out}: " + ", ".join(p["png"].name for p in written[:4])
               + (" ..." if len(written) > 4 else ""))


def variations_cmd(
    image: Path = typer.Argument(..., help="A slice: PNG (8/16-bit) or single-slice NIfTI."),
    n: int = typer.Option(4, "--n", help="Number of variations."),
    seed: int = typer.Option(0, help="Seed of the first variation."),
    steps: int = typer.Option(D.STEPS, help="Denoising steps."),
    guidance: float = typer.Option(D.GUIDANCE, help="Guidance scale."),
    sampler: str = typer.Option(D.SAMPLER, help="auto (DPM-Solver++ for variations), dpm, dpm-karras, "
                                 "dpm-sde, unipc, ddim or euler."),
    model: Path = typer.Option(None, help="Pipeline folder with prior/ and decoder/ (default: shipped model)."),
    out: Path = typer.Option(Path("dallebrain-variations"), help="Output folder."),
    png16: bool = typer.Option(False, "--png16", help="Write 16-bit PNG."),
    overwrite: bool = typer.Option(False, help="Replace files of the same seeds in --out."),
) -> None:
    """New slices that share a slice's brain-CLIP image embedding (unCLIP decoder)."""
    r = _request(prompt="variations", n=n, seed=seed, steps=steps, guidance=guidance, sampler=sampler)
    from dallebrain.api import check_output, check_slice_file, default_model, load_pipeline, variations_to_folder
    from dallebrain.vocab import VARIATION_PREFIX

    model_dir = model or default_model()
    try:
        check_slice_file(image)  # the slice's header and --out before the model loads: bad input costs nothing
        check_output(out, r.seed, r.n, overwrite, VARIATION_PREFIX)
        pipe = load_pipeline(model_dir, route="unclip")
        written = variations_to_folder(pipe, image, out, r.n, r.seed, r.steps, r.guidance, r.sampler, png16,
                                       overwrite, str(model_dir))
    except (ValueError, FileExistsError, OSError) as exc:
        fail(first_line(exc))
    typer.echo(f"{len(written)} variation(s) in {out}")


def export_cmd(
    model: Path = typer.Option(None, help="Pipeline folder (default: the shipped model)."),
    out: Path = typer.Option(..., help="New folder for the stock-diffusers copy."),
) -> None:
    """Write a self-contained copy of a pipeline for stock diffusers (StableDiffusionPipeline.from_pretrained):
    the text encoder is materialised in full from the installed MiniLM plus our tuned layers, and an attribute-
    conditioned UNet has "every attribute unstated" folded in (a stock client passes text only)."""
    from dallebrain.api import default_model
    from dallebrain.pipelines.export import export_stock_folder

    try:
        export_stock_folder(model or default_model(), out)
    except (ValueError, OSError) as exc:
        fail(first_line(exc))
    typer.echo(f"stock diffusers folder: {out}")
