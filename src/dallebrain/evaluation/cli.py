"""`dallebrain evaluate`: registered in dallebrain/cli.py as `app.command("evaluate")(evaluate_cmd)`."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from dallebrain.pipelines import defaults as D
from dallebrain.vocab import SAMPLER_CHOICES, SAMPLERS


def evaluate_cmd(
    model: Path = typer.Option(None, "--model", help="Pipeline folder (clip/ in it adds the Brain-CLIP metrics; "
                               "default: the shipped model)."),
    data: Path = typer.Option(..., "--data", help="Prepared data set (dallebrain data prepare)."),
    split: str = typer.Option("test", help="Held-out split of real slices: test or val."),
    n: int = typer.Option(64, "--n", help="Held-out real slices, and synthetic slices per route (at least 2)."),
    route: str = typer.Option("ldm", help="ldm, unclip or both (side by side)."),
    steps: int = typer.Option(D.STEPS, help="Denoising steps."),
    guidance: float = typer.Option(D.GUIDANCE, help="Classifier-free guidance scale."),
    sampler: str = typer.Option(D.SAMPLER, help="As generate's --sampler: auto (the model's choice per contrast), "
                                f"{', '.join(SAMPLERS)}."),
    prior_guidance: float = typer.Option(D.PRIOR_GUIDANCE, help="unCLIP route: guidance scale of the prior (as "
                                         "generate's --prior-guidance)."),
    seed: int = typer.Option(0, help="Seed of synthetic slice 0; slice i uses seed + i (as generate does)."),
    draws: int = typer.Option(1, "--draws", help="Synthetic draws per route (1-8; from 2, each distance also as "
                              "its range over draws, draw j's slice i with seed + j * 1,000,000 + i; costs draws x "
                              "the sampling time)."),
    encoder_steps: int = typer.Option(600, help="Training steps of the evaluation's own encoder (cached)."),
    out: Path = typer.Option(..., "--out", help="Report folder: report.html, metrics.json, summary.md."),
    cache: Path = typer.Option(None, "--cache", help="Folder kept between runs: the evaluation encoder and the train "
                               "split's features, reused when the data set and settings match (default: --out; "
                               "one folder can serve runs of several models on one data set)."),
    tissue_judge: Path = typer.Option(None, "--tissue-judge", help="Tissue judge folder (dallebrain judge train; "
                                      "default: the installed one, skipped with a note when there is none)."),
    age_judge: Path = typer.Option(None, "--age-judge", help="Age judge folder (dallebrain judge fit-age, fitted on "
                                   "that tissue judge; default: the installed one)."),
) -> None:
    """Evaluate synthetic slices against held-out real ones: realism, grey levels, texture, diversity, prompt
    adherence, anatomy (tissue and age judges, head size by sex), latent space and privacy, each beside the
    real-vs-real floor; writes a self-contained HTML report."""
    from dallebrain.api import default_model
    from dallebrain.cli._common import fail, first_line
    from dallebrain.evaluation.features import EncoderConfig
    from dallebrain.evaluation.options import MAX_DRAWS, EvaluationOptions, check_inputs

    model = model or default_model()
    try:
        check_inputs(model, data, split, n, route)
    except ValueError as exc:
        fail(first_line(exc))
    if steps < 1 or steps > 1000:
        fail(f"--steps must be between 1 and 1000, got {steps}")
    if not 0 <= guidance < math.inf:  # also NaN
        fail(f"--guidance must be a non-negative number, got {guidance}")
    if not 0 <= prior_guidance < math.inf:
        fail(f"--prior-guidance must be a non-negative number, got {prior_guidance}")
    if sampler not in SAMPLER_CHOICES:
        fail(f"--sampler takes one of {', '.join(SAMPLER_CHOICES)}, got {sampler!r}")
    if not 1 <= draws <= MAX_DRAWS:
        fail(f"--draws must be between 1 and {MAX_DRAWS}, got {draws}")
    if encoder_steps < 1:
        fail(f"--encoder-steps must be at least 1, got {encoder_steps}")
    if out.exists() and not out.is_dir():
        fail(f"--out exists and is not a folder: {out}")
    if cache is not None and cache.exists() and not cache.is_dir():
        fail(f"--cache exists and is not a folder: {cache}")
    from dallebrain.evaluation.run import evaluate

    options = EvaluationOptions(model=model, data=data, out=out, split=split, n=n, route=route, steps=steps,
                                guidance=guidance, sampler=sampler, seed=seed,
                                encoder=EncoderConfig(steps=encoder_steps), tissue_judge=tissue_judge,
                                age_judge=age_judge, draws=draws, cache=cache, prior_guidance=prior_guidance)
    try:
        metrics = evaluate(options)
    except (ValueError, OSError) as exc:
        fail(first_line(exc))
    for w in metrics.get("warnings", []):
        typer.echo(f"warning: {w}", err=True)
    targets = metrics.get("issue_targets", [])
    met = sum(t["met"] is True for t in targets)
    typer.echo(f"report: {out / 'report.html'} (metrics.json, summary.md) in {metrics['timing']['total_s']:.0f} s; "
               f"{met} of {len(targets)} targets of issues 11 and 12 met (summary.md lists them)")
