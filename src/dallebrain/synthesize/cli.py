"""`dallebrain synthesize` and `dallebrain evaluate-utility`, registered at the end of dallebrain/cli.py.
`accelerate launch -m dallebrain.synthesize ...` runs the same `synthesize` on several processes.
Only typer is imported here, so `dallebrain --help` stays instant."""

from __future__ import annotations

from pathlib import Path

import typer

from dallebrain.pipelines import defaults as D

_MIX_HELP = "Comma-separated choices, each with an optional =weight (default uniform)"


def synthesize_cmd(
    n: int = typer.Option(..., "--n", help="Number of synthetic slices."),
    out: Path = typer.Option(..., "--out", help="New folder for the data set; a rerun with the same settings "
                             "resumes it."),
    like: Path = typer.Option(None, "--like", help="Prepared data set whose joint distribution of contrast, plane, "
                              "level, age, sex and field strength to match (its train split)."),
    ages: str = typer.Option(None, help=f"Age ranges in years, e.g. 20-90 or 20-40=1,60-90=3. {_MIX_HELP}."),
    sexes: str = typer.Option(None, help="F, M, e.g. F=2,M=1."),
    contrasts: str = typer.Option(None, help="T1w, T2w, PDw, FLAIR."),
    planes: str = typer.Option(None, help="axial, coronal, sagittal."),
    levels: str = typer.Option(None, help="all (every level that shows brain) or MNI mm ranges along the "
                               "plane's normal, e.g. -20:40."),
    field_strengths: str = typer.Option(None, help="Tesla, e.g. 1.5,3."),
    seed: int = typer.Option(0, help="Slice i uses noise seed seed + i; attributes are drawn from (seed, i)."),
    steps: int = typer.Option(D.STEPS, help="Denoising steps."),
    guidance: float = typer.Option(D.GUIDANCE, help="Classifier-free guidance scale."),
    sampler: str = typer.Option(D.SAMPLER, help="auto (the model's choice per contrast, else dpm), dpm, "
                                 "dpm-karras, dpm-sde, unipc, ddim or euler."),
    model: Path = typer.Option(None, help="Pipeline folder (default: the shipped model)."),
    lora: Path = typer.Option(None, help="LoRA adapter folder to apply."),
    lora_scale: float = typer.Option(1.0, help="LoRA strength."),
    batch_size: int = typer.Option(16, help="Slices denoised together, across prompts (1-64)."),
    precision: str = typer.Option("auto", help="bf16 (UNet and VAE under bfloat16 autocast), fp32, or auto: bf16 "
                                  "where the hardware has it natively (AVX-512 BF16, AMX, CUDA), else fp32."),
    nifti: bool = typer.Option(False, "--nifti", help="Also write each slice as NIfTI placed in MNI space."),
    judge: Path = typer.Option(None, help="Prepared data set to train the on-prompt judge on; records the "
                               "contrast and plane it reads in each slice."),
    judge_steps: int = typer.Option(600, help="Training steps of the judge."),
    reject_off_prompt: bool = typer.Option(False, "--reject-off-prompt", help="Leave slices the judge calls "
                                           "off-prompt out of metadata.parquet (listed in rejected.parquet)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar with ETA."),
) -> None:
    """A synthetic data set in the prepared-data format: 16-bit PNG slices, metadata.parquet, split, card."""
    from dallebrain.cli._common import fail, first_line
    from dallebrain.synthesize.mix import parse_mix
    from dallebrain.synthesize.options import SynthesisOptions

    explicit = {"ages": ages, "sexes": sexes, "contrasts": contrasts, "planes": planes, "levels": levels,
                "field_strengths": field_strengths}
    given = [f"--{k.replace('_', '-')}" for k, v in explicit.items() if v is not None]
    if like is not None and given:
        fail(f"give the attribute mix either as --like or as explicit options, not both ({', '.join(given)})")
    try:
        mix = None if like is not None else parse_mix(**{k: v for k, v in explicit.items() if v is not None})
        options = SynthesisOptions(
            n=n, out=out, mix=mix, like=like, seed=seed, steps=steps, guidance=guidance, sampler=sampler,
            model=model, lora=lora, lora_scale=lora_scale, batch_size=batch_size, precision=precision, nifti=nifti,
            judge=judge if judge is not None or not reject_off_prompt else like, judge_steps=judge_steps,
            reject_off_prompt=reject_off_prompt)
        from dallebrain.synthesize.run import synthesize

        result = synthesize(options, progress=progress)
    except (ValueError, FileExistsError, OSError) as exc:
        fail(first_line(exc))
    rate = f" ({result.slices_per_second:.2f} slices/s)" if result.generated else ""
    typer.echo(f"generated {result.generated} slice(s){rate}" + (" (resumed)" if result.resumed else ""))
    if result.merged:
        extra = f", {result.rejected} off-prompt in rejected.parquet" if options.reject_off_prompt else ""
        typer.echo(f"{result.kept} slices in {out / 'metadata.parquet'}{extra}; card: {out / 'README.md'}")
    else:
        typer.echo("other processes are still writing their batches: the last to finish writes metadata.parquet")


def evaluate_utility_cmd(
    real: Path = typer.Option(..., "--real", help="Prepared real data set: trains on its train split, tests on "
                              "its val and test splits."),
    synthetic: Path = typer.Option(..., "--synthetic", help="Synthetic data set (dallebrain synthesize)."),
    out: Path = typer.Option(..., "--out", help="Folder for utility.json, utility.md and utility.png."),
    scarce_subjects: int = typer.Option(10, help="Real train subjects of the scarce setting."),
    steps: int = typer.Option(1500, help="Optimiser steps per network."),
    repeats: int = typer.Option(1, help="Seeds per setting (mean and SD)."),
    max_slices: int = typer.Option(None, help="Cap on the slices of the real-only and synthetic-only settings."),
    test_slices: int = typer.Option(2000, help="Held-out real slices scored."),
    settings: str = typer.Option("real,synthetic,real+synthetic,scarce,scarce+synthetic",
                                 help="Which settings to train (comma-separated)."),
    on_prompt_only: bool = typer.Option(False, "--on-prompt-only", help="Only the synthetic slices the on-prompt "
                                        "judge passed (a data set made with synthesize --judge)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    overwrite: bool = typer.Option(False, help="Replace an earlier report in --out."),
) -> None:
    """Train on real, synthetic, both, and scarce real with and without synthetic; test all on held-out real
    slices (contrast, plane, sex, age, level); a table and a plot."""
    from dallebrain.cli._common import fail, first_line
    from dallebrain.synthesize.utility import UtilityOptions

    options = UtilityOptions(real=real, synthetic=synthetic, out=out, scarce_subjects=scarce_subjects, steps=steps,
                             repeats=repeats, max_slices=max_slices, test_slices=test_slices,
                             settings=tuple(s.strip() for s in settings.split(",") if s.strip()),
                             on_prompt_only=on_prompt_only, overwrite=overwrite)
    try:
        options.check()
        from dallebrain.synthesize.utility import run_utility
        from dallebrain.synthesize.utility_report import findings

        summary = run_utility(options, progress)
    except (ValueError, OSError) as exc:  # FileExistsError is an OSError
        fail(first_line(exc))
    for line in findings(summary):
        typer.echo(line)
    typer.echo(f"table: {out / 'utility.md'}, plot: {out / 'utility.png'}")
