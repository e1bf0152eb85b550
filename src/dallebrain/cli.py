"""The `dallebrain` command. Heavy imports live inside the commands so `--help` is instant."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from dallebrain._env import configure_offline
from dallebrain.pipelines import defaults as D

configure_offline()

app = typer.Typer(help="Dall-e Brain: text-prompted synthetic healthy brain MRI.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Simulate and prepare training data.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def fail(message: str, code: int = 2) -> None:
    """One clear line on stderr and a non-zero exit: what every bad input gets."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _workers(workers: int | None) -> int:
    return max(1, workers if workers is not None else min(4, os.cpu_count() or 1))


@data_app.command("simulate")
def simulate_cmd(
    subjects: int = typer.Option(..., "--subjects", "-n", help="Number of subjects to simulate."),
    out: Path = typer.Option(..., "--out", help="Output folder (BIDS-like); a rerun finishes it."),
    seed: int = typer.Option(0, help="Cohort seed: the same seed gives the same subjects."),
    contrasts: str = typer.Option("t1,t2,pd,flair", help="Comma-separated: t1, t2, pd, flair."),
    workers: int = typer.Option(None, help="Parallel processes (default: the cores, at most 4)."),
    timepoints: str = typer.Option(None, help="Years after baseline to scan each subject at, e.g. 0,5,10: one "
                                   "anatomy aged per session (BIDS ses-01, ses-02, ...)."),
    session_scanner: str = typer.Option("keep", help="Later sessions keep the scanner and protocol, or redraw."),
    lesions: str = typer.Option(None, help="Lesion types to draw from: wmh, ms, infarct, tumour (default: none)."),
    lesion_fraction: float = typer.Option(None, help="Share of subjects with a lesion, 0-1 (default 0.5 with "
                                          "--lesions)."),
) -> None:
    """Simulate a cohort from the MNI152 template: ages 18-90, both sexes, 1.5 T and 3 T; healthy unless
    --lesions, one scan per subject unless --timepoints."""
    from dallebrain.data.lesions import parse_lesions
    from dallebrain.data.longitudinal import parse_timepoints
    from dallebrain.data.simulate import SimulationOptions, parse_contrasts, simulate_cohort

    if subjects < 1 or subjects > 100_000:
        fail(f"--subjects must be between 1 and 100000, got {subjects}")
    if lesion_fraction is not None and not lesions:
        fail("--lesion-fraction needs --lesions (which lesion types to draw)")
    try:
        chosen = parse_contrasts(contrasts)
        options = SimulationOptions(
            subjects, seed, chosen, timepoints=parse_timepoints(timepoints) if timepoints is not None else (),
            session_scanner=session_scanner, lesions=parse_lesions(lesions) if lesions is not None else (),
            lesion_fraction=(0.5 if lesion_fraction is None else lesion_fraction) if lesions else 0.0)
    except ValueError as exc:
        fail(str(exc))
    if out.exists() and not out.is_dir():
        fail(f"--out exists and is not a folder: {out}")
    try:
        table = simulate_cohort(out, options, _workers(workers))
    except ValueError as exc:
        fail(str(exc).splitlines()[0])
    typer.echo(f"{len(table)} subjects in {out} (participants.tsv)")


@data_app.command("prepare")
def prepare_cmd(
    source: str = typer.Option(..., help="simulated, bids, ixi, oasis1 or hcp."),
    input: Path = typer.Option(..., "--input", help="Cohort folder as downloaded (or simulated)."),
    out: Path = typer.Option(..., "--out", help="Prepared data set folder; a rerun skips finished subjects."),
    demographics: Path = typer.Option(None, help="Demographics table (IXI.xls, oasis CSV, HCP CSV, ...)."),
    size: int = typer.Option(128, help="Slice size in pixels over a 192 mm field of view."),
    slice_step_mm: float = typer.Option(3.0, help="Distance between kept slices (mm)."),
    min_brain: float = typer.Option(0.1, help="Keep slices whose brain covers at least this fraction."),
    seed: int = typer.Option(0, help="Split and caption seed."),
    captions_per_slice: int = typer.Option(5, help="Caption phrasings per slice."),
    workers: int = typer.Option(None, help="Parallel processes (default: the cores, at most 4)."),
    max_voxels: int = typer.Option(None, help="Refuse images with more voxels, read from the header before "
                                   "decompressing (default 512^3 = 134217728: 512 MiB as float32)."),
) -> None:
    """Register, normalise, slice and caption a cohort into metadata.parquet + PNG slices."""
    from dallebrain.data.prepare import SOURCES, PrepareOptions, prepare
    from dallebrain.data.volume_io import MAX_VOXELS, MIN_VOXELS

    if source not in SOURCES:
        fail(f"unknown --source {source!r}: choose from {', '.join(SOURCES)}")
    if not input.is_dir():
        fail(f"--input folder not found: {input}")
    if demographics is not None and not demographics.is_file():
        fail(f"--demographics file not found: {demographics}")
    if size < 16 or size > 1024 or size % 8:
        fail(f"--size must be a multiple of 8 between 16 and 1024, got {size}")
    if slice_step_mm <= 0:
        fail(f"--slice-step-mm must be positive, got {slice_step_mm}")
    if not 0 <= min_brain < 1:
        fail(f"--min-brain must be in [0, 1), got {min_brain}")
    if captions_per_slice < 1:
        fail(f"--captions-per-slice must be at least 1, got {captions_per_slice}")
    max_voxels = MAX_VOXELS if max_voxels is None else max_voxels
    if max_voxels < MIN_VOXELS**3:
        fail(f"--max-voxels must be at least {MIN_VOXELS**3} (the smallest head volume), got {max_voxels}")
    options = PrepareOptions(source, input, out, demographics, size, slice_step_mm, min_brain,
                             seed=seed, captions_per_slice=captions_per_slice, workers=_workers(workers),
                             max_voxels=max_voxels)
    try:
        result = prepare(options)
    except (ValueError, RuntimeError) as exc:
        fail(str(exc).splitlines()[0])
    typer.echo(f"{result.n_slices} slices of {result.n_subjects} subjects in {out} "
               f"({result.seconds:.0f} s); dataset card: {out / 'README.md'}")
    if result.failures:
        typer.echo(f"{len(result.failures)} subject(s) failed: see {out / 'failures.csv'}", err=True)
        raise typer.Exit(1)


