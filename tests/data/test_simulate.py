import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from dallebrain.data.anatomy import AgeingModel, exponentiate, make_anatomy
from dallebrain.data.mr_physics import csf_null_ti, draw_sequence, tissue_signals
from dallebrain.data.simulate import (
    PARTICIPANT_COLUMNS,
    SimulationOptions,
    parse_contrasts,
    simulate_cohort,
    synthesize,
)
from testing_constants import TINY_GRID

# No individual variation: only age and sex act, so trends can be checked on a handful of subjects.
FIXED = AgeingModel(icv_cv=0.0, tissue_cv=0.0, ventricle_log_sd=0.0)


def _volumes(age, sex, seed=0):
    anatomy, _ = make_anatomy(TINY_GRID, age, sex, np.random.default_rng(seed), FIXED)
    return anatomy.volumes_ml()


def test_cohort_files_and_participants(tiny_cohort):
    table = pd.read_csv(tiny_cohort / "participants.tsv", sep="\t")
    assert list(table.columns) == PARTICIPANT_COLUMNS
    assert len(table) == 4 and table["participant_id"].is_unique
    assert table["age"].between(18, 90).all() and set(table["sex"]) <= {"F", "M"}
    assert set(table["field_strength"]) <= {1.5, 3.0}
    for sid in table["participant_id"]:
        anat = tiny_cohort / sid / "anat"
        for suffix in ("T1w", "T2w", "PDw", "FLAIR", "dseg", "atlas-Neuromorphometrics_dseg"):
            img = nib.load(anat / f"{sid}_{suffix}.nii.gz")
            np.testing.assert_allclose(img.affine, TINY_GRID.affine)
        sidecar = json.loads((anat / f"{sid}_T2w.json").read_text())
        assert sidecar["MagneticFieldStrength"] in (1.5, 3.0) and sidecar["EchoTime"] > 0.08


def test_volumes_in_table_are_measured_on_the_images(tiny_cohort):
    table = pd.read_csv(tiny_cohort / "participants.tsv", sep="\t")
    row = table.iloc[0]
    sid = row["participant_id"]
    seg = np.asarray(nib.load(tiny_cohort / sid / "anat" / f"{sid}_dseg.nii.gz").dataobj)
    voxel_ml = TINY_GRID.spacing_mm ** 3 / 1000
    # Hard labels vs partial volumes: agree within 10 %.
    assert (seg > 0).sum() * voxel_ml == pytest.approx(row["icv_ml"], rel=0.1)
    assert (seg == 2).sum() * voxel_ml == pytest.approx(row["gm_ml"], rel=0.15)
    assert row["nwbv"] == pytest.approx((row["gm_ml"] + row["wm_ml"]) / row["icv_ml"], rel=1e-3)


@pytest.mark.parametrize("field", [1.5, 3.0])
@pytest.mark.parametrize("modality, order", [
    ("T1w", ("wm", "gm", "csf")), ("T2w", ("csf", "gm", "wm")),
    ("FLAIR", ("gm", "wm", "csf")), ("PDw", ("gm", "wm")),
])
def test_contrast_tissue_order(modality, order, field):
    """T1: WM > GM > CSF; T2: CSF bright; FLAIR: CSF dark, GM brighter than WM; PD: GM > WM.
    Measured on voxels that are at least 80 % one tissue (3 mm voxels are mostly partial volume)."""
    rng = np.random.default_rng(3)
    anatomy, _ = make_anatomy(TINY_GRID, 40, "F", rng, FIXED)
    for _trial in range(3):  # both T1w sequence kinds get drawn
        seq = draw_sequence(modality, field, rng)
        image = synthesize(anatomy, seq, field, rng, bias_strength=0.2, noise_fraction=0.02,
                           bias_field=np.zeros(TINY_GRID.shape, np.float32))
        means = [np.median(image[getattr(anatomy, t) > 0.8]) for t in order]
        assert all(a > b for a, b in zip(means, means[1:], strict=False)), (seq, means)


