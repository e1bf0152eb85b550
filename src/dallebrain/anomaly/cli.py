"""`dallebrain anomaly` and `dallebrain evaluate-anomaly`, registered at the end of dallebrain/cli.py. Heavy
imports stay inside the commands so `dallebrain --help` stays instant."""

from __future__ import annotations

from pathlib import Path

import typer

_METHODS_HELP = ("diffusion, diffusion_multiscale, diffusion_patch (partial noising and re-denoising), latent_z "
                 "(VAE latent vs the healthy latents at that position), vae_error, intensity_z (baselines)")


def _split(text: str | None) -> tuple[str, ...] | None:
    return tuple(t.strip() for t in text.split(",") if t.strip()) if text else None


def anomaly_cmd(
    inputs: list[Path] = typer.Argument(..., help="Slices: PNG or single-slice NIfTI (plane, level and contrast "
                                        "from a JSON sidecar, the NIfTI affine, prepare's file name or --prompt)."),
    out: Path = typer.Option(..., "--out", help="Output folder: overlay and pseudo-healthy PNG, map/mask NIfTI, JSON."),
    normal: Path = typer.Option(None, "--normal", help="Normal model folder (normal/ of an evaluate-anomaly run)."),
    data: Path = typer.Option(None, "--data", help="Or a prepared data set: fit a normal model on its healthy "
                              "subjects now (saved as OUT/normal)."),
    method: str = typer.Option("diffusion", help=_METHODS_HELP + "."),
    prompt: str = typer.Option(None, help="Describes the slices where no sidecar or affine does, e.g. 'axial FLAIR "
                               "at z = 18 mm'."),
    model: Path = typer.Option(None, help="Pipeline folder (default: the shipped model)."),
    fpr: float = typer.Option(0.01, help="With --data: false-positive rate of healthy pixels the threshold allows."),
    overwrite: bool = typer.Option(False, help="Replace earlier outputs of the same names."),
) -> None:
    """Pseudo-healthy reconstruction, anomaly map, slice score and mask of each slice."""
    from dallebrain.anomaly.detect import DetectOptions, detect
    from dallebrain.cli._common import fail, first_line

    try:
        options = DetectOptions(tuple(inputs), out, normal, data, method, model, prompt, fpr, overwrite=overwrite)
        records = detect(options)
    except (ValueError, FileExistsError, OSError) as exc:
        fail(first_line(exc))
    flagged = sum(r["anomalous"] for r in records)
    typer.echo(f"{len(records)} slice(s) in {out}: {flagged} anomalous at the slice threshold")


def evaluate_anomaly_cmd(
    data: Path = typer.Option(..., "--data", help="Prepared data set, with lesion masks (a cohort simulated with "
                              "--lesions) or healthy (lesions are then pasted)."),
    out: Path = typer.Option(..., "--out", help="Report folder: report.html, summary.md, metrics.json, normal/."),
    model: Path = typer.Option(None, help="Pipeline folder (default: the shipped model)."),
    methods: str = typer.Option(None, help="Comma-separated methods (default: all): " + _METHODS_HELP + "."),
    lesions: str = typer.Option("auto", help="auto, prepared (the data set's masks) or pasted."),
    lesion_types: str = typer.Option("wmh,ms,infarct,tumour", help="Lesion types to evaluate."),
    n_per_type: int = typer.Option(16, help="Lesion slices per type."),
    n_healthy: int = typer.Option(32, help="Slices of healthy test subjects."),
    n_val: int = typer.Option(32, help="Slices of healthy validation subjects (thresholds)."),
    max_fit: int = typer.Option(1500, help="Healthy slices the normal model is fitted on, at most."),
    modalities: str = typer.Option(None, help="Only these contrasts, e.g. T2w,FLAIR (default: all)."),
    orientations: str = typer.Option(None, help="Only these planes, e.g. axial (default: all)."),
    fpr: float = typer.Option(0.01, help="False-positive rate of healthy validation pixels the thresholds allow."),
    steps: int = typer.Option(10, help="Diffusion methods: denoising steps back from the noised level."),
    seed: int = typer.Option(0, help="Subject roles, slice choice and diffusion noise."),
) -> None:
    """Score every detection method against exact lesion masks: Dice, AUPRC, AUROC, slice AUROC, per lesion type
    and size, healthy false positives, with the VAE-error and intensity z-score baselines."""
    from dallebrain.cli._common import fail, first_line
    from dallebrain.data.lesions import parse_lesions

    try:
        from dallebrain.anomaly.benchmark import BenchmarkOptions, run_benchmark
        from dallebrain.anomaly.methods import METHODS
        from dallebrain.anomaly.selection import SelectionSizes

        if out.exists() and not out.is_dir():
            raise ValueError(f"--out exists and is not a folder: {out}")
        if steps < 1 or steps > 1000:
            raise ValueError(f"--steps must be between 1 and 1000, got {steps}")
        options = BenchmarkOptions(data, out, model, _split(methods) or METHODS, lesions, parse_lesions(lesion_types),
                                   SelectionSizes(n_per_type, n_healthy, n_val, max_fit), fpr, _split(modalities),
                                   _split(orientations), steps=steps, seed=seed)
        metrics = run_benchmark(options)
    except (ValueError, OSError) as exc:
        fail(first_line(exc))
    typer.echo(f"report: {out / 'report.html'} (summary.md, metrics.json, normal/) in "
               f"{metrics['timing']['total_s']:.0f} s")


