"""Slices to examine, read from PNG or NIfTI onto the model's slice grid, and maps written back onto theirs.

A NIfTI slice placed in MNI space is resampled through its affine onto the model's grid plane at its own level
(any pixel size, field of view or in-plane orientation); its maps go back the same way, so they overlay the
input in any viewer. A PNG (or a NIfTI with no position) is taken as a display-convention slice over the
model's field of view, as `prepare` and `generate` write them, and only resized.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dallebrain.anomaly.attributes import SliceAttributes, from_affine, from_prompt, from_sidecar
from dallebrain.data.grid import NORMAL_AXIS, VolumeGrid, slice_affine

# prepare's slice names: {subject}_{modality}_{orientation}_{level:+06.1f}mm.png
_PREPARED_NAME = re.compile(r"_(T1w|T2w|PDw|FLAIR)_(axial|coronal|sagittal)_([+-]\d+(?:\.\d+)?)mm$")


@dataclass
class SliceInput:
    """One slice on the model's grid, and how to put a map back on the input's own pixels."""

    name: str  # output file stem
    path: Path
    image: np.ndarray  # (S, S) float32 in [0, 1], display convention, on the model's grid plane
    attributes: SliceAttributes
    native_shape: tuple[int, int]
    native_affine: np.ndarray  # 4x4 of the input (a PNG gets the model-grid affine of its own size)
    resampled: bool  # True: model grid <-> input through the affines; False: a plain resize

    def to_native(self, model_map: np.ndarray, grid: VolumeGrid, order: int = 1) -> np.ndarray:
        """A map on the model's grid as a map on the input's pixels."""
        if not self.resampled:
            return _resize(model_map, self.native_shape, order)
        model_affine = _plane_affine(grid, self.attributes)
        return _resample(model_map, model_affine, self.native_affine, self.native_shape, order)


def stem_of(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".png"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _sidecar(path: Path) -> dict:
    side = path.with_name(stem_of(path) + ".json")
    if not side.is_file():
        return {}
    try:
        record = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{side.name}: not a JSON sidecar ({str(exc).splitlines()[0]})") from exc
    if not isinstance(record, dict):
        raise ValueError(f"{side.name}: a sidecar must hold a JSON object")
    return record


def _from_name(path: Path) -> SliceAttributes:
    m = _PREPARED_NAME.search(stem_of(path))
    return SliceAttributes(m.group(2), float(m.group(3)), m.group(1)) if m else SliceAttributes()


def _resize(image: np.ndarray, shape: tuple[int, int], order: int = 1) -> np.ndarray:
    if image.shape == tuple(shape):
        return image.astype(np.float32)
    from skimage.transform import resize

    return resize(image, shape, order=order, anti_aliasing=order > 0 and image.shape[0] > shape[0],
                  preserve_range=True).astype(np.float32)


def _plane_affine(grid: VolumeGrid, attributes: SliceAttributes) -> np.ndarray:
    axis = NORMAL_AXIS[attributes.orientation]
    return slice_affine(grid, attributes.orientation, (attributes.slice_mm - grid.origin_mm[axis]) / grid.spacing_mm)


def _resample(image: np.ndarray, source_affine: np.ndarray, target_affine: np.ndarray,
              target_shape: tuple[int, int], order: int = 1) -> np.ndarray:
    """Values of a 2-D image (pixels placed by source_affine) at the pixels of target_affine (in-plane)."""
    from scipy import ndimage

    rows, cols = np.indices(target_shape, dtype=np.float64)
    world = target_affine @ np.stack([rows.ravel(), cols.ravel(), np.zeros(rows.size), np.ones(rows.size)])
    source = np.linalg.inv(source_affine) @ world
    values = ndimage.map_coordinates(image.astype(np.float32), source[:2], order=order, mode="constant", cval=0.0)
    return values.reshape(target_shape).astype(np.float32)


def _read_pixels(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(2-D float32 in [0, 1], NIfTI affine or None), dimensions checked from the header first."""
    from dallebrain.api import check_slice_file, load_slice

    check_slice_file(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        from PIL import Image

        with Image.open(path) as im:
            size = (im.height, im.width)
        if size[0] != size[1]:
            raise ValueError(f"{path.name} is {size[1]} x {size[0]} pixels: a slice over the model's square field "
                             "of view is square")
        return load_slice(path, size[0]), None
    import nibabel as nib

    try:  # check_slice_file read the header only: a truncated file fails here, as EOFError (typer: "Aborted!")
        img = nib.load(path)
        shape = [int(s) for s in img.shape]
        if len(shape) < 3 or any(s != 1 for s in shape[2:]):
            raise ValueError(f"{path.name}: a single-slice NIfTI is (rows, columns, 1), got {tuple(shape)}")
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape[:2])
    except ValueError:
        raise
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"cannot read NIfTI {path.name}: {reason}") from None
    positive = data[data > 0]
    if not np.isfinite(data).all() or positive.size == 0:
        raise ValueError(f"{path.name} has no usable signal (empty or NaN)")
    return np.clip(data / np.percentile(positive, 99.5), 0, 1).astype(np.float32), img.affine


def read_slice(path: str | Path, grid: VolumeGrid, prompt: str | None = None) -> SliceInput:
    """A slice on the model's grid with its attributes (sidecar, then affine, then prepare's file name, then
    `prompt`); ValueError in one line when it cannot be read or placed."""
    path = Path(path)
    pixels, affine = _read_pixels(path)
    attributes = from_sidecar(_sidecar(path))
    if affine is not None:
        attributes = attributes.merged(from_affine(affine))
    attributes = attributes.merged(_from_name(path)).merged(from_prompt(prompt)).check(path.name)
    size = grid.shape[0]
    placed = affine is not None and from_affine(affine).orientation is not None
    if placed:
        image = _resample(pixels, affine, _plane_affine(grid, attributes), (size, size))
        native_affine = affine
    else:
        image = _resize(pixels, (size, size))
        native_affine = affine if affine is not None else _plane_affine(_grid_of_size(grid, pixels.shape[0]),
                                                                         attributes)
    return SliceInput(stem_of(path), path, np.clip(image, 0, 1), attributes, pixels.shape, native_affine, placed)


def _grid_of_size(grid: VolumeGrid, size: int) -> VolumeGrid:
    """The model grid's field of view sampled with `size` pixels a side (a PNG of another size)."""
    spacing = grid.spacing_mm * grid.shape[0] / size
    centre = np.array(grid.origin_mm) + grid.spacing_mm * np.array(grid.shape) / 2
    return VolumeGrid((size, size, size), spacing, tuple(float(c) for c in centre - spacing * size / 2))
