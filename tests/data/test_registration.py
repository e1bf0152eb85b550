"""Volume checks, ITK/NIfTI geometry, N4 and affine registration on small volumes (3 mm MNI, 3-4 mm heads)."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fixtures_cohorts import head_affine, head_volume, write_analyze, write_nifti

from dallebrain.data import registration as reg
from dallebrain.data import volume_io


def _rotation(axis: int, degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    i, j = [k for k in range(3) if k != axis]
    out = np.eye(4)
    out[i, i] = out[j, j] = np.cos(angle)
    out[i, j], out[j, i] = -np.sin(angle), np.sin(angle)
    return out


@pytest.fixture(scope="module")
def mni_3mm() -> nib.Nifti1Image:
    """nilearn's MNI152 2009a T1 template block-averaged to 3 mm (read from the wheel, never fetched)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("nilearn not installed")
    path = (
        Path(spec.submodule_search_locations[0])
        / "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    )
    img = nib.load(path)
    data = img.get_fdata(dtype=np.float32)
    f = 3
    n = [s // f * f for s in data.shape]
    data = data[: n[0], : n[1], : n[2]].reshape(n[0] // f, f, n[1] // f, f, n[2] // f, f).mean((1, 3, 5))
    # A 3-voxel block's centre is its middle voxel: index 3i + 1 of the 1 mm grid.
    block = np.diag([f, f, f, 1.0])
    block[:3, 3] = (f - 1) / 2
    return nib.Nifti1Image(data, img.affine @ block)


# ------------------------------------------------------------------ load_volume
def test_load_volume_rejects_truncated_gz(tmp_path):
    path = write_nifti(tmp_path / "cut.nii.gz")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(volume_io.VolumeError, match="unreadable or truncated"):
        volume_io.load_volume(path)


def test_load_volume_rejects_truncated_analyze_img(tmp_path):
    header = write_analyze(tmp_path / "OAS1_0001_MR1_mpr-1_anon.hdr")
    image = header.with_suffix(".img")
    image.write_bytes(image.read_bytes()[:1000])
    with pytest.raises(volume_io.VolumeError, match="unreadable or truncated"):
        volume_io.load_volume(header)


def test_load_volume_rejects_garbage(tmp_path):
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header" * 3))
    with pytest.raises(volume_io.VolumeError, match="junk.nii.gz: unreadable"):
        volume_io.load_volume(path)


def test_load_volume_rejects_4d_but_accepts_single_volume_4d(tmp_path):
    head = head_volume()
    series = write_nifti(tmp_path / "series.nii.gz", np.stack([head, head], axis=-1), head_affine())
    with pytest.raises(volume_io.VolumeError, match="one 3-D volume"):
        volume_io.load_volume(series)
    single = write_nifti(tmp_path / "single.nii.gz", head[..., None], head_affine())
    assert volume_io.load_volume(single).shape == head.shape


@pytest.mark.parametrize(
    ("values", "reason"),
    [("nan", "NaN or infinite"), ("inf", "NaN or infinite"), ("zeros", "constant"), ("ones", "constant")],
)
def test_load_volume_rejects_bad_values(tmp_path, values, reason):
    data = head_volume()
    if values in ("nan", "inf"):
        data[10, 10, 10] = float(values)
    else:
        data[:] = 0 if values == "zeros" else 1
    path = write_nifti(tmp_path / f"{values}.nii.gz", data)
    with pytest.raises(volume_io.VolumeError, match=reason):
        volume_io.load_volume(path)


@pytest.mark.parametrize(
    ("shape", "voxel_mm"),
    [((40, 48, 40), 1.0), ((40, 48, 40), 12.0), ((40, 48, 20), 8.0)],
    ids=["40mm", "480mm", "20-voxels"],
)
def test_load_volume_rejects_fov_not_a_head(tmp_path, shape, voxel_mm):
    path = write_nifti(tmp_path / "fov.nii.gz", head_volume(shape), head_affine(voxel_mm, shape))
    with pytest.raises(volume_io.VolumeError, match="is not a head"):
        volume_io.load_volume(path)


def test_load_volume_reorients_las_to_ras_keeping_world(tmp_path):
    data = head_volume()
    landmark = (7, 30, 22)
    data[landmark] = 1000.0
    affine = np.diag([-4.0, 4.0, 4.0, 1.0])  # LAS, as most scanners and FSL write
    affine[:3, 3] = [80.0, -100.0, -70.0]
    img = volume_io.load_volume(write_nifti(tmp_path / "las.nii.gz", data, affine))
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert img.get_data_dtype() == np.float32
    new_index = np.unravel_index(np.argmax(img.get_fdata()), img.shape)
    world_before = affine @ [*landmark, 1]
    world_after = img.affine @ [*new_index, 1]
    np.testing.assert_allclose(world_after, world_before)
    assert new_index[0] == data.shape[0] - 1 - landmark[0]


def test_load_volume_reads_analyze_pair(tmp_path):
    path = write_analyze(tmp_path / "OAS1_0001_MR1_mpr-1_anon.hdr")
    img = volume_io.load_volume(path)
    assert img.shape == head_volume().shape
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")


# ------------------------------------------------------------------ geometry
def test_sitk_from_nib_matches_nibabel_world():
    data = head_volume((32, 36, 34))
    affine = _rotation(2, 20) @ _rotation(0, -10) @ np.diag([-2.0, 2.5, 3.0, 1.0])  # oblique LAS-ish
    affine[:3, 3] = [90.0, -120.0, -60.0]
    img = nib.Nifti1Image(data, affine)
    image = reg.sitk_from_nib(img)
    for index in [(0, 0, 0), (31, 2, 5), (10, 35, 33)]:
        ras = (affine @ [*index, 1])[:3]
        lps = np.asarray(image.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(lps, ras * [-1, -1, 1], atol=1e-6)
        assert image.GetPixel(index) == pytest.approx(float(data[index]))
    np.testing.assert_allclose(reg.nib_affine_from_sitk(image), affine, atol=1e-6)


def test_resample_to_identity_and_labels():
    data = head_volume()
    img = nib.Nifti1Image(data, head_affine())
    same = reg.resample_to(img, np.eye(4), data.shape, img.affine)
    np.testing.assert_allclose(same, data, atol=1e-4)
    labels = nib.Nifti1Image((data > 80).astype(np.int16), head_affine())
    shift = np.eye(4)
    shift[0, 3] = 8.0  # sample 2 voxels further along x
    moved = reg.resample_to(labels, shift, data.shape, img.affine, order=0)
    assert moved.dtype == np.int16
    np.testing.assert_array_equal(moved[:-2], np.asarray(labels.dataobj)[2:])


# ------------------------------------------------------------------ N4
def test_n4_removes_smooth_bias():
    shape = (64, 72, 64)
    data = head_volume(shape, seed=1)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    bias = np.exp(0.25 * grid[0] - 0.2 * grid[1] ** 2 + 0.15 * grid[2]).astype(np.float32)  # about +-30 %
    affine = head_affine(3.0, shape)
    inner = (((grid / np.array([0.5, 0.55, 0.45])[:, None, None, None]) ** 2).sum(0)) < 1

    def cv(values):
        return values[inner].std() / values[inner].mean()

    corrected = reg.n4_bias_correct(nib.Nifti1Image(data * bias, affine))
    np.testing.assert_array_equal(corrected.affine, affine)
    assert cv(corrected.get_fdata()) < 0.7 * cv(data * bias)


# ------------------------------------------------------------------ registration
def _moving_from(fixed: nib.Nifti1Image, truth: np.ndarray, contrast=None) -> nib.Nifti1Image:
    """The fixed image seen through `truth` on another grid: LAS, 3.2 mm, shifted field of view."""
    shape = (66, 76, 62)
    affine = np.diag([-3.2, 3.2, 3.2, 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2) + [0.0, -18.0, 8.0]
    data = reg.resample_to(fixed, np.linalg.inv(truth), shape, affine)
    return nib.Nifti1Image(contrast(data) if contrast else data, affine)


def _landmark_error(fixed: nib.Nifti1Image, found: np.ndarray, truth: np.ndarray) -> float:
    data = fixed.get_fdata()
    ijk = np.argwhere(data > 0.5 * data.max())[::7]  # brain voxels of the template
    points = fixed.affine @ np.c_[ijk, np.ones(len(ijk))].T
    return float(np.linalg.norm((found @ points - truth @ points)[:3], axis=0).mean())


def _truth() -> np.ndarray:
    truth = _rotation(0, 8) @ _rotation(2, -5) @ np.diag([1.05, 0.92, 0.98, 1.0])
    truth[:3, 3] = [6.0, -10.0, 5.0]
    return truth


def test_register_affine_recovers_known_transform(mni_3mm):
    truth = _truth()
    found = reg.register_affine(_moving_from(mni_3mm, truth), mni_3mm)
    assert _landmark_error(mni_3mm, found, truth) < 2.0


def test_register_affine_across_contrasts_with_mask(mni_3mm):
    """Mutual information: an inverted-contrast (T2-like) image against the T1 template."""
    truth = _truth()
    template = mni_3mm.get_fdata()
    head = template > 0.1 * template.max()

    def t2_like(data):
        return np.where(data > 0.1 * template.max(), 1.3 * template.max() - data, 0.0).astype(np.float32)

    found = reg.register_affine(_moving_from(mni_3mm, truth, t2_like), mni_3mm, fixed_mask=head)
    assert _landmark_error(mni_3mm, found, truth) < 2.0


def test_register_affine_rejects_unknown_dof(mni_3mm):
    with pytest.raises(ValueError, match="degrees_of_freedom"):
        reg.register_affine(mni_3mm, mni_3mm, degrees_of_freedom=9)
