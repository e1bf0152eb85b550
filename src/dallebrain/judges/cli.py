"""`dallebrain judge train | tissue`: the anatomy judges on their own. Heavy imports stay inside the commands
so `dallebrain --help` stays instant."""

from __future__ import annotations

from pathlib import Path

import typer

judge_app = typer.Typer(help="Judges that see anatomy: tissue fractions, age and level of a slice.",
                        no_args_is_help=True)


@judge_app.command("train")
def train_cmd(
    data: Path = typer.Option(..., "--data", help="Prepared data set with tissue labels (a simulated cohort)."),
    out: Path = typer.Option(..., "--out", help="Folder for model.safetensors (fp16) and config.json."),
    steps: int = typer.Option(900, help="Optimiser steps (about 1 s each on one CPU thread)."),
    batch: int = typer.Option(16, help="Crops per step."),
    crop: int = typer.Option(64, help="Crop size in pixels (a multiple of 8)."),
    max_slices: int = typer.Option(6000, help="Train-split slices held in memory, drawn at random."),
    seed: int = typer.Option(0),
    overwrite: bool = typer.Option(False, help="Replace a judge already in --out."),
) -> None:
    """Train the tissue segmenter (background, CSF, ventricles, GM, WM) on the train split's labelled slices."""
    from dallebrain.cli._common import fail, first_line
    from dallebrain.judges.train import TrainOptions, train

    try:
        record = train(TrainOptions(data, out, steps, batch, crop, lr=3e-3, max_slices=max_slices, seed=seed,
                                    overwrite=overwrite))
    except (ValueError, OSError) as exc:
        fail(first_line(exc))
    typer.echo(f"tissue judge in {out}: {record['steps']} steps on {record['slices']} slices, "
               f"final loss {record['final_loss']:.3f} ({record['seconds']:.0f} s)")


def _read_slice(path: Path):
    from PIL import UnidentifiedImageError

    from dallebrain.data.slicing import load_png

    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        image = load_png(path)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: not a readable image ({type(exc).__name__})") from None
    if image.ndim != 2:
        raise ValueError(f"{path}: not a grey-scale slice (shape {image.shape})")
    return image


@judge_app.command("tissue")
def tissue_cmd(
    images: list[Path] = typer.Argument(..., help="Slices as grey-scale PNG (8- or 16-bit), e.g. generate's output."),
    weights: Path = typer.Option(None, "--weights", help="A `judge train` folder (default: the shipped judge)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list instead of a table."),
) -> None:
    """Per slice, the CSF (outside the ventricles), ventricle, GM and WM fractions of the brain area."""
    import json

    from dallebrain.cli._common import fail, first_line
    from dallebrain.judges.tissue import FRACTIONS, load_tissue_judge

    try:
        judge = load_tissue_judge(weights)
        results = []
        for path in images:  # one at a time: slices may differ in size
            shares = judge.fractions(_read_slice(path)[None])
            results.append({"image": str(path), **{k: _number(v[0]) for k, v in shares.items()}})
    except (ValueError, OSError) as exc:
        fail(first_line(exc))
    if as_json:
        typer.echo(json.dumps(results, indent=1))
        return
    typer.echo("\t".join(["image", *FRACTIONS]))
    for r in results:
        typer.echo("\t".join([r["image"], *("-" if r[k] is None else f"{r[k]:.3f}" for k in FRACTIONS)]))


def _number(value) -> float | None:
    """JSON has no NaN: a slice with no brain gets null."""
    value = float(value)
    return None if value != value else round(value, 4)


@judge_app.command("fit-age")
def fit_age_cmd(
    data: Path = typer.Option(..., "--data", help="Prepared data set with ages (its train split is used)."),
    out: Path = typer.Option(..., "--out", help="Folder for age.json."),
    tissue: Path = typer.Option(None, "--tissue", help="The tissue judge to read slices with (default: shipped)."),
    max_slices: int = typer.Option(6000, help="Train-split slices to fit on, drawn at random."),
    seed: int = typer.Option(0),
    overwrite: bool = typer.Option(False, help="Replace an age judge already in --out."),
) -> None:
    """Fit the age judge: age from the tissue judge's fractions of a slice, its plane and its level."""
    from dallebrain.cli._common import fail, first_line
    from dallebrain.judges.age_fit import fit_age

    try:
        record = fit_age(data, out, tissue, max_slices, seed, overwrite)
    except (ValueError, OSError) as exc:
        fail(first_line(exc))
    typer.echo(f"age judge in {out}: {record['training']['slices']} slices, ridge alpha {record['alpha']}, "
               f"cross-validated MAE {record['cv_mae_by_alpha'][record['alpha']]:.1f} years")


@judge_app.command("age")
def age_cmd(
    images: list[Path] = typer.Argument(..., help="Slices as grey-scale PNG."),
    orientation: str = typer.Option(..., "--orientation", help="Plane of every slice: axial, coronal, sagittal."),
    slice_mm: float = typer.Option(..., "--slice-mm", help="MNI level of every slice (z, y or x in mm)."),
    weights: Path = typer.Option(None, "--weights", help="A `judge fit-age` folder (default: the shipped judge)."),
    tissue: Path = typer.Option(None, "--tissue", help="Its tissue judge folder (default: the shipped judge)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list instead of a table."),
) -> None:
    """Per slice, the age in years the anatomy suggests."""
    import json

    from dallebrain.cli._common import fail, first_line
    from dallebrain.judges.age import load_age_judge

    try:
        judge = load_age_judge(weights, tissue)
        results = [{"image": str(p), "age": _number(judge.predict(_read_slice(p)[None], orientation, slice_mm)[0])}
                   for p in images]
    except (ValueError, OSError) as exc:
        fail(first_line(exc))
    if as_json:
        typer.echo(json.dumps(results, indent=1))
        return
    for r in results:
        typer.echo(f"{r['image']}\t{'-' if r['age'] is None else format(r['age'], '.1f')}")


@judge_app.command("level")
def level_cmd(
    images: list[Path] = typer.Argument(..., help="Slices as grey-scale PNG."),
    orientation: str = typer.Option(..., "--orientation", help="Plane of every slice: axial, coronal, sagittal."),
    tissue: Path = typer.Option(None, "--tissue", help="A tissue judge folder (default: the shipped judge)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list instead of a table."),
) -> None:
    """Per slice, its MNI level in mm along the plane's axis (sagittal as |x|), read from its anatomy."""
    import json

    from dallebrain.cli._common import fail, first_line
    from dallebrain.judges.level import estimate_levels
    from dallebrain.judges.tissue import load_tissue_judge

    try:
        judge = load_tissue_judge(tissue)
        levels = [estimate_levels(_read_slice(p)[None], [orientation], judge)[0] for p in images]
    except (ValueError, OSError) as exc:
        fail(first_line(exc))
    results = [{"image": str(p), "level_mm": float(level)} for p, level in zip(images, levels, strict=True)]
    if as_json:
        typer.echo(json.dumps(results, indent=1))
        return
    for r in results:
        typer.echo(f"{r['image']}\t{r['level_mm']:+.1f}")
