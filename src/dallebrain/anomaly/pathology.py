"""Slices with a lesion and its exact mask, from a prompt with a pathology marker: paired data for training
segmentation networks.

The healthy model draws the slice the prompt describes without its lesion clause; the lesion is then rendered
into it with the simulator's appearance model (`paste.py`: relaxation-based contrast over the slice's own white
matter) at the stated place (a lobe or arterial territory of the lesion atlas, on the stated side) and size.
The mask is exact because it is what was drawn. When the prompt gives no level, one is chosen where the stated
region is large in the slice; the JSON sidecar says so.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from dallebrain.anomaly.attributes import SliceAttributes, from_prompt
from dallebrain.anomaly.lesion_prompts import LesionRequest, find_lesion, healthy_text
from dallebrain.anomaly.paste import LesionSpec, paste_lesion, slice_maps
from dallebrain.data.grid import NORMAL_AXIS, VolumeGrid, extract_slice
from dallebrain.data.lesion_atlas import LOBES, TERRITORIES, lesion_atlas

CORE_LABELS = {"tumour": (4, 5), "infarct": (3,), "ms": (2,), "wmh": (1,)}  # oedema is around a tumour, not it
LESION_STREAM = 15  # the lesion's random numbers: [seed, LESION_STREAM], apart from the image's noise


@dataclass
class PathologySlice:
    image: np.ndarray  # (S, S) float32 in [0, 1]
    mask: np.ndarray  # (S, S) uint8, data.lesions.MASK_LABELS values
    seed: int
    record: dict  # what was asked, where it was put, what was measured on the mask


def region_map(request: LesionRequest, grid: VolumeGrid, orientation: str, index: int) -> np.ndarray | None:
    """Where the lesion's centre may go in this slice: the stated lobe or territory on the stated side."""
    if request.region is None and request.side is None:
        return None
    atlas = lesion_atlas(grid)
    if request.region in TERRITORIES:
        where = atlas.territory == TERRITORIES.index(request.region) + 1
    elif request.region in LOBES:
        where = atlas.lobe == LOBES.index(request.region) + 1
    else:
        where = atlas.brain
    if request.side is not None:
        where = where & (atlas.left if request.side == "left" else ~atlas.left)
    return extract_slice(where, orientation, index)


def _level_candidates(request: LesionRequest, grid: VolumeGrid, orientation: str) -> list[tuple[int, float]]:
    from dallebrain.data.slicing import slice_positions

    out = []
    for index in slice_positions(grid, orientation, 3.0):
        region = region_map(request, grid, orientation, index)
        maps = slice_maps(grid, orientation, index)
        if region is None:  # white-matter lesions without a place: where the lateral ventricles are
            region = maps.ventricles if request.kind in ("wmh", "ms") else maps.wm > 0.5
        out.append((index, float((region & (maps.gm + maps.wm > 0.5)).sum())))
    return out


def choose_level(request: LesionRequest, grid: VolumeGrid, orientation: str, rng: np.random.Generator) -> float:
    """A level (mm) where the lesion's region is at least 60 % as large as at its largest."""
    candidates = _level_candidates(request, grid, orientation)
    top = max(area for _, area in candidates)
    if top == 0:
        raise ValueError(f"the {request.describe()} has no place in a {orientation} slice")
    good = [i for i, area in candidates if area >= 0.6 * top]
    return grid.level_mm(orientation, int(good[int(rng.integers(len(good)))]))


def judge(mask: np.ndarray, request: LesionRequest, region: np.ndarray | None, spacing_mm: float) -> dict:
    """The lesion as its mask shows it: core area and equivalent diameter, and the share of it in the region."""
    core = np.isin(mask, CORE_LABELS[request.kind])
    area = float(core.sum()) * spacing_mm ** 2
    return {"core_area_mm2": area, "core_diameter_mm": 2 * float(np.sqrt(area / np.pi)),
            "in_region": None if region is None or not core.any() else float((core & region).sum() / core.sum()),
            "lesion_area_mm2": float((mask > 0).sum()) * spacing_mm ** 2}


def plan(prompt: str, grid: VolumeGrid, seed: int) -> tuple[LesionRequest, SliceAttributes, list[str]]:
    """(lesion request, the healthy slice's attributes, notes on what was chosen); ValueError in one line for
    a prompt that names no lesion, no contrast, or a place that cannot hold it."""
    request = find_lesion(prompt)
    if request is None:
        raise ValueError("the prompt names no lesion (e.g. 'with a 30 mm tumour in the right temporal lobe'): use "
                         "'dallebrain generate' for healthy slices")
    attributes = from_prompt(healthy_text(prompt, request))
    if attributes.modality is None:
        raise ValueError("name the contrast (T1w, T2w, PDw or FLAIR): a lesion looks different in each")
    notes = []
    if attributes.orientation is None:
        attributes = replace(attributes, orientation="axial")
        notes.append("orientation: axial (the prompt gave none)")
    if attributes.slice_mm is None:
        level = choose_level(request, grid, attributes.orientation, np.random.default_rng([seed, LESION_STREAM]))
        attributes = replace(attributes, slice_mm=level)
        notes.append(f"level: {level:+.1f} mm, where the lesion's region is large (the prompt gave none)")
    attributes.check("prompt")
    return request, attributes, notes