def test_flair_nulls_csf_for_any_tr():
    for field in (1.5, 3.0):
        seq = draw_sequence("FLAIR", field, np.random.default_rng(1))
        s = tissue_signals(seq, field)
        assert s["csf"] < 0.01 * s["gm"]
    assert csf_null_ti(9000, 2569) == pytest.approx(2569 * np.log(2 / (1 + np.exp(-9000 / 2569))))


def test_ageing_trends_match_the_literature():
    young, old = _volumes(20, "F"), _volumes(90, "F")
    assert young["nwbv"] == pytest.approx(0.85, abs=0.02)
    assert old["nwbv"] == pytest.approx(0.71, abs=0.03)
    mid = _volumes(50, "F")
    assert young["nwbv"] > mid["nwbv"] > old["nwbv"]
    assert young["lateral_ventricles_ml"] < mid["lateral_ventricles_ml"] < old["lateral_ventricles_ml"]
    assert old["lateral_ventricles_ml"] > 2.5 * young["lateral_ventricles_ml"]
    # grey matter falls from early adulthood, white matter only after about 45
    at40 = _volumes(40, "F")
    assert at40["gm_ml"] / at40["icv_ml"] < young["gm_ml"] / young["icv_ml"] - 0.01
    assert at40["wm_ml"] / at40["icv_ml"] == pytest.approx(young["wm_ml"] / young["icv_ml"], abs=0.01)


def test_men_have_about_ten_percent_larger_icv():
    ratio = _volumes(30, "M")["icv_ml"] / _volumes(30, "F")["icv_ml"]
    assert ratio == pytest.approx(1538 / 1393, rel=0.02)


def test_deformations_are_diffeomorphic():
    rng = np.random.default_rng(0)
    from scipy import ndimage

    velocity = np.stack([ndimage.gaussian_filter(rng.standard_normal((24, 24, 24)), 3) for _ in range(3)])
    velocity *= 6 / np.abs(velocity).max()  # 6 voxels: a plain displacement this large would fold
    disp = exponentiate(velocity.astype(np.float32))
    jac = np.stack([np.stack(np.gradient(disp[i]), 0) for i in range(3)]) + np.eye(3)[:, :, None, None, None]
    det = np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1))[2:-2, 2:-2, 2:-2])
    assert det.min() > 0


def test_same_seed_same_subject_and_resume(tmp_path, tiny_cohort):
    options = SimulationOptions(subjects=2, seed=7, contrasts=("T1w",), grid=TINY_GRID)
    simulate_cohort(tmp_path, options, progress=False)
    ref = np.asarray(nib.load(tiny_cohort / "sub-0002/anat/sub-0002_T1w.nii.gz").dataobj)
    again = np.asarray(nib.load(tmp_path / "sub-0002/anat/sub-0002_T1w.nii.gz").dataobj)
    np.testing.assert_array_equal(ref, again)  # same seed and index: same subject, whatever the run
    # A killed run leaves a temporary folder, or a subject folder without its record: both are redone.
    (tmp_path / ".tmp-sub-0003-deadbeef").mkdir()
    (tmp_path / "sub-0002" / "sub-0002_simulation.json").unlink()
    table = simulate_cohort(tmp_path, SimulationOptions(3, 7, ("T1w",), TINY_GRID), progress=False)
    assert list(table["participant_id"]) == ["sub-0001", "sub-0002", "sub-0003"]
    assert not list(tmp_path.glob(".tmp-*"))
    np.testing.assert_array_equal(ref, np.asarray(nib.load(tmp_path / "sub-0002/anat/sub-0002_T1w.nii.gz").dataobj))


def test_parse_contrasts():
    assert parse_contrasts("t1, FLAIR") == ("T1w", "FLAIR")
    with pytest.raises(ValueError, match="unknown contrast"):
        parse_contrasts("t1,dwi")
