"""Generate and write the batches of a synthetic data set. A batch's part file (parts/batch-NNNNNNN.parquet) is
written after its slices, so it marks the batch done: a killed run redoes only batches without one, and a
batch redone writes the same bytes again."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from dallebrain.data.grid import NORMAL_AXIS, VolumeGrid, slice_affine
from dallebrain.data.io import atomic_path
from dallebrain.synthesize.options import SynthesisOptions
from dallebrain.synthesize.plan import PlannedSlice, plan_slice


def part_path(out: Path, batch: int) -> Path:
    return Path(out) / "parts" / f"batch-{batch:07d}.parquet"


def remove_own_temp_files(paths: list[Path]) -> None:
    """Half-written files a killed run left for these outputs (data.io.atomic_path names: .tmp-XXXXXXXX-NAME).
    Only these names are touched: other processes may be writing other batches into the same folders."""
    by_folder: dict[Path, set[str]] = {}
    for path in paths:
        by_folder.setdefault(path.parent, set()).add(path.name)
    for folder, names in by_folder.items():
        for tmp in folder.glob(".tmp-*") if folder.is_dir() else ():
            if tmp.name[14:] in names and tmp.is_file():
                tmp.unlink(missing_ok=True)


def generate_images(pipe, planned: list[PlannedSlice], options: SynthesisOptions) -> np.ndarray:
    """(B, H, W) float32 in [0, 1]: the batch's prompts denoised together, each from its own seed."""
    pipe.images_per_pass = options.batch_size  # one pass per batch: the batch is the unit of throughput and bytes
    pipe.precision = options.precision  # the pipeline's own rule: UNet and VAE decoder only, text encoder in fp32
    images = pipe.sample([p.prompt for p in planned], [p.seed for p in planned], steps=options.steps,
                         guidance=options.guidance, sampler=options.sampler, batch_size=options.batch_size)
    return np.clip(np.asarray(images, dtype=np.float32), 0, 1)


def save_png16(path: Path, image: np.ndarray) -> None:
    from dallebrain.data.slicing import save_png16 as save

    save(image, path)


def save_slice_nifti(path: Path, image: np.ndarray, grid: VolumeGrid, planned: PlannedSlice) -> None:
    """A one-slice NIfTI at the slice's place in MNI space (the affine `data.grid.slice_affine` gives)."""
    import nibabel as nib

    f = planned.facts
    index = (f.slice_mm - grid.origin_mm[NORMAL_AXIS[f.orientation]]) / grid.spacing_mm
    img = nib.Nifti1Image(image[:, :, None].astype(np.float32), slice_affine(grid, f.orientation, index))
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"dallebrain synthetic slice"
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        # no file name and mtime 0 in the gzip header: the same slice gives the same bytes
        with gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
            gz.write(img.to_bytes())


def make_batch(ctx, batch: int, indices: range) -> None:
    """Plan, generate, judge and write one batch; its part file last."""
    import pyarrow.parquet as pq

    from dallebrain.synthesize.table import rows_to_table, slice_row

    options: SynthesisOptions = ctx.options
    out = Path(options.out)
    planned = [plan_slice(ctx.sampler, options.seed, i) for i in indices]
    suffixes = (".png", ".nii.gz") if options.nifti else (".png",)
    remove_own_temp_files([out / p.path(s) for p in planned for s in suffixes] + [part_path(out, batch)])
    images = generate_images(ctx.pipe, planned, options)
    verdicts = ctx.judge.verdicts(images, planned) if ctx.judge is not None else [None] * len(planned)
    for p, image in zip(planned, images, strict=True):
        save_png16(out / p.path(".png"), image)
        if options.nifti:
            save_slice_nifti(out / p.path(".nii.gz"), image, ctx.grid, p)
    table = rows_to_table([slice_row(p, im, ctx.model_hash, options.nifti, v)
                           for p, im, v in zip(planned, images, verdicts, strict=True)])
    with atomic_path(part_path(out, batch)) as tmp:
        pq.write_table(table, tmp)