def draw_lesions(images: np.ndarray, seeds: list[int], request: LesionRequest, attributes: SliceAttributes,
                 grid: VolumeGrid) -> list[PathologySlice]:
    """The lesion drawn into each healthy slice; ValueError when one of them has no room for it."""
    orientation = attributes.orientation
    index = int(round((attributes.slice_mm - grid.origin_mm[NORMAL_AXIS[orientation]]) / grid.spacing_mm))
    region = region_map(request, grid, orientation, index)
    out = []
    for image, seed in zip(images, seeds, strict=True):
        if request.kind == "wmh" and request.fazekas == 0:  # Fazekas 0: no hyperintensity to draw
            lesioned, mask = image.astype(np.float32), np.zeros(image.shape, np.uint8)
        else:
            spec = LesionSpec(request.kind, request.size_mm, region, request.fazekas, request.count)
            lesioned, mask = paste_lesion(image, spec, attributes.modality, grid, orientation, index,
                                          np.random.default_rng([seed, LESION_STREAM]), attributes.field_strength)
            if not mask.any():
                raise ValueError(f"no room for the {request.describe()} in the {orientation} slice at "
                                 f"{attributes.slice_mm:+.1f} mm: give another level or a smaller size")
        out.append(PathologySlice(lesioned, mask, seed, {"requested": vars(request) | {"described":
                                  request.describe()}, "measured": judge(mask, request, region, grid.spacing_mm)}))
    return out


def generate_with_lesion(pipe, prompt: str, n: int = 1, seed: int = 0, steps: int | None = None,
                         guidance: float | None = None, sampler: str | None = None
                         ) -> tuple[list[PathologySlice], SliceAttributes, list[str]]:
    """n slices with the prompt's lesion and their masks (image i from seed + i, as `generate` does)."""
    from dallebrain.pipelines import defaults as D
    from dallebrain.pipelines.output import grid_of

    size = int(pipe.unet.config.sample_size) * 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    grid = grid_of(pipe.info, size)
    request, attributes, notes = plan(prompt, grid, seed)
    result = pipe(attributes.healthy_prompt(), n=n, seed=seed, steps=D.STEPS if steps is None else steps,
                  guidance=D.GUIDANCE if guidance is None else guidance, sampler=sampler or D.SAMPLER)
    slices = draw_lesions(result.images, result.seeds, request, attributes, grid)
    for item in slices:
        item.record |= {"prompt": prompt, "healthy_prompt": attributes.healthy_prompt(), "choices": notes,
                        **result.settings, "prompt_used_for_the_healthy_slice": result.settings["prompt"]}
    return slices, attributes, notes


MASK_SUFFIXES = ("_lesion_mask.png", "_lesion_mask.nii.gz")


def lesions_to_folder(pipe, prompt: str, out, n: int = 1, seed: int = 0, steps: int | None = None,
                      guidance: float | None = None, overwrite: bool = False, model_path: str | None = None
                      ) -> list[dict]:
    """Write each slice (PNG, NIfTI, JSON, as `generate` does) and its lesion mask (PNG and NIfTI on the same
    affine); the output folder and every file name are checked before anything is drawn."""
    from pathlib import Path

    import nibabel as nib
    from PIL import Image

    from dallebrain._version import __version__
    from dallebrain.api import check_output
    from dallebrain.data.io import atomic_path, save_nifti_atomic
    from dallebrain.pipelines.output import grid_of, placement, save_outputs

    out = Path(out)
    stems = check_output(out, seed, n, overwrite)
    if not overwrite:
        taken = [out / f"{s}{x}" for s in stems for x in MASK_SUFFIXES if (out / f"{s}{x}").exists()]
        if taken:
            raise FileExistsError(f"{taken[0]} exists: choose another --out or pass --overwrite")
    slices, attributes, _ = generate_with_lesion(pipe, prompt, n, seed, steps, guidance)
    grid = grid_of(pipe.info, slices[0].image.shape[-1])
    affine, _ = placement(attributes.healthy_prompt(), grid)
    written = []
    for stem, item in zip(stems, slices, strict=True):
        sidecar = {**item.record, "seed": item.seed, "model": model_path or str(pipe.folder), "synthetic": True,
                   "dallebrain_version": __version__, "lesion_mask": {"files": [stem + x for x in MASK_SUFFIXES],
                   "labels": "data.lesions.MASK_LABELS (1 wmh, 2 ms, 3 infarct, 4 tumour, 5 necrosis, 6 oedema)"},
                   "note": "synthetic image: a healthy generated slice with a lesion rendered into it"}
        paths = save_outputs(out, stem, item.image, sidecar, grid, attributes.healthy_prompt(), overwrite=True)
        with atomic_path(out / f"{stem}{MASK_SUFFIXES[0]}") as tmp:
            Image.fromarray(item.mask).save(tmp, format="PNG")
        save_nifti_atomic(nib.Nifti1Image(item.mask[:, :, None], affine), out / f"{stem}{MASK_SUFFIXES[1]}")
        written.append({**paths, "mask_png": out / f"{stem}{MASK_SUFFIXES[0]}",
                        "mask_nifti": out / f"{stem}{MASK_SUFFIXES[1]}"})
    return written
