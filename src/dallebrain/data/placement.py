"""A subject placed in MNI space: the known transform of a simulated subject, or N4 + affine registration of
real data; the brain mask, the atlas labels and the native tissue volumes (the source's own segmentation where
a cohort reader offers one, else an intensity mixture started from the template priors)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from dallebrain.data.grid import VolumeGrid, prepared_grid
from dallebrain.data.sources.base import SubjectRecord
from dallebrain.data.volume_io import MAX_VOXELS

# Native tissue volumes of a subject, columns of the metadata table.
TISSUE_COLUMNS = ("icv_ml", "gm_ml", "wm_ml", "csf_ml", "lateral_ventricles_ml", "nwbv")

# Real data: N4 and registration run on copies block-averaged to WORK_MM, never at full resolution; the
# template is averaged the same way. ITK's pyramid then shrinks both 2x: a 4 mm level, then a 2 mm level.
WORK_MM = 2.0
N4_FIT_MM = 5.0  # N4 fits its field on ~40-60k voxels of a head: most of the correction, a tenth of the time
N4_ITERATIONS = (50, 50, 30)
N4_CONVERGENCE = 5e-3
# 10k samples / 60 iterations halve the registration time of 20k / 100 for ~0.2 mm more landmark error
# (0.8 -> 1.0 mm measured on the 3 mm fixture): the 500-IXI-volumes-in-30-minutes budget needs it.
REGISTRATION = {"shrink_factors": (2, 1), "smoothing_mm": (2.0, 1.0), "max_samples": 10_000, "iterations": 60,
                "min_step": 0.01}
VOLUME_GRID_SIZE = 96  # tissue volumes are measured on the 2 mm MNI grid, whatever the slice size
MIN_TEMPLATE_R = 0.4  # a registered T1 correlates far better than this with the template inside the brain
MIN_BRAIN_COVERAGE = 0.85  # part of the template brain the image's field of view must cover
SCALE_RANGE = (0.6, 1.6)  # axis scales of native <- MNI that a human head can need


@lru_cache(maxsize=1)
def _template_work():
    import nibabel as nib

    from dallebrain.data import registration
    from dallebrain.data.templates import template_path

    return registration.block_average(nib.load(template_path("t1")), WORK_MM)


def _log_bias(work, skull_stripped: bool) -> np.ndarray:
    from dallebrain.data import registration

    spacing = float(np.linalg.norm(work.affine[:3, :3], axis=0).min())
    mask = np.asarray(work.dataobj) > 0 if skull_stripped else None
    return registration.n4_log_bias(work, mask, max(1, round(N4_FIT_MM / spacing)), N4_ITERATIONS,
                                    N4_CONVERGENCE)


def estimate_to_mni(reference, start: np.ndarray | None = None) -> np.ndarray:
    """native <- MNI world transform of a subject: affine registration (rigid, then 12 degrees of freedom;
    Mattes MI) of its bias-corrected, block-averaged reference image to the template at 4 then 2 mm.

    Starts from `start`, else from aligned centres of mass: also for atlas-space images (OASIS T88), whose
    Analyze headers do not say where the atlas origin is."""
    from dallebrain.data import registration

    to_mni = registration.register_affine(reference, _template_work(), initial=start, **REGISTRATION)
    scales = np.linalg.svd(to_mni[:3, :3], compute_uv=False)
    if scales.min() < SCALE_RANGE[0] or scales.max() > SCALE_RANGE[1]:
        raise ValueError(f"registration to MNI failed: axis scales {', '.join(f'{x:.2f}' for x in scales)} "
                         "are not those of a head")
    return to_mni


@dataclass
class Placement:
    """A subject in MNI space: what slicing and the metadata need."""

    to_mni: np.ndarray  # native <- MNI world transform
    volumes: dict[str, np.ndarray]  # modality -> volume on the prepared grid (bias corrected)
    brain: np.ndarray  # brain mask on the prepared grid
    labels: np.ndarray  # atlas structure labels on the prepared grid
    tissue: dict  # icv_ml, gm_ml, wm_ml, csf_ml, lateral_ventricles_ml, nwbv (native mL) + volume_method


def place_in_mni(record: SubjectRecord, grid: VolumeGrid, max_voxels: int = MAX_VOXELS) -> Placement:
    """Read a subject's images and put them on `grid` in MNI space, with brain mask, labels and volumes.

    Simulated subjects use their known transform and volumes. Real ones: N4 (unless the source corrected
    the bias), affine registration of the T1w (else the first image) to MNI152 (identity for HCP
    MNINonLinear), the other images placed by their own world coordinates (same session). Brain mask: the
    template intracranial mask intersected with signal, or the source's own zero background when it is
    skull stripped."""
    import nibabel as nib

    from dallebrain.data import registration, volume_io
    from dallebrain.data.templates import atlas_labels, resample_to_grid

    images = {m: volume_io.load_volume(p, max_voxels) for m, p in record.images.items()}
    if record.to_mni is not None:  # ground truth (simulated): nothing to estimate
        to_mni = np.asarray(record.to_mni, dtype=float)
        seg, atlas = nib.load(record.tissue_seg), nib.load(record.extra["atlas_seg"])
        brain = resample_to_grid(np.asarray(seg.dataobj), seg.affine, grid, 0, to_mni) > 0
        labels = resample_to_grid(np.asarray(atlas.dataobj), atlas.affine, grid, 0, to_mni).astype(np.int16)
        volumes = {m: resample_to_grid(np.asarray(img.dataobj, dtype=np.float32), img.affine, grid, 1, to_mni)
                   for m, img in images.items()}
        tissue = {k: record.extra.get(k) for k in TISSUE_COLUMNS}
        return Placement(to_mni, volumes, brain, labels, tissue)

    reference = "T1w" if "T1w" in images else next(iter(images))
    skull_stripped = bool(record.extra.get("skull_stripped"))
    works = {m: registration.block_average(img, WORK_MM) for m, img in images.items()}
    log_bias = {m: None if record.extra.get("bias_corrected") else _log_bias(w, skull_stripped)
                for m, w in works.items()}
    if record.in_mni and record.extra.get("atlas") == "MNI152":
        to_mni = np.eye(4)
    else:
        work = works[reference]
        lb = log_bias[reference]
        corrected = work if lb is None else nib.Nifti1Image(np.asarray(work.dataobj) / np.exp(lb), work.affine)
        to_mni = estimate_to_mni(corrected)

    def on(target: VolumeGrid, modality: str) -> np.ndarray:
        img = images[modality]
        volume = resample_to_grid(np.asarray(img.dataobj), img.affine, target, 1, to_mni)
        if log_bias[modality] is not None:
            volume /= np.exp(resample_to_grid(log_bias[modality], works[modality].affine, target, 1, to_mni))
        return volume

    volume_grid = prepared_grid(VOLUME_GRID_SIZE)
    reference_v = on(volume_grid, reference)
    brain_v = _brain_mask(reference_v, volume_grid, skull_stripped, check=True,
                          t1_reference=reference == "T1w")
    tissue = _tissue_volumes(record, images[reference], reference_v, brain_v, volume_grid, to_mni, max_voxels)
    volumes = {m: on(grid, m) for m in images}
    brain = _brain_mask(volumes[reference], grid, skull_stripped)
    return Placement(to_mni, volumes, brain, atlas_labels(grid), tissue)


def _brain_mask(reference: np.ndarray, grid: VolumeGrid, skull_stripped: bool, check: bool = False,
                t1_reference: bool = False) -> np.ndarray:
    """Template intracranial mask & signal of the registered reference (holes filled: dark ventricles stay
    in); for a skull-stripped source, its own non-zero voxels. `check` refuses a failed registration or a
    field of view that misses the brain."""
    from scipy import ndimage

    from dallebrain.data.templates import tissue_priors

    priors = tissue_priors(grid)
    intracranial = priors.intracranial > 0.5
    inside = reference[intracranial]
    top = float(np.percentile(inside, 98)) if inside.size else 0.0
    if top <= 0:
        raise ValueError("no signal where the brain should be after registration to MNI")
    if skull_stripped:
        brain = ndimage.binary_fill_holes(reference > 1e-3 * top)
    else:
        brain = intracranial & ndimage.binary_fill_holes(reference > 0.1 * top)
    if check:
        coverage = float((inside > 0).mean())
        if coverage < MIN_BRAIN_COVERAGE:
            raise ValueError(f"field of view covers only {coverage:.0%} of the brain after registration to MNI")
        if t1_reference:
            r = float(np.corrcoef(inside, priors.t1[intracranial])[0, 1])
            if not r >= MIN_TEMPLATE_R:
                raise ValueError(f"registration to MNI failed: T1 vs template correlation {r:.2f} "
                                 f"< {MIN_TEMPLATE_R}")
    return brain


def _tissue_volumes(record: SubjectRecord, reference_img, reference_v: np.ndarray, brain_v: np.ndarray,
                    grid: VolumeGrid, to_mni: np.ndarray, max_voxels: int = MAX_VOXELS) -> dict:
    """Native tissue volumes: the source's segmentation when it has one, else a GMM on the reference."""
    from scipy import ndimage

    from dallebrain.data import volumes
    from dallebrain.data.sources import NOT_NATIVE, native_volumes
    from dallebrain.data.templates import (
        LATERAL_VENTRICLE_LABELS,
        atlas_labels,
        label_ids,
        tissue_priors,
    )

    native_per_mni = float(abs(np.linalg.det(to_mni[:3, :3])))
    grid_ml = grid.spacing_mm ** 3 / 1000.0
    # One voxel of margin: enlarged (older) ventricles reach past the young atlas's labels; around them
    # is white matter, whose CSF membership is nil.
    ventricles = ndimage.binary_dilation(np.isin(atlas_labels(grid), label_ids(*LATERAL_VENTRICLE_LABELS)))
    result = native_volumes(record, reference_img, grid, to_mni, ventricles, max_voxels)
    if result is NOT_NATIVE:  # the source's labels exist but are not in native space: no volume is invented
        return {k: None for k in TISSUE_COLUMNS} | {"volume_method": None}
    if result is None:
        priors = tissue_priors(grid)
        result = volumes.from_intensity(reference_v, brain_v, priors.gm, priors.wm, priors.csf, ventricles,
                                        grid_ml, native_per_mni)
    columns = result.columns()
    columns["volume_method"] = columns.pop("method")
    return columns