@data_app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("dallebrain-demo"), help="Folder for the demo cohort and data set."),
    subjects: int = typer.Option(6, help="Subjects to simulate."),
    workers: int = typer.Option(None, help="Parallel processes."),
) -> None:
    """Simulate a small cohort, prepare it, and print its dataset card."""
    from dallebrain.data.prepare import PrepareOptions, prepare
    from dallebrain.data.simulate import SimulationOptions, simulate_cohort

    n_workers = _workers(workers)
    simulate_cohort(out / "cohort", SimulationOptions(subjects), n_workers)
    prepare(PrepareOptions("simulated", out / "cohort", out / "prepared", workers=n_workers))
    typer.echo((out / "prepared" / "README.md").read_text())


@app.command("generate")
def generate_cmd(
    prompt: str = typer.Argument(..., help="What to generate, e.g. 'axial T2-weighted slice of a healthy "
                                 "70-year-old woman at the level of the lateral ventricles'."),
    n: int = typer.Option(1, "--n", help="Number of images (1-1000)."),
    seed: int = typer.Option(0, help="Seed of the first image; image i uses seed + i."),
    steps: int = typer.Option(D.STEPS, help="Denoising steps."),
    guidance: float = typer.Option(D.GUIDANCE, help="Classifier-free guidance scale (0 = unconditional, 1 = none)."),
    sampler: str = typer.Option(D.SAMPLER, help="dpm (DPM-Solver++), ddim or euler."),
    route: str = typer.Option("ldm", help="ldm (latent diffusion) or unclip (prior + decoder)."),
    model: Path = typer.Option(None, help="Pipeline folder (default: the model shipped in the package)."),
    lora: Path = typer.Option(None, help="LoRA adapter folder to apply."),
    lora_scale: float = typer.Option(1.0, help="LoRA strength (0 = base model)."),
    out: Path = typer.Option(Path("dallebrain-output"), help="Output folder for PNG, NIfTI and JSON."),
    png16: bool = typer.Option(False, "--png16", help="Write 16-bit PNG instead of 8-bit."),
    overwrite: bool = typer.Option(False, help="Replace files of the same seeds in --out."),
    prior_steps: int = typer.Option(25, help="unCLIP only: denoising steps of the prior."),
    prior_guidance: float = typer.Option(4.0, help="unCLIP only: guidance scale of the prior."),
) -> None:
    """Generate synthetic brain MRI slices from a text prompt (PNG + NIfTI + JSON per image)."""
    from dallebrain.models.unet import SAMPLERS
    from dallebrain.pipelines.text2mri import check_generation_args

    try:
        check_generation_args(prompt, n, steps, guidance, seed=seed)
    except ValueError as exc:
        fail(str(exc))
    if sampler not in SAMPLERS:
        fail(f"unknown --sampler {sampler!r}: choose from {', '.join(SAMPLERS)}")
    if route not in ("ldm", "unclip"):
        fail(f"unknown --route {route!r}: choose ldm or unclip")
    if route == "unclip" and (prior_steps < 1 or prior_steps > 1000 or prior_guidance < 0):
        fail(f"--prior-steps must be 1-1000 and --prior-guidance non-negative, got {prior_steps}, {prior_guidance}")
    if lora_scale < 0 or lora_scale > 4:
        fail(f"--lora-scale must be between 0 and 4, got {lora_scale}")
    from dallebrain.api import check_output, default_model, generate_to_folder, load_pipeline

    model_dir = model or default_model()
    try:
        check_output(out, seed, n, overwrite)  # before the model loads: a bad --out costs nothing
        pipe = load_pipeline(model_dir, route=route, lora=lora, lora_scale=lora_scale)
        extra = {"prior_steps": prior_steps, "prior_guidance": prior_guidance} if route == "unclip" else {}
        written = generate_to_folder(pipe, prompt, out, n, seed, steps, guidance, sampler, png16, overwrite,
                                     str(model_dir), **extra)
    except (ValueError, FileExistsError, OSError) as exc:
        fail(str(exc).splitlines()[0])
    for w in json_warnings(written):
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"{len(written)} image(s) in {out}: " + ", ".join(p["png"].name for p in written[:4])
               + (" ..." if len(written) > 4 else ""))


