"""Tissue volumes: FSL_SEG label order decided by intensity, FreeSurfer label groups, GMM from priors."""

from __future__ import annotations

import numpy as np
import pytest

from dallebrain.data import volumes


def _phantom(seed: int = 0):
    """Three nested tissues on a 40^3 grid of 2 mm voxels: WM core, GM shell, CSF rim."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 40)] * 3, indexing="ij"))
    r = np.sqrt((grid**2).sum(0))
    classes = np.select([r < 0.5, r < 0.7, r < 0.85], [3, 2, 1], 0)
    t1 = np.select([classes == 3, classes == 2, classes == 1], [100.0, 70.0, 30.0], 0.0)
    return classes, (t1 + rng.normal(0, 4, t1.shape) * (classes > 0)).astype(np.float32)


def test_fsl_seg_order_is_decided_by_intensity():
    classes, t1 = _phantom()
    shuffled = np.select([classes == 1, classes == 2, classes == 3], [2, 3, 1], 0)  # CSF=2, GM=3, WM=1
    assert volumes.fsl_seg_classes(shuffled, t1) == {"csf": 2, "gm": 3, "wm": 1}
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    vol = volumes.from_fsl_seg(shuffled, t1, affine, ventricles_ml=5.0, native_per_image=0.5)
    assert vol.wm_ml == pytest.approx((classes == 3).sum() * 0.008 * 0.5)
    assert vol.icv_ml == pytest.approx((classes > 0).sum() * 0.008 * 0.5)
    assert vol.nwbv == pytest.approx(((classes == 3) | (classes == 2)).sum() / (classes > 0).sum())
    with pytest.raises(ValueError, match="3 tissue classes"):
        volumes.fsl_seg_classes(np.minimum(shuffled, 2), t1)


def test_freesurfer_groups():
    aseg = np.zeros((10, 10, 10), dtype=np.int32)
    aseg[0] = 2  # cerebral WM
    aseg[1] = 1035  # aparc cortex
    aseg[2] = 10  # thalamus
    aseg[3] = 4  # lateral ventricle
    aseg[4] = 24  # CSF
    vol = volumes.from_freesurfer(aseg, np.eye(4))
    assert (vol.wm_ml, vol.gm_ml, vol.lateral_ventricles_ml, vol.csf_ml, vol.icv_ml) == pytest.approx(
        (0.1, 0.2, 0.1, 0.2, 0.5))


def test_gmm_from_priors_recovers_classes_whatever_the_contrast():
    classes, t1 = _phantom(1)
    brain = classes > 0
    soft = {k: np.clip((classes == k) * 0.6 + 0.13, 0, 1).astype(np.float32) for k in (1, 2, 3)}
    truth = [(classes == k).sum() * 0.008 for k in (2, 3, 1)]
    for image in (t1, np.where(brain, 140.0 - t1, 0.0)):  # T1-like, then T2-like (CSF brightest)
        vol = volumes.from_intensity(image, brain, soft[2], soft[3], soft[1], classes == 1, 0.008, 1.0)
        assert [vol.gm_ml, vol.wm_ml, vol.csf_ml] == pytest.approx(truth, rel=0.05)
        assert vol.icv_ml == pytest.approx(brain.sum() * 0.008)
    vol2 = volumes.from_intensity(t1, brain, soft[2], soft[3], soft[1], classes == 1, 0.008, 1.331)
    assert vol2.icv_ml == pytest.approx(1.331 * brain.sum() * 0.008)
