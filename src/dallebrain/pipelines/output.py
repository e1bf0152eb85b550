"""What `generate` writes per image: PNG (8-bit to view, 16-bit on request), NIfTI placed in MNI space from
the prompt's orientation and level, and a JSON sidecar saying how it was made and what the prompt left
unsaid. Files are written to temporary names and renamed; existing files are never overwritten silently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dallebrain.data.grid import NORMAL_AXIS, VolumeGrid, grid_in_info, prepared_grid, slice_affine
from dallebrain.data.io import atomic_path
from dallebrain.data.prompts import parse_prompt
from dallebrain.pipelines.prompt_check import check_prompt
from dallebrain.vocab import VARIATION_PREFIX


def image_stems(seeds: list[int], prefix: str = "seed") -> list[str]:
    """File names (without suffix) of a request's images: `{prefix}-{seed:06d}`."""
    return [f"{prefix}-{s:06d}" for s in seeds]


def result_prefix(settings: dict) -> str:
    return VARIATION_PREFIX if settings.get("mode") == "variations" else "seed"


def write_result(result, out: str | Path, first_seed: int, n_total: int, png16: bool = False,
                 placement_prompt: str | None = None, model: str | None = None,
                 extra: dict | None = None) -> list[dict]:
    """Write one GenerationResult (a whole request or one pass of it) as PNG + NIfTI + JSON per image; the
    sidecar says how the image was made. `model` overrides the recorded model folder (a server shows names)."""
    from dallebrain._version import __version__

    grid = grid_of(result.provenance.get("info", {}), result.images.shape[-1])
    prefix = result_prefix(result.settings)
    prompt = result.settings.get("prompt", "") if placement_prompt is None else placement_prompt
    warnings = list(dict.fromkeys([*result.warnings, *prompt_warnings(prompt)]))
    written = []
    own = result.per_image or [{}] * len(result.seeds)
    for image, image_seed, record in zip(result.images, result.seeds, own, strict=True):
        sidecar = {**result.settings, **(extra or {}), **record, "seed": image_seed, "index": image_seed - first_seed,
                   "n": n_total, "lora": result.provenance.get("lora"),
                   "model": model or result.provenance.get("model"), "dallebrain_version": __version__,
                   "warnings": warnings, "synthetic": True, "note": "synthetic image; not from any real person"}
        written.append(save_outputs(out, image_stems([image_seed], prefix)[0], image, sidecar, grid, prompt, png16,
                                    overwrite=True))
    return written


def prompt_warnings(prompt: str) -> list[str]:
    """What of the prompt the model did not follow (pipelines.prompt_check), for the sidecar; a prompt the
    generate entry points refuse, handed to a pipeline directly, is recorded here instead of passing silently."""
    check = check_prompt(prompt)
    return [check.refusal, *check.warnings] if check.refusal else check.warnings


def grid_of(info: dict, image_size: int) -> VolumeGrid:
    """The model's grid (`grid_in_info`), else the default grid of prepared sets at that image size."""
    return grid_in_info(info, image_size) or prepared_grid(image_size)