def json_warnings(written: list[dict]) -> list[str]:
    import json

    if not written:
        return []
    return json.loads(written[0]["json"].read_text()).get("warnings", [])


@app.command("variations")
def variations_cmd(
    image: Path = typer.Argument(..., help="A slice: PNG (8/16-bit) or single-slice NIfTI."),
    n: int = typer.Option(4, "--n", help="Number of variations."),
    seed: int = typer.Option(0, help="Seed of the first variation."),
    steps: int = typer.Option(D.STEPS, help="Denoising steps."),
    guidance: float = typer.Option(4.0, help="Guidance scale."),
    sampler: str = typer.Option(D.SAMPLER, help="dpm, ddim or euler."),
    model: Path = typer.Option(None, help="Pipeline folder with prior/ and decoder/ (default: shipped model)."),
    out: Path = typer.Option(Path("dallebrain-variations"), help="Output folder."),
    png16: bool = typer.Option(False, "--png16", help="Write 16-bit PNG."),
    overwrite: bool = typer.Option(False, help="Replace files of the same seeds in --out."),
) -> None:
    """New slices that share a slice's brain-CLIP image embedding (unCLIP decoder)."""
    from dallebrain.models.unet import SAMPLERS
    from dallebrain.pipelines.text2mri import check_generation_args

    try:
        check_generation_args("variations", n, steps, guidance, seed=seed)
    except ValueError as exc:
        fail(str(exc))
    if sampler not in SAMPLERS:
        fail(f"unknown --sampler {sampler!r}: choose from {', '.join(SAMPLERS)}")
    from dallebrain.api import (
        VARIATION_PREFIX,
        check_output,
        check_slice_file,
        default_model,
        load_pipeline,
        variations_to_folder,
    )

    model_dir = model or default_model()
    try:
        check_slice_file(image)  # the slice's header and --out before the model loads: bad input costs nothing
        check_output(out, seed, n, overwrite, VARIATION_PREFIX)
        pipe = load_pipeline(model_dir, route="unclip")
        written = variations_to_folder(pipe, image, out, n, seed, steps, guidance, sampler, png16, overwrite,
                                       str(model_dir))
    except (ValueError, FileExistsError, OSError) as exc:
        fail(str(exc).splitlines()[0])
    typer.echo(f"{len(written)} variation(s) in {out}")


@app.command("export")
def export_cmd(
    model: Path = typer.Option(None, help="Pipeline folder (default: the shipped model)."),
    out: Path = typer.Option(..., help="New folder for the stock-diffusers copy."),
) -> None:
    """Write a self-contained copy of a pipeline for stock diffusers (StableDiffusionPipeline.from_pretrained):
    the text encoder is materialised in full from the installed MiniLM plus our tuned layers."""
    from dallebrain.api import default_model
    from dallebrain.pipelines.export import export_stock_folder

    try:
        export_stock_folder(model or default_model(), out)
    except (ValueError, OSError) as exc:
        fail(str(exc).splitlines()[0])
    typer.echo(f"stock diffusers folder: {out}")


TRAIN_STAGES = ("clip", "vae", "ldm", "prior", "decoder", "lora")


@app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                        "help_option_names": []})
def train_cmd(ctx: typer.Context, stage: str = typer.Argument(..., help=f"One of: {', '.join(TRAIN_STAGES)}.")):
    """Train one stage: dallebrain train STAGE --data PREPARED --out DIR [--config F] [--max-steps N] [--resume]
    [--set key=value]. `dallebrain train STAGE --help` lists the stage's options."""
    import importlib

    if stage not in TRAIN_STAGES:
        fail(f"unknown stage {stage!r}: choose from {', '.join(TRAIN_STAGES)}")
    module = importlib.import_module(f"dallebrain.training.{stage}")
    try:
        module.main(list(ctx.args))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


from dallebrain.evaluation.cli import evaluate_cmd  # noqa: E402 - uses fail() above

app.command("evaluate")(evaluate_cmd)

from dallebrain.app.cli import serve_cmd  # noqa: E402

app.command("serve")(serve_cmd)

from dallebrain.synthesize.cli import evaluate_utility_cmd, synthesize_cmd  # noqa: E402 - synthetic data sets

app.command("synthesize")(synthesize_cmd)
app.command("evaluate-utility")(evaluate_utility_cmd)

from dallebrain.anomaly.cli import anomaly_cmd, evaluate_anomaly_cmd, generate_lesion_cmd  # noqa: E402 - issue 15

app.command("anomaly")(anomaly_cmd)
app.command("evaluate-anomaly")(evaluate_anomaly_cmd)
app.command("generate-lesion")(generate_lesion_cmd)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
