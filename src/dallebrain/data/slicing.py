"""Cut a normalised MNI-space volume into 2-D training slices, with what each slice shows."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from dallebrain.data.captions import plain_structure_name
from dallebrain.data.grid import NORMAL_AXIS, VolumeGrid, extract_slice
from dallebrain.data.io import atomic_path
from dallebrain.data.landmarks import landmark
from dallebrain.data.templates import atlas_label_names
from dallebrain.vocab import ORIENTATIONS

PNG_MAX = 65535  # slices are stored as 16-bit PNG: [0, 1] intensities -> [0, 65535]


@dataclass(frozen=True)
class SliceRecord:
    """One kept slice (a row of metadata.parquet, before subject fields and captions are added)."""

    image_path: str  # relative to the prepared data set folder
    modality: str
    orientation: str
    slice_index: int
    slice_mm: float
    landmark: str
    brain_fraction: float
    structures: tuple[str, ...]


def normalise_in_brain(volume: np.ndarray, brain: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """Scale so the `percentile` of brain intensities is 1, clip to [0, 1], zero outside the brain.

    Scale-only (no offset) keeps zero signal at zero and the ratios between tissues intact; the upper
    percentile ignores the few hottest voxels (vessels, noise)."""
    values = volume[brain]
    if values.size == 0:
        raise ValueError("empty brain mask")
    top = float(np.percentile(values, percentile))
    if not np.isfinite(top) or top <= 0:
        raise ValueError("no signal inside the brain mask")
    out = np.clip(volume / top, 0.0, 1.0).astype(np.float32)
    out[~brain] = 0.0
    return out


@lru_cache(maxsize=1)
def _plain_names() -> dict[int, str | None]:
    return {i: plain_structure_name(n) for i, n in atlas_label_names().items()}


def visible_structures(labels_2d: np.ndarray, brain_pixels: int, top: int = 3,
                       min_fraction: float = 0.02) -> tuple[str, ...]:
    """The largest named structures in a slice, left and right merged, largest first."""
    ids, counts = np.unique(labels_2d[labels_2d > 0], return_counts=True)
    names = _plain_names()
    areas: Counter[str] = Counter()
    for i, c in zip(ids.tolist(), counts.tolist(), strict=True):
        name = names.get(i)
        if name:
            areas[name] += c
    floor = min_fraction * max(brain_pixels, 1)
    return tuple(n for n, a in areas.most_common() if a >= floor)[:top]


def slice_positions(grid: VolumeGrid, orientation: str, step_mm: float) -> list[int]:
    """Slice indices every `step_mm` (at least every voxel), on a lattice that contains MNI 0."""
    axis = NORMAL_AXIS[orientation]
    stride = max(1, round(step_mm / grid.spacing_mm))
    zero = grid.index_of(orientation, 0.0)
    return [i for i in range(grid.shape[axis]) if (i - zero) % stride == 0]


def save_png16(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    data = np.round(np.clip(image, 0, 1) * PNG_MAX).astype(np.uint16)
    with atomic_path(path) as tmp:
        Image.fromarray(data).save(tmp, format="PNG")


def load_png(path: str | Path) -> np.ndarray:
    """A prepared slice as float32 in [0, 1] (16-bit or 8-bit PNG)."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im)
    scale = PNG_MAX if arr.dtype == np.uint16 or arr.max() > 255 else 255
    return arr.astype(np.float32) / scale


def cut_slices(volume: np.ndarray, brain: np.ndarray, labels: np.ndarray, grid: VolumeGrid, modality: str,
               subject_dir: Path, rel_prefix: str, stem: str, step_mm: float = 3.0,
               min_brain_fraction: float = 0.1,
               orientations: tuple[str, ...] = ORIENTATIONS) -> list[SliceRecord]:
    """Write the slices of one volume that show enough brain; return their records."""
    records = []
    for orientation in orientations:
        for idx in slice_positions(grid, orientation, step_mm):
            mask = extract_slice(brain, orientation, idx)
            fraction = float(mask.mean())
            if fraction < min_brain_fraction:
                continue
            level = grid.level_mm(orientation, idx)
            name = f"{stem}_{modality}_{orientation}_{level:+06.1f}mm.png"
            save_png16(extract_slice(volume, orientation, idx), subject_dir / name)
            structures = visible_structures(extract_slice(labels, orientation, idx), int(mask.sum()))
            records.append(SliceRecord(f"{rel_prefix}/{name}", modality, orientation, idx, level,
                                       landmark(orientation, level), fraction, structures))
    return records


