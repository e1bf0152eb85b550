"""What `dallebrain anomaly` writes per slice: the pseudo-healthy slice and an overlay as PNG, the anomaly map,
the binary mask and the pseudo-healthy slice as NIfTI with the input's own affine (they overlay the input in any
viewer), and a JSON record of how it was made. Every file through a temporary name; nothing is overwritten
unless asked."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from dallebrain.data.io import atomic_path

SUFFIXES = {"overlay": "_anomaly_overlay.png", "pseudo_healthy_png": "_pseudo_healthy.png",
            "map": "_anomaly_map.nii.gz", "mask": "_anomaly_mask.nii.gz", "pseudo_healthy": "_pseudo_healthy.nii.gz",
            "json": "_anomaly.json"}


def output_paths(out_dir: Path, stem: str) -> dict[str, Path]:
    return {k: out_dir / f"{stem}{suffix}" for k, suffix in SUFFIXES.items()}


def check_outputs(out_dir: Path, stems: list[str], overwrite: bool) -> None:
    """Refuse, before any work, an output folder that is a file, stems that collide, or files already there."""
    from dallebrain.pipelines.output import check_output_folder

    check_output_folder(out_dir, [], overwrite)
    seen = set()
    for stem in stems:
        if stem in seen:
            raise ValueError(f"two inputs are named {stem}: their outputs would overwrite each other")
        seen.add(stem)
        if not overwrite:
            existing = [p for p in output_paths(out_dir, stem).values() if p.exists()]
            if existing:
                raise FileExistsError(f"{existing[0]} exists: choose another --out or pass --overwrite")


def overlay_rgb(image: np.ndarray, anomaly_map: np.ndarray, mask: np.ndarray, threshold: float) -> np.ndarray:
    """The slice in grey, the map above the threshold in red to yellow (brighter: further above), the detection
    outlined in cyan. Below the threshold the anatomy stays unpainted: a healthy slice's map is never zero."""
    from matplotlib import colormaps
    from scipy import ndimage

    grey = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2)
    scaled = np.clip(anomaly_map / max(2 * threshold, 1e-6) - 0.5, 0, 0.5) * 2  # 0 at the threshold, 1 at twice it
    heat = colormaps["autumn"](scaled)[..., :3]
    alpha = np.where(anomaly_map > threshold, 0.4 + 0.4 * scaled, 0.0)[..., None]
    rgb = (1 - alpha) * grey + alpha * heat
    outline = mask & ~ndimage.binary_erosion(mask)
    rgb[outline] = (0.0, 1.0, 1.0)
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray, description: str) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(data)[:, :, None], affine)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = description.encode()[:79]
    with atomic_path(path) as tmp:  # no name or time in the gzip header: the same input gives the same bytes
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
            gz.write(img.to_bytes())


def write_slice_outputs(out_dir: Path, item, native: dict[str, np.ndarray], record: dict) -> dict[str, Path]:
    """native: image, map, mask, pseudo_healthy (optional) on the input's pixels; record: the JSON content."""
    paths = output_paths(out_dir, item.name)
    _save_png(paths["overlay"], overlay_rgb(native["image"], native["map"], native["mask"],
                                            record["threshold"]["pixel"]))
    _save_nifti(paths["map"], native["map"].astype(np.float32), item.native_affine, "dallebrain anomaly map")
    _save_nifti(paths["mask"], native["mask"].astype(np.uint8), item.native_affine, "dallebrain anomaly mask")
    written = {k: paths[k] for k in ("overlay", "map", "mask", "json")}
    if native.get("pseudo_healthy") is not None:
        ph = np.clip(native["pseudo_healthy"], 0, 1)
        _save_png(paths["pseudo_healthy_png"], (ph * 255).round().astype(np.uint8))
        _save_nifti(paths["pseudo_healthy"], ph.astype(np.float32), item.native_affine, "dallebrain pseudo-healthy")
        written |= {k: paths[k] for k in ("pseudo_healthy_png", "pseudo_healthy")}
    full = {**record, "files": {k: p.name for k, p in written.items()},
            "affine": np.asarray(item.native_affine).round(6).tolist()}
    with atomic_path(paths["json"]) as tmp:
        tmp.write_text(json.dumps(full, indent=2, default=str) + "\n")
    return written
