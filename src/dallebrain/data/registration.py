"""Bias correction and affine registration of head MRI volumes (nibabel + SimpleITK + scipy); reading them
safely is `data.volume_io.load_volume`.

Conventions: every image is a nibabel image whose affine maps voxel (i, j, k) to world RAS millimetres.
A world transform `T` (4x4, RAS mm) returned by `register_affine` maps a point p of the fixed (e.g. MNI)
world to the point T @ p of the moving (native) world: to resample moving onto fixed, sample moving at T @ p.
ITK works in LPS; the flip diag(-1, -1, 1, 1) is applied on both sides at the boundary, nowhere else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

if TYPE_CHECKING:
    import SimpleITK as sitk

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS, its own inverse
# SimpleITK reads a sampling seed of 0 as "seed from the wall clock": any fixed non-zero value makes the
# random metric samples, hence the transform, the same on every run.
REGISTRATION_SEED = 20240611


def sitk_from_nib(img: nib.spatialimages.SpatialImage, data: np.ndarray | None = None) -> sitk.Image:
    """A float32 SimpleITK image with the same voxels and the same world geometry (LPS inside ITK).

    `data` replaces the image's voxels (same shape), e.g. a mask on the image's grid.
    """
    import SimpleITK as sitk

    array = np.asarray(img.dataobj if data is None else data, dtype=np.float32)
    affine_lps = LPS @ np.asarray(img.affine, dtype=float)
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    out = sitk.GetImageFromArray(
        np.ascontiguousarray(array.transpose(2, 1, 0))
    )  # numpy (k,j,i) = ITK (x,y,z)
    out.SetSpacing([float(s) for s in spacing])
    out.SetOrigin([float(o) for o in affine_lps[:3, 3]])
    out.SetDirection([float(d) for d in (affine_lps[:3, :3] / spacing).ravel()])
    return out


def nib_affine_from_sitk(image: sitk.Image) -> np.ndarray:
    """The RAS voxel-to-world affine of a SimpleITK image (the inverse of `sitk_from_nib` geometry)."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=float)
    affine[:3, 3] = image.GetOrigin()
    return LPS @ affine


def _mask_array(mask, shape) -> np.ndarray | None:
    if mask is None:
        return None
    array = np.asarray(mask.dataobj if hasattr(mask, "dataobj") else mask) > 0
    if array.shape != tuple(shape):
        raise ValueError(f"mask shape {array.shape} differs from image shape {tuple(shape)}")
    return array


def n4_bias_correct(
    img: nib.spatialimages.SpatialImage,
    mask=None,
    shrink: int = 4,
    iterations: tuple[int, ...] = (50, 50, 30),
    convergence: float = 1e-3,
) -> nib.Nifti1Image:
    """N4 bias field correction (Tustison 2010): fit on a `shrink`-times smaller image, divide at full size.

    Args:
        mask: voxels to fit on (nibabel image or array on the image's grid, > 0 inside); Otsu foreground
            when None.
        iterations: per fitting level (one B-spline refinement per entry).
        convergence: N4's per-level stopping threshold (5e-3 keeps most of the correction at a tenth of the
            time of the default 1e-3 on 40k-voxel fits).
    """
    data = np.asarray(img.dataobj, dtype=np.float32)
    bias = np.exp(n4_log_bias(img, mask, shrink, iterations, convergence)).astype(np.float32)
    return nib.Nifti1Image(data / bias, img.affine)


