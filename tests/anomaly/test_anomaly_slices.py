"""Reading slices to examine onto the model's grid, and maps back onto the input's own pixels."""

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from dallebrain.anomaly.slices import read_slice
from dallebrain.data.grid import prepared_grid, slice_affine

GRID = prepared_grid(64)  # 3 mm pixels over 192 mm


def _pattern(x, y):
    """A smooth head-sized image as a function of MNI x, y (mm)."""
    inside = (x / 70) ** 2 + ((y + 18) / 90) ** 2 < 1
    return np.where(inside, 0.5 + 0.4 * np.sin(x / 15) * np.cos(y / 25), 0.0)


def _world(affine, shape):
    rows, cols = np.indices(shape, dtype=float)
    w = affine @ np.stack([rows.ravel(), cols.ravel(), np.zeros(rows.size), np.ones(rows.size)])
    return w[0].reshape(shape), w[1].reshape(shape)


def test_a_nifti_in_another_layout_and_pixel_size_lands_on_the_model_grid_and_maps_go_back(tmp_path):
    # rows run along +x, columns along -y (not the display convention), 2 mm pixels, axial z = 18 mm
    affine = np.array([[2.0, 0, 0, -100.0], [0, -2.0, 0, 80.0], [0, 0, 2.0, 18.0], [0, 0, 0, 1]])
    native = _pattern(*_world(affine, (100, 110))).astype(np.float32)
    nib.save(nib.Nifti1Image(native[:, :, None], affine), tmp_path / "scan.nii.gz")
    (tmp_path / "scan.json").write_text(json.dumps({"modality": "T2w"}))
    item = read_slice(tmp_path / "scan.nii.gz", GRID)
    assert (item.attributes.orientation, item.attributes.slice_mm, item.attributes.modality) == ("axial", 18.0, "T2w")
    scale = np.percentile(native[native > 0], 99.5)
    expected = _pattern(*_world(slice_affine(GRID, "axial", (18.0 - GRID.origin_mm[2]) / GRID.spacing_mm),
                                (64, 64))) / scale
    inner = ndimage.binary_erosion(expected > 0, iterations=2)  # away from the head's step edge
    assert np.abs(item.image - np.clip(expected, 0, 1))[inner].max() < 0.06
    back = item.to_native(item.image, GRID)
    assert back.shape == native.shape
    inner_native = ndimage.binary_erosion(native > 0, iterations=4)
    assert np.abs(back - np.clip(native / scale, 0, 1))[inner_native].max() < 0.08
    assert np.array_equal(item.native_affine, affine)


def test_a_png_named_by_prepare_needs_no_prompt_and_keeps_its_own_size(tmp_path):
    path = tmp_path / "simulated-0003_FLAIR_coronal_-024.0mm.png"
    Image.fromarray((np.random.default_rng(0).random((96, 96)) * 255).astype(np.uint8)).save(path)
    item = read_slice(path, GRID)
    assert (item.attributes.orientation, item.attributes.slice_mm, item.attributes.modality) == \
        ("coronal", -24.0, "FLAIR")
    assert item.image.shape == (64, 64) and item.native_shape == (96, 96)
    assert np.linalg.norm(item.native_affine[:3, 0]) == pytest.approx(2.0)  # 192 mm over 96 pixels
    assert item.to_native(item.image, GRID).shape == (96, 96)


def test_a_slice_nobody_describes_is_refused_in_one_line_and_a_prompt_describes_it(tmp_path):
    path = tmp_path / "slice.png"
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(path)
    with pytest.raises(ValueError, match="--prompt") as info:
        read_slice(path, GRID)
    assert "\n" not in str(info.value)
    item = read_slice(path, GRID, prompt="axial T2-weighted slice at z = 10 mm")
    assert (item.attributes.orientation, item.attributes.slice_mm, item.attributes.modality) == ("axial", 10.0, "T2w")


def test_bad_files_are_refused_in_one_line(tmp_path):
    wide = tmp_path / "wide.png"
    Image.fromarray(np.zeros((64, 80), np.uint8)).save(wide)
    volume = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 3), np.float32), np.eye(4)), volume)
    broken = tmp_path / "broken.json"
    (tmp_path / "broken.png").write_bytes(b"not a png")
    sidecar = tmp_path / "bad.png"
    Image.fromarray(np.full((64, 64), 100, np.uint8)).save(sidecar)
    (tmp_path / "bad.json").write_text("{not json")
    whole = tmp_path / "whole.nii.gz"  # a slice whose pixels are cut short: the header reads, the data do not
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((64, 64, 1)).astype(np.float32), np.eye(4)), whole)
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    for path, words in ((wide, "square"), (volume, "3-D|single-slice"), (tmp_path / "broken.png", "PNG/NIfTI"),
                        (sidecar, "sidecar"), (tmp_path / "missing.png", "not found"),
                        (cut, "cannot read NIfTI cut.nii.gz")):
        with pytest.raises(ValueError, match=words) as info:
            read_slice(path, GRID, prompt="axial T1 at z = 0 mm")
        assert "\n" not in str(info.value)
    assert not broken.exists()