def generate_lesion_cmd(
    prompt: str = typer.Argument(..., help="A slice with a pathology marker, e.g. 'axial T2-weighted slice of a "
                                 "60-year-old woman with a 30 mm tumour in the right temporal lobe' or 'axial FLAIR "
                                 "... with periventricular white-matter hyperintensities (Fazekas 2)'."),
    n: int = typer.Option(1, "--n", help="Number of images (1-1000)."),
    seed: int = typer.Option(0, help="Seed of the first image; image i uses seed + i."),
    steps: int = typer.Option(None, help="Denoising steps of the healthy slice (default: as generate)."),
    guidance: float = typer.Option(None, help="Guidance scale (default: as generate)."),
    model: Path = typer.Option(None, help="Pipeline folder (default: the shipped model)."),
    out: Path = typer.Option(Path("dallebrain-lesions"), help="Output folder: PNG, NIfTI, JSON and the lesion "
                             "mask (PNG and NIfTI) per image."),
    overwrite: bool = typer.Option(False, help="Replace files of the same seeds in --out."),
) -> None:
    """Slices with a lesion and its exact mask (paired data for segmentation): a healthy slice from the model
    with the lesion rendered in by the simulator's appearance model, at the stated place and size."""
    from dallebrain.cli._common import fail, first_line

    try:
        from dallebrain.anomaly.pathology import lesions_to_folder
        from dallebrain.api import check_output, default_model, load_pipeline
        from dallebrain.pipelines.text2mri import check_generation_args

        # unstated steps and guidance take generate's defaults; stated ones are checked as given (0 steps is refused)
        check_generation_args(prompt, n, 1 if steps is None else steps, 0.0 if guidance is None else guidance,
                              seed=seed)
        _check_lesion_prompt(prompt)
        check_output(out, seed, n, overwrite)
        pipe = load_pipeline(model or default_model())
        written = lesions_to_folder(pipe, prompt, out, n, seed, steps, guidance, overwrite, str(model or
                                                                                              default_model()))
    except (ValueError, FileExistsError, OSError) as exc:
        fail(first_line(exc))
    typer.echo(f"{len(written)} image(s) with lesion masks in {out}")


def _check_lesion_prompt(prompt: str) -> None:
    """The prompt's lesion and contrast, checked before the model loads (a bad request costs nothing)."""
    from dallebrain.anomaly.attributes import from_prompt
    from dallebrain.anomaly.lesion_prompts import find_lesion, healthy_text

    request = find_lesion(prompt)
    if request is None:
        raise ValueError("the prompt names no lesion (e.g. 'with a 30 mm tumour in the right temporal lobe'): use "
                         "'dallebrain generate' for healthy slices")
    if from_prompt(healthy_text(prompt, request)).modality is None:
        raise ValueError("name the contrast (T1w, T2w, PDw or FLAIR): a lesion looks different in each")