def add_lesion_slices(rows: list[dict], mask_path: str | Path, to_mni: np.ndarray, grid: VolumeGrid,
                      subject_dir: Path, rel_prefix: str, stem: str) -> None:
    """Slice a scan's lesion mask (label values, nearest neighbour) like its images: one 8-bit PNG per kept
    slice position beside the images; each row gains `mask_path` and `lesion_labels` (labels in view)."""
    import nibabel as nib
    from PIL import Image

    from dallebrain.data.templates import resample_to_grid

    img = nib.load(mask_path)
    mask = np.rint(resample_to_grid(np.asarray(img.dataobj), img.affine, grid, 0, to_mni)).astype(np.uint8)
    done: dict[tuple[str, int], tuple[str, list[int]]] = {}
    for row in rows:
        key = (row["orientation"], int(row["slice_index"]))
        if key not in done:
            plane = extract_slice(mask, *key)
            name = f"{stem}_mask_{key[0]}_{grid.level_mm(*key):+06.1f}mm.png"
            with atomic_path(subject_dir / name) as tmp:
                Image.fromarray(np.ascontiguousarray(plane)).save(tmp, format="PNG")
            done[key] = (f"{rel_prefix}/{name}", sorted(int(v) for v in np.unique(plane[plane > 0])))
        row["mask_path"], row["lesion_labels"] = done[key]


# Values of the tissue label PNGs (`label_path`): the simulator's dseg (0-4) with the CSF of the lateral
# ventricles split off, marked as the cohort's `lateral_ventricles_ml` measures them (the subject's own atlas
# ventricle labels plus one voxel of margin, as enlarged ventricles reach past them).
TISSUE_LABELS = {"background": 0, "csf": 1, "gm": 2, "wm": 3, "lesion": 4, "ventricles": 5}


def tissue_label_volume(seg_path: str | Path, atlas_labels: np.ndarray, to_mni: np.ndarray,
                        grid: VolumeGrid) -> np.ndarray:
    """A tissue dseg on `grid` (nearest neighbour, the images' transform), lateral-ventricle CSF relabelled."""
    import nibabel as nib
    from scipy import ndimage

    from dallebrain.data.templates import LATERAL_VENTRICLE_LABELS, label_ids, resample_to_grid

    img = nib.load(seg_path)
    seg = np.rint(resample_to_grid(np.asarray(img.dataobj), img.affine, grid, 0, to_mni)).astype(np.uint8)
    if seg.max() > TISSUE_LABELS["lesion"]:
        raise ValueError(f"{Path(seg_path).name}: label {int(seg.max())} is not a tissue label (0-4)")
    ventricles = ndimage.binary_dilation(np.isin(atlas_labels, label_ids(*LATERAL_VENTRICLE_LABELS)))
    seg[ventricles & (seg == TISSUE_LABELS["csf"])] = TISSUE_LABELS["ventricles"]
    return seg


def add_label_slices(rows: list[dict], seg_path: str | Path, atlas_labels: np.ndarray, to_mni: np.ndarray,
                     grid: VolumeGrid, subject_dir: Path, rel_prefix: str, stem: str) -> None:
    """Slice a scan's tissue labels like its images: one 8-bit PNG (values TISSUE_LABELS) per kept slice
    position, shared by the contrasts cut there; each row gains `label_path`."""
    from PIL import Image

    labels = tissue_label_volume(seg_path, atlas_labels, to_mni, grid)
    done: dict[tuple[str, int], str] = {}
    for row in rows:
        key = (row["orientation"], int(row["slice_index"]))
        if key not in done:
            name = f"{stem}_label_{key[0]}_{grid.level_mm(*key):+06.1f}mm.png"
            with atomic_path(subject_dir / name) as tmp:
                Image.fromarray(np.ascontiguousarray(extract_slice(labels, *key))).save(tmp, format="PNG")
            done[key] = f"{rel_prefix}/{name}"
        row["label_path"] = done[key]