def placement(prompt: str, grid: VolumeGrid, image: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """NIfTI affine of a generated slice and a record of where it was put and why. A prompt that names a plane
    but no level gets the level the level judge reads from the image (judges/level.py), recorded as estimated."""
    fields = parse_prompt(prompt)
    record = {"parsed_prompt": {k: v for k, v in vars(fields).items()}, "unspecified_in_prompt": fields.missing()}
    if fields.orientation is not None and fields.slice_mm is None and image is not None:
        from dallebrain.judges.level import estimate_levels

        level = float(estimate_levels(image[None], [fields.orientation])[0])
        axis = NORMAL_AXIS[fields.orientation]
        side = " (|x|: a sagittal slice does not show its hemisphere)" if fields.orientation == "sagittal" else ""
        record["placement"] = (f"MNI152, {fields.orientation} plane at {level:+.1f} mm, estimated from the image by "
                               f"the level judge{side}: the prompt names no level")
        record["level_estimated_mm"] = level
        return slice_affine(grid, fields.orientation, (level - grid.origin_mm[axis]) / grid.spacing_mm), record
    if fields.orientation is None or fields.slice_mm is None:
        # Pixel spacing is known, the position is not: no MNI placement is invented.
        affine = np.diag([grid.spacing_mm, grid.spacing_mm, grid.spacing_mm, 1.0])
        record["placement"] = "unknown: the prompt gives no orientation and level; affine has spacing only"
        return affine, record
    axis = NORMAL_AXIS[fields.orientation]
    index = (fields.slice_mm - grid.origin_mm[axis]) / grid.spacing_mm
    record["placement"] = f"MNI152, {fields.orientation} plane at {fields.slice_mm:+.1f} mm"
    return slice_affine(grid, fields.orientation, index), record


def output_paths(out_dir: Path, stem: str) -> dict[str, Path]:
    return {"png": out_dir / f"{stem}.png", "nifti": out_dir / f"{stem}.nii.gz", "json": out_dir / f"{stem}.json"}


def check_output_folder(out_dir: str | Path, stems: list[str], overwrite: bool = False) -> Path:
    """Refuse an output folder that cannot take these images before any model is loaded or image generated, so a
    bad --out costs nothing and nothing already written is replaced. Creates nothing."""
    import os

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output folder {out_dir} exists and is not a folder")
    existing = next(p for p in [out_dir, *out_dir.absolute().parents] if p.exists())  # "/" at the latest
    if not existing.is_dir():
        raise ValueError(f"cannot make output folder {out_dir}: {existing} is not a folder")
    # os.access says yes to root for every folder; a write that still fails is an OSError caught per file later
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"output folder {out_dir} is not writable ({existing})")
    if not overwrite and out_dir.is_dir():
        for stem in stems:
            for path in output_paths(out_dir, stem).values():
                if path.exists():
                    raise FileExistsError(f"{path} exists: choose another --out or pass --overwrite")
    return out_dir


def save_outputs(out_dir: str | Path, stem: str, image: np.ndarray, sidecar: dict, grid: VolumeGrid,
                 prompt_for_placement: str | None = None, png16: bool = False, overwrite: bool = False) -> dict:
    """Write one image's PNG, NIfTI and JSON; returns their paths."""
    import nibabel as nib
    from PIL import Image

    out_dir = Path(out_dir)
    paths = output_paths(out_dir, stem)
    if not overwrite:
        existing = [p for p in paths.values() if p.exists()]
        if existing:
            raise FileExistsError(f"{existing[0]} exists: choose another --out or pass --overwrite")
    image = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    affine, where = placement(prompt_for_placement or sidecar.get("prompt", ""), grid, image)
    with atomic_path(paths["png"]) as tmp:
        data = np.round(image * (65535 if png16 else 255)).astype(np.uint16 if png16 else np.uint8)
        Image.fromarray(data).save(tmp, format="PNG")
    img = nib.Nifti1Image(image[:, :, None], affine)
    # NIfTI's own word for where the slice is: 4 (MNI152) when the prompt placed it, else 0 (unknown: only the
    # pixel spacing is meaningful), never nibabel's default 2 ("aligned to something").
    code = 4 if where["placement"].startswith("MNI152") else 0
    img.set_sform(affine, code=code)
    img.set_qform(affine, code=code)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"dallebrain synthetic slice"
    with atomic_path(paths["nifti"]) as tmp:
        # gzip with no name and mtime 0 in its header, so the same seed gives the same bytes
        import gzip

        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
            gz.write(img.to_bytes())
    full = {**sidecar, **where, "files": {k: p.name for k, p in paths.items()},
            "nifti_affine": affine.round(6).tolist(), "pixel_spacing_mm": grid.spacing_mm}
    with atomic_path(paths["json"]) as tmp:
        tmp.write_text(json.dumps(full, indent=2, default=str) + "\n")
    return paths
