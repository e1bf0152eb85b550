"""`dallebrain data simulate | prepare | demo`: the built-in cohort and prepared data sets."""

from __future__ import annotations

from pathlib import Path

import typer

from dallebrain.cli._common import fail, first_line, workers_or_default

data_app = typer.Typer(help="Simulate and prepare training data.", no_args_is_help=True)


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
    if seed < 0:
        fail(f"--seed must be 0 or more, got {seed}")
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
        table = simulate_cohort(out, options, workers_or_default(workers))
    except ValueError as exc:
        fail(first_line(exc))
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
    if seed < 0:  # numpy refuses it, but only after every subject is prepared
        fail(f"--seed must be 0 or more, got {seed}")
    if out.exists() and not out.is_dir():
        fail(f"--out exists and is not a folder: {out}")
    max_voxels = MAX_VOXELS if max_voxels is None else max_voxels
    if max_voxels < MIN_VOXELS**3:
        fail(f"--max-voxels must be at least {MIN_VOXELS**3} (the smallest head volume), got {max_voxels}")
    options = PrepareOptions(source, input, out, demographics, size, slice_step_mm, min_brain,
                             seed=seed, captions_per_slice=captions_per_slice, workers=workers_or_default(workers),
                             max_voxels=max_voxels)
    try:
        result = prepare(options)
    except (ValueError, RuntimeError, OSError) as exc:  # OSError: an --out that cannot be written
        fail(first_line(exc))
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
    """Try the data chain in a few minutes: simulate a small healthy cohort into OUT/cohort, prepare it into
    OUT/prepared (slices, metadata.parquet, captions) and print its dataset card. A rerun finishes the folder."""
    from dallebrain.data.prepare import PrepareOptions, prepare
    from dallebrain.data.simulate import SimulationOptions, simulate_cohort

    if subjects < 1 or subjects > 1000:
        fail(f"--subjects must be between 1 and 1000 for a demo, got {subjects}")
    if out.exists() and not out.is_dir():
        fail(f"--out exists and is not a folder: {out}")
    n_workers = workers_or_default(workers)
    try:
        simulate_cohort(out / "cohort", SimulationOptions(subjects), n_workers)
        prepare(PrepareOptions("simulated", out / "cohort", out / "prepared", workers=n_workers))
    except (ValueError, RuntimeError, OSError) as exc:
        fail(first_line(exc))
    typer.echo((out / "prepared" / "README.md").read_text())