def n4_log_bias(
    img: nib.spatialimages.SpatialImage,
    mask=None,
    shrink: int = 4,
    iterations: tuple[int, ...] = (50, 50, 30),
    convergence: float = 1e-3,
) -> np.ndarray:
    """The log of N4's multiplicative bias field on the image's own grid (see `n4_bias_correct`).

    Being smooth, the field can be fitted on a block-averaged copy and resampled anywhere afterwards."""
    import SimpleITK as sitk

    data = np.asarray(img.dataobj, dtype=np.float32)
    # N4 fits log intensities: negative values (interpolation ringing) would poison the fit.
    image = sitk_from_nib(img, np.maximum(data, 0))
    mask_array = _mask_array(mask, data.shape)
    if mask_array is None:
        mask_image = sitk.OtsuThreshold(image, 0, 1, 200)
    else:
        mask_image = sitk.Cast(sitk_from_nib(img, mask_array), sitk.sitkUInt8)
        mask_image.CopyInformation(image)
    factor = max(1, min(int(shrink), min(data.shape) // 8))  # leave the fit enough voxels on small images
    small = sitk.Shrink(image, [factor] * 3)
    small_mask = sitk.Shrink(mask_image, [factor] * 3)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(i) for i in iterations])
    corrector.SetConvergenceThreshold(float(convergence))
    with _single_threaded_itk():
        corrector.Execute(small, small_mask)
    log_bias = corrector.GetLogBiasFieldAsImage(image)
    return sitk.GetArrayFromImage(log_bias).transpose(2, 1, 0).astype(np.float32)


def _itk_matrix(transform: sitk.Transform) -> np.ndarray:
    """4x4 LPS matrix of an ITK linear transform (or a composite of them): fixed point -> moving point."""
    import SimpleITK as sitk

    transform = transform.Downcast()
    if isinstance(transform, sitk.CompositeTransform):
        # A composite applies its last-added transform first.
        total = np.eye(4)
        for index in range(transform.GetNumberOfTransforms()):
            total = total @ _itk_matrix(transform.GetNthTransform(index))
        return total
    matrix = np.asarray(transform.GetMatrix(), dtype=float).reshape(3, 3)
    center = np.asarray(transform.GetCenter(), dtype=float)
    translation = np.asarray(transform.GetTranslation(), dtype=float)
    out = np.eye(4)
    out[:3, :3] = matrix
    out[:3, 3] = translation + center - matrix @ center
    return out


