"""Tissue volumes of one subject (mL, native space): from the source's own segmentation when it ships one
(OASIS FSL_SEG, HCP FreeSurfer aparc+aseg), else from a 3-class intensity mixture inside the brain mask.

ICV is everything inside the intracranial (or the source's brain) mask, so ICV = GM + WM + CSF, and
nWBV = (GM + WM) / ICV. Lateral ventricles are CSF inside the atlas ventricle labels (FreeSurfer's own
ventricle labels for HCP).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# FreeSurfer aseg labels (FreeSurferColorLUT.txt). Cortex is 3/42 in aseg, 1000-2999 in aparc+aseg.
FS_LATERAL_VENTRICLES = (4, 43, 5, 44)  # lateral and inferior lateral ventricles
FS_CSF = (*FS_LATERAL_VENTRICLES, 14, 15, 24, 31, 63, 72)  # + 3rd, 4th, extracerebral CSF, choroid plexus, 5th
FS_WM = (2, 41, 7, 46, 16, 77, 78, 79, 85, 251, 252, 253, 254, 255)  # cerebral/cerebellar WM, brainstem, CC
FS_GM = (3, 42, 8, 47, 10, 49, 11, 50, 12, 51, 13, 52, 17, 53, 18, 54, 26, 58, 28, 60)  # cortex + deep GM


@dataclass(frozen=True)
class TissueVolumes:
    """Native-space volumes in mL and how they were measured."""

    icv_ml: float
    gm_ml: float
    wm_ml: float
    csf_ml: float
    lateral_ventricles_ml: float | None
    method: str  # "fsl_seg", "freesurfer" or "gmm"

    @property
    def nwbv(self) -> float:
        return (self.gm_ml + self.wm_ml) / self.icv_ml

    def columns(self) -> dict:
        """The metadata columns (icv_ml ... nwbv) plus the method."""
        out = {k: (None if v is None else float(v)) if k != "method" else v for k, v in asdict(self).items()}
        out["nwbv"] = float(self.nwbv)
        return out


def voxel_ml(affine: np.ndarray) -> float:
    return float(abs(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3]))) / 1000.0


def _e_step(x: np.ndarray, weight: np.ndarray, means: np.ndarray, var: np.ndarray) -> np.ndarray:
    log_p = np.log(weight / weight.sum()) - 0.5 * np.log(2 * np.pi * var) - 0.5 * (x[:, None] - means) ** 2 / var
    log_p -= log_p.max(1, keepdims=True)
    post = np.exp(log_p)
    return post / post.sum(1, keepdims=True)


def gmm_posteriors(values: np.ndarray, initial: np.ndarray, iterations: int = 30,
                   max_fit: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """EM for a 1-D Gaussian mixture started from soft memberships.

    Args:
        values: (n,) intensities.
        initial: (n, k) starting memberships (e.g. registered template tissue priors); their weighted means
            set the starting class means, so no assumption on which tissue is brightest is needed.
        max_fit: the parameters are fitted on an evenly strided subset of at most this many voxels (three
            1-D Gaussians need no more; it makes EM ~10x cheaper), then every voxel gets its posterior.

    Returns:
        (n, k) posterior memberships and the (k,) class means.
    """
    x_all = np.asarray(values, dtype=np.float64)
    stride = max(1, len(x_all) // max_fit)
    x = x_all[::stride]
    resp = np.asarray(initial, dtype=np.float64)[::stride] + 1e-6
    resp /= resp.sum(1, keepdims=True)
    floor = 1e-4 * max(float(x.var()), 1e-12)
    for _ in range(iterations):
        weight = resp.sum(0) + 1e-9
        means = (resp * x[:, None]).sum(0) / weight
        var = (resp * (x[:, None] - means) ** 2).sum(0) / weight + floor
        new = _e_step(x, weight, means, var)
        converged = np.abs(new - resp).max() < 1e-4
        resp = new
        if converged:
            break
    weight = resp.sum(0) + 1e-9
    means = (resp * x[:, None]).sum(0) / weight
    var = (resp * (x[:, None] - means) ** 2).sum(0) / weight + floor
    return _e_step(x_all, weight, means, var).astype(np.float32), means


def from_intensity(image: np.ndarray, brain: np.ndarray, gm_prior: np.ndarray, wm_prior: np.ndarray,
                   csf_prior: np.ndarray, ventricles: np.ndarray, grid_voxel_ml: float,
                   native_per_grid: float = 1.0) -> TissueVolumes:
    """3-class GMM on the (bias-corrected) image inside `brain`, all arrays on one MNI grid.

    Args:
        gm_prior, wm_prior, csf_prior: registered template priors on the same grid: they start the EM.
        ventricles: atlas lateral-ventricle region on the grid (bool).
        grid_voxel_ml: volume of one grid voxel; native_per_grid: |det| of the native <- MNI linear part.
    """
    brain = np.asarray(brain, dtype=bool)
    if brain.sum() < 100:
        raise ValueError("brain mask too small to measure tissue volumes")
    values = np.asarray(image, dtype=np.float32)[brain]
    initial = np.stack([gm_prior[brain], wm_prior[brain], csf_prior[brain]], axis=1)
    post, _ = gmm_posteriors(values, initial)
    scale = grid_voxel_ml * native_per_grid
    gm, wm, csf = (float(post[:, k].sum()) * scale for k in range(3))
    csf_map = np.zeros(brain.shape, dtype=np.float32)
    csf_map[brain] = post[:, 2]
    vents = float(csf_map[np.asarray(ventricles, dtype=bool)].sum()) * scale
    return TissueVolumes(float(brain.sum()) * scale, gm, wm, csf, vents, "gmm")


def fsl_seg_classes(seg: np.ndarray, t1: np.ndarray) -> dict[str, int]:
    """Which FSL_SEG label is CSF, GM, WM in this image: by mean T1 intensity, CSF darkest, WM brightest
    (the label order of OASIS's FSL_SEG files is disputed, so it is decided per image)."""
    labels = [int(v) for v in np.unique(seg) if v != 0]
    if len(labels) != 3:
        raise ValueError(f"FSL_SEG should hold background + 3 tissue classes, found labels {labels}")
    means = {label: float(t1[seg == label].mean()) for label in labels}
    csf, gm, wm = sorted(labels, key=means.get)
    return {"csf": csf, "gm": gm, "wm": wm}


def from_fsl_seg(seg: np.ndarray, t1: np.ndarray, affine: np.ndarray, ventricles_ml: float | None,
                 native_per_image: float = 1.0) -> TissueVolumes:
    """Volumes from an FSL FAST 3-class segmentation on the T1's grid. ICV is the union of the segmentation
    and the image's own (skull-stripped) foreground. `native_per_image` converts the image's space to native
    (1 / ASF for OASIS T88 images)."""
    classes = fsl_seg_classes(seg, t1)
    scale = voxel_ml(affine) * native_per_image
    gm = float((seg == classes["gm"]).sum()) * scale
    wm = float((seg == classes["wm"]).sum()) * scale
    icv = float(((seg > 0) | (t1 > 0)).sum()) * scale
    return TissueVolumes(icv, gm, wm, icv - gm - wm, ventricles_ml, "fsl_seg")


def from_freesurfer(aseg: np.ndarray, affine: np.ndarray, brain: np.ndarray | None = None) -> TissueVolumes:
    """Volumes from FreeSurfer aseg / aparc+aseg labels (native grid). ICV is the labelled volume joined with
    `brain` (the source's brain mask on the same grid) when given; CSF is ICV minus GM and WM."""
    aseg = np.asarray(aseg).astype(np.int32)
    scale = voxel_ml(affine)
    cortex = (aseg >= 1000) & (aseg < 3000)
    gm = float((np.isin(aseg, FS_GM) | cortex).sum()) * scale
    wm = float(np.isin(aseg, FS_WM).sum()) * scale
    inside = aseg > 0 if brain is None else (aseg > 0) | np.asarray(brain, dtype=bool)
    icv = float(inside.sum()) * scale
    vents = float(np.isin(aseg, FS_LATERAL_VENTRICLES).sum()) * scale
    return TissueVolumes(icv, gm, wm, icv - gm - wm, vents, "freesurfer")
