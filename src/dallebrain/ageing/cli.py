"""The ageing commands, registered in dallebrain/cli/__init__.py: `dallebrain age INPUT --ages 30,50,70,90 --out
DIR` (the same brain at other ages) and `dallebrain evaluate-ageing`. Heavy imports stay inside the commands so
`dallebrain --help` stays instant."""

from __future__ import annotations

from pathlib import Path

import typer

from dallebrain.pipelines import defaults as D


def evaluate_ageing_cmd(
    data: Path = typer.Option(..., "--data", help="Prepared longitudinal data set (data simulate --timepoints, "
                              "then data prepare)."),
    out: Path = typer.Option(..., "--out", help="Report folder: ageing_report.json/.md, ageing_pairs.csv, "
                             "ageing_examples.png."),
    model: Path = typer.Option(None, "--model", help="Ageing network folder (default: the shipped one)."),
    split: str = typer.Option("test", "--split", help="Held-out people: test, val or val,test."),
    max_people: int = typer.Option(None, "--max-people", help="Only the first N held-out people (by id)."),
    slice_stride: int = typer.Option(1, "--slice-stride", help="Every k-th slice position of each plane."),
    ldm: Path = typer.Option(None, "--ldm", help="An LDM pipeline folder: adds sdedit (partial noising of the "
                             "baseline's latent, re-denoised under the follow-up's age)."),
    ldm_pairs: int = typer.Option(48, "--ldm-pairs", help="Pairs sdedit runs on (slow on a CPU)."),
    strength: float = typer.Option(0.3, "--strength", help="sdedit: fraction of the noise schedule, in (0, 1)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier report in --out."),
) -> None:
    """Predict held-out people's later sessions from their first: the ageing network beside the copy and
    cohort-mean baselines (and sdedit with --ldm); SSIM, PSNR, tissue-fraction errors, identity retrieval and
    monotone ventricle sequences against the issue's targets."""
    from dallebrain.cli._common import fail, first_line

    try:
        from dallebrain.ageing.evaluate import AgeingEvalOptions, evaluate_ageing

        splits = tuple(s.strip() for s in split.split(",") if s.strip())
        options = AgeingEvalOptions(data, out, model, splits, max_people, slice_stride, ldm, ldm_pairs, strength,
                                    overwrite=overwrite)
        report = evaluate_ageing(options, progress=True)
    except (ValueError, OSError) as exc:
        fail(first_line(exc))
    met = sum(t["met"] for t in report["targets"])
    typer.echo(f"report: {out / 'ageing_report.md'} ({met} of {len(report['targets'])} targets met, "
               f"{report['seconds']:.0f} s)")


def age_cmd(
    source: str = typer.Argument(..., metavar="INPUT",
                                 help="A prompt, or a slice file: PNG (with its generate sidecar or --from-age) or "
                                      "a single-slice NIfTI in MNI space (plane and level from its affine)."),
    ages: str = typer.Option(..., "--ages", help="Comma-separated ages in years, e.g. 30,50,70,90."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    from_age: float = typer.Option(None, "--from-age",
                                   help="Age of the source slice (default: the sidecar's or the prompt's age; a "
                                        "prompt naming none is generated at the first of --ages)."),
    seed: int = typer.Option(0, help="Seed of the generated source slice (prompt input)."),
    model: Path = typer.Option(None, "--model", help="LDM folder for a prompt (default: the shipped model)."),
    ageing_model: Path = typer.Option(None, "--ageing-model", help="Ageing network folder (default: shipped)."),
    steps: int = typer.Option(D.STEPS, help="Sampling steps of the source slice (prompt input)."),
    png16: bool = typer.Option(False, "--png16", help="16-bit PNGs."),
    overwrite: bool = typer.Option(False, help="Replace outputs already in --out."),
) -> None:
    """The same brain at other ages: one slice per age (PNG + NIfTI + JSON), a strip with the judged ventricle
    fraction under each frame, a GIF and ageing.json, from a prompt or from your own slice."""
    from dallebrain.cli._common import fail, first_line

    try:
        summary = run_age(source, ages, out, from_age, seed, model, ageing_model, steps, png16, overwrite)
    except (ValueError, FileExistsError, OSError) as exc:
        fail(first_line(exc))
    typer.echo(f"source: {summary['source'].get('source_image') or summary['source'].get('source_prompt')} "
               f"at {summary['source']['age']:g} y")
    typer.echo("age    ventricles  CSF    GM     WM   (fractions of the brain area, tissue judge)")
    for age, f in zip(summary["ages"], summary["tissue_fractions"], strict=True):
        typer.echo(f"{age:>5g}  {100 * f['ventricles']:6.1f} %  {100 * f['csf']:4.1f} % {100 * f['gm']:4.1f} % "
                   f"{100 * f['wm']:4.1f} %")
    typer.echo(f"{len(summary['ages'])} slices, {summary['strip']} and {summary['gif']} in {out}")


def run_age(source: str, ages: str, out: Path, from_age: float | None, seed: int = 0, model: Path | None = None,
            ageing_model: Path | None = None, steps: int = D.STEPS, png16: bool = False,
            overwrite: bool = False) -> dict:
    """Check everything cheap first (ages, output folder, input file), then load models and write."""
    from dallebrain.ageing import sequence
    from dallebrain.ageing.network import check_ages, load_ageing_net
    from dallebrain.ageing.predict import age_sequence
    from dallebrain.ageing.source import from_file, looks_like_file
    from dallebrain.pipelines.output import check_output_folder

    target_ages = sequence.parse_ages(ages)
    if from_age is not None:
        check_ages([from_age], "--from-age")
    stems = sequence.output_stems(target_ages)
    check_output_folder(out, stems, overwrite)
    if not overwrite:
        for name in (sequence.STRIP, sequence.GIF, sequence.SUMMARY):
            if (Path(out) / name).exists():
                raise FileExistsError(f"{Path(out) / name} exists: choose another --out or pass --overwrite")
    net = load_ageing_net(ageing_model)
    if looks_like_file(source):
        start = from_file(source, net.config.image_size, from_age)
    else:
        start = _from_prompt(source, target_ages, from_age, seed, model, steps, Path(out), overwrite)
    frames = age_sequence(net, start.image, start.age, target_ages)
    return sequence.write_sequence(Path(out), start, target_ages, frames, net.config.training, png16)


def _from_prompt(prompt: str, ages: list[float], from_age, seed, model, steps, out: Path, overwrite: bool):
    from dallebrain.ageing.network import check_ages
    from dallebrain.ageing.source import from_prompt
    from dallebrain.api import load_pipeline
    from dallebrain.data.prompts import parse_prompt
    from dallebrain.pipelines.prompt_check import require_servable

    require_servable(prompt)
    stated = parse_prompt(prompt).age
    age = from_age if from_age is not None else stated if stated is not None else ages[0]
    check_ages([age], "the source age")
    pipe = load_pipeline(model)
    return from_prompt(pipe, prompt, seed, float(age), out, model.name if model else None, overwrite, steps=steps)