@contextlib.contextmanager
def _single_threaded_itk() -> Iterator[None]:
    """ITK filters created inside this block run on one thread.

    The N4 fit sums over voxels in per-thread parts, so its result changes (~1e-6) with the thread count,
    which `prepare` sets from the cores and workers; its inner B-spline filters ignore the N4 filter's own
    thread setting, hence the process default, put back afterwards. The fit runs on ~50k voxels, where
    threads gain little."""
    import SimpleITK as sitk

    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def _registration(fixed, fixed_mask, moving_mask, seed: int, shrink_factors=(4, 2, 1),
                  smoothing_mm=(2.0, 1.0, 0.0), max_samples: int = 150_000, iterations: int = 200,
                  min_step: float = 1e-3):
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    # One thread and one work unit: with the metric threaded, the same inputs and seed gave transforms that
    # differed by up to 2e-8 from run to run, and by thread count (measured on 2 and 4 threads).
    # The metric visits only ~10k samples: on the 3 mm test head one thread took 1.8 s, two 2.4 s (2 cores).
    method.SetNumberOfThreads(1)
    method.SetNumberOfWorkUnits(1)
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    shrinks = [int(s) for s in shrink_factors]
    voxels = float(np.prod(fixed.GetSize()))
    # Enough random samples per level for a stable MI estimate without visiting every voxel of a 1 mm image.
    percentages = [min(1.0, max_samples / (voxels / s**3)) for s in shrinks]
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentagePerLevel(percentages, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=min_step,
        numberOfIterations=int(iterations),
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(shrinks)
    method.SetSmoothingSigmasPerLevel([float(s) for s in smoothing_mm])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    if moving_mask is not None:
        method.SetMetricMovingMask(moving_mask)
    return method


def register_affine(
    moving_img: nib.spatialimages.SpatialImage,
    fixed_img: nib.spatialimages.SpatialImage,
    moving_mask=None,
    fixed_mask=None,
    degrees_of_freedom: int = 12,
    seed: int = REGISTRATION_SEED,
    initial: np.ndarray | None = None,
    shrink_factors: tuple[int, ...] = (4, 2, 1),
    smoothing_mm: tuple[float, ...] = (2.0, 1.0, 0.0),
    max_samples: int = 150_000,
    iterations: int = 200,
    min_step: float = 1e-3,
) -> np.ndarray:
    """Affine registration by Mattes mutual information: T (4x4, RAS mm) with moving(T @ p) ~ fixed(p).

    Stages: centre of mass (moments) initialisation, rigid (Euler3D), then for 12 degrees of freedom a full
    affine, each over the pyramid levels (by default shrink 4, 2, 1; smoothing 2, 1, 0 mm). Mutual information
    lets a T2 or PD image be registered to a T1 template. Masks (image or array, > 0 inside) restrict the metric.

    Args:
        degrees_of_freedom: 6 (rigid), 7 (rigid + isotropic scale) or 12 (affine).
        initial: a starting T (e.g. identity for an image already in atlas space); its rotation part must be
            close to a rotation. None: the translation that aligns the centres of mass.
        shrink_factors, smoothing_mm: the pyramid, one entry per level (shrink is in voxels of the inputs,
            so pass pre-downsampled images and few levels for speed: see `fast_register_to_template`).
        seed: of the random metric samples (1 to 2^32 - 1): the same seed and inputs give the same T, bit
            for bit, whatever the thread settings.
        max_samples: random metric samples per level; iterations, min_step: optimizer stopping rules.
    """
    import SimpleITK as sitk

    if degrees_of_freedom not in (6, 7, 12):
        raise ValueError(f"degrees_of_freedom must be 6, 7 or 12, got {degrees_of_freedom}")
    if not 0 < seed < 2**32:
        raise ValueError(f"seed must be between 1 and 2^32 - 1 (SimpleITK reads 0 as 'from the clock'), got {seed}")
    if len(shrink_factors) != len(smoothing_mm):
        raise ValueError("shrink_factors and smoothing_mm need one entry per level")
    fixed = sitk_from_nib(fixed_img)
    moving = sitk_from_nib(moving_img)
    masks = [_mask_image(mask, img, image)
             for mask, img, image in ((fixed_mask, fixed_img, fixed), (moving_mask, moving_img, moving))]

    def method():
        return _registration(fixed, masks[0], masks[1], seed, shrink_factors, smoothing_mm, max_samples,
                             iterations, min_step)

    start = _rigid_start(fixed, moving, initial)
    rigid_method = method()
    rigid_method.SetInitialTransform(start, inPlace=False)
    # Execute may hand back a composite; its 4x4 matrix is what the next stage needs.
    rigid = _itk_matrix(rigid_method.Execute(fixed, moving))
    if degrees_of_freedom == 6:
        return LPS @ rigid @ LPS

    second = sitk.Similarity3DTransform() if degrees_of_freedom == 7 else sitk.AffineTransform(3)
    center = np.asarray(start.GetCenter(), dtype=float)  # keeps rotation and translation decoupled
    second.SetCenter(center.tolist())
    second.SetMatrix(rigid[:3, :3].ravel().tolist())
    second.SetTranslation((rigid[:3, 3] + rigid[:3, :3] @ center - center).tolist())
    affine_method = method()
    affine_method.SetInitialTransform(second, inPlace=False)
    final = affine_method.Execute(fixed, moving)
    return LPS @ _itk_matrix(final) @ LPS


def _mask_image(mask, img, image):
    """A metric mask (image or array, > 0 inside) as a SimpleITK image on `image`'s grid; None for none."""
    import SimpleITK as sitk

    array = _mask_array(mask, img.shape[:3])
    if array is None:
        return None
    mask_image = sitk.Cast(sitk_from_nib(img, array), sitk.sitkUInt8)
    mask_image.CopyInformation(image)
    return mask_image


def _rigid_start(fixed, moving, initial: np.ndarray | None):
    """The rigid stage's starting transform: aligned centres of mass, or the rotation nearest to `initial`
    (polar decomposition) with its translation."""
    import SimpleITK as sitk

    if initial is None:
        return sitk.CenteredTransformInitializer(
            fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
        )
    start = sitk.Euler3DTransform()
    lps = LPS @ np.asarray(initial, dtype=float) @ LPS
    centre = _fixed_centre(fixed)
    start.SetCenter(centre.tolist())
    u, _, vt = np.linalg.svd(lps[:3, :3])
    start.SetMatrix((u @ vt).ravel().tolist())
    start.SetTranslation((lps[:3, :3] @ centre + lps[:3, 3] - centre).tolist())
    return start


def _fixed_centre(image) -> np.ndarray:
    size = np.asarray(image.GetSize(), dtype=float)
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist()), dtype=float)


