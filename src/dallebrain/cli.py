"""The `dallebrain` command. Heavy imports live inside the commands so `--help` is instant."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from dallebrain._env import configure_offline

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
) -> None:
    """Simulate a healthy cohort from the MNI152 template: ages 18-90, both sexes, 1.5 T and 3 T."""
    from dallebrain.data.simulate import SimulationOptions, parse_contrasts, simulate_cohort

    if subjects < 1 or subjects > 100_000:
        fail(f"--subjects must be between 1 and 100000, got {subjects}")
    try:
        chosen = parse_contrasts(contrasts)
    except ValueError as exc:
        fail(str(exc))
    if out.exists() and not out.is_dir():
        fail(f"--out exists and is not a folder: {out}")
    table = simulate_cohort(out, SimulationOptions(subjects, seed, chosen), _workers(workers))
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
) -> None:
    """Register, normalise, slice and caption a cohort into metadata.parquet + PNG slices."""
    from dallebrain.data.prepare import SOURCES, PrepareOptions, prepare

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
    options = PrepareOptions(source, input, out, demographics, size, slice_step_mm, min_brain,
                             seed=seed, captions_per_slice=captions_per_slice, workers=_workers(workers))
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
