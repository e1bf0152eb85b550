"""The ageing commands, registered in dallebrain/cli/__init__.py. Heavy imports stay inside the commands so
`dallebrain --help` stays instant."""

from __future__ import annotations

from pathlib import Path

import typer


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
    from dallebrain.cli._common import fail

    try:
        from dallebrain.ageing.evaluate import AgeingEvalOptions, evaluate_ageing

        splits = tuple(s.strip() for s in split.split(",") if s.strip())
        options = AgeingEvalOptions(data, out, model, splits, max_people, slice_stride, ldm, ldm_pairs, strength,
                                    overwrite=overwrite)
        report = evaluate_ageing(options, progress=True)
    except (ValueError, OSError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    met = sum(t["met"] for t in report["targets"])
    typer.echo(f"report: {out / 'ageing_report.md'} ({met} of {len(report['targets'])} targets met, "
               f"{report['seconds']:.0f} s)")