def block_average(img: nib.spatialimages.SpatialImage, target_mm: float) -> nib.Nifti1Image:
    """A float32 copy averaged over blocks of about `target_mm` (whole voxels per axis; none below 1.5x).

    Averaging, not sub-sampling: registration and N4 at 2-4 mm then see every voxel's signal, and the
    copy costs one pass over the data."""
    data = np.asarray(img.dataobj, dtype=np.float32)
    spacing = np.linalg.norm(np.asarray(img.affine)[:3, :3], axis=0)
    factors = [max(1, int(round(target_mm / s))) if target_mm / s >= 1.5 else 1 for s in spacing]
    if factors == [1, 1, 1]:
        return nib.Nifti1Image(data, img.affine)
    n = [s // f * f for s, f in zip(data.shape[:3], factors, strict=True)]
    data = data[: n[0], : n[1], : n[2]]
    data = data.reshape(n[0] // factors[0], factors[0], n[1] // factors[1], factors[1],
                        n[2] // factors[2], factors[2]).mean((1, 3, 5), dtype=np.float32)
    block = np.diag([*factors, 1.0])
    block[:3, 3] = (np.asarray(factors) - 1) / 2  # a block's centre in the original voxel grid
    return nib.Nifti1Image(data, np.asarray(img.affine) @ block)


def resample_to(
    moving_img: nib.spatialimages.SpatialImage,
    T: np.ndarray,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    order: int = 1,
) -> np.ndarray:
    """Sample `moving_img` on the grid (shape, affine) through T (fixed world -> moving world).

    Voxel (i, j, k) of the output takes moving at voxel inv(moving.affine) @ T @ affine @ [i, j, k, 1];
    outside the moving image is 0. order 0 keeps the moving dtype (labels), higher orders give float32.
    """
    from scipy import ndimage

    shape = tuple(int(s) for s in shape[:3])
    if order == 0:
        data = np.asanyarray(moving_img.dataobj)
        out = np.zeros(shape, dtype=data.dtype)
    else:
        data = np.asarray(moving_img.dataobj, dtype=np.float32)
        if order > 1:  # filter once here rather than once per slab inside map_coordinates
            data = ndimage.spline_filter(data, order=order, mode="constant")
        out = np.zeros(shape, dtype=np.float32)
    voxel_map = (
        np.linalg.inv(np.asarray(moving_img.affine, dtype=float))
        @ np.asarray(T, float)
        @ np.asarray(affine, float)
    )
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    plane = np.stack([i.ravel(), j.ravel(), np.zeros(i.size), np.ones(i.size)]).astype(float)
    # One k-slab at a time keeps the coordinate arrays small for 1 mm grids.
    for k in range(shape[2]):
        plane[2] = k
        coords = (voxel_map @ plane)[:3]
        values = ndimage.map_coordinates(
            data, coords, order=order, mode="constant", cval=0.0, prefilter=False
        )
        out[:, :, k] = values.reshape(shape[0], shape[1])
    return out
