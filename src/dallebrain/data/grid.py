"""Fixed sampling grids in MNI152 space, and how a 2-D slice maps to the world.

Slices are shown in the radiological convention radiologists read: the subject's right on the image's
left; axial and coronal images have anterior / superior at the top, sagittal images face left (anterior
on the left). The 4x4 `slice_affine` records this exactly, so a NIfTI written from a slice lands where it
came from in MNI space whatever viewer opens it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dallebrain.vocab import BRAIN_CENTRE_MNI, FIELD_OF_VIEW_MM  # noqa: F401 (anatomy.py reads the centre here)

# Axis of the slice normal in a RAS+ volume for each orientation.
NORMAL_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


@dataclass(frozen=True)
class VolumeGrid:
    """A RAS+ voxel grid: voxel (i, j, k) sits at origin_mm + spacing_mm * (i, j, k)."""

    shape: tuple[int, int, int]
    spacing_mm: float
    origin_mm: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        aff = np.eye(4)
        aff[:3, :3] *= self.spacing_mm
        aff[:3, 3] = self.origin_mm
        return aff

    def level_mm(self, orientation: str, index: int) -> float:
        """MNI coordinate of the slice plane with this index (z axial, y coronal, x sagittal)."""
        axis = NORMAL_AXIS[orientation]
        return float(self.origin_mm[axis] + self.spacing_mm * index)

    def index_of(self, orientation: str, level_mm: float) -> int:
        """Nearest slice index to an MNI level, clipped to the grid."""
        axis = NORMAL_AXIS[orientation]
        idx = round((level_mm - self.origin_mm[axis]) / self.spacing_mm)
        return int(np.clip(idx, 0, self.shape[axis] - 1))


def prepared_grid(size: int = 128) -> VolumeGrid:
    """Cubic grid of `size` voxels a side over a 192 mm field of view centred on the brain."""
    if size < 16:
        raise ValueError(f"slice size must be at least 16 pixels, got {size}")
    spacing = FIELD_OF_VIEW_MM / size
    origin = tuple(c - spacing * size / 2 for c in BRAIN_CENTRE_MNI)
    return VolumeGrid((size, size, size), spacing, origin)


def grid_in_info(info: dict, image_size: int | None = None) -> VolumeGrid | None:
    """The grid a model's dallebrain.json ("grid", written from the prepared set it was trained on) gives, or None
    when it gives none, or one whose side is not `image_size` (when given)."""
    g = info.get("grid")
    if not g or (image_size is not None and g.get("shape", [None])[0] != image_size):
        return None
    return VolumeGrid(tuple(int(s) for s in g["shape"]), float(g["spacing_mm"]),
                      tuple(float(o) for o in g["origin_mm"]))


def extract_slice(volume: np.ndarray, orientation: str, index: int) -> np.ndarray:
    """2-D display image of one plane of a RAS+ volume (see module docstring for the convention)."""
    plane = np.take(volume, index, axis=NORMAL_AXIS[orientation])
    # The two in-plane axes stay in RAS order (x,y), (x,z) or (y,z); flipping both and transposing puts
    # anterior/superior at the top and the subject's right (or anterior, sagittal) on the left.
    return np.ascontiguousarray(plane[::-1, ::-1].T)


def slice_affine(grid: VolumeGrid, orientation: str, index: float) -> np.ndarray:
    """4x4 affine from (row, column, 0) of the display image to MNI mm (the NIfTI affine of a slice);
    a fractional index places a slice between grid planes (a level asked for in mm)."""
    axis = NORMAL_AXIS[orientation]
    a, b = [ax for ax in range(3) if ax != axis]  # in-plane RAS axes: columns run along a, rows along b
    s = grid.spacing_mm
    aff = np.zeros((4, 4))
    aff[3, 3] = 1.0
    aff[b, 0] = -s  # row r -> plane index n_b - 1 - r
    aff[a, 1] = -s  # column c -> plane index n_a - 1 - c
    aff[axis, 2] = s
    origin = np.array(grid.origin_mm, dtype=float)
    origin[a] += s * (grid.shape[a] - 1)
    origin[b] += s * (grid.shape[b] - 1)
    origin[axis] += s * index
    aff[:3, 3] = origin
    return aff
