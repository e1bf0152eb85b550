import numpy as np
import pytest

from dallebrain.data.grid import extract_slice, prepared_grid, slice_affine
from dallebrain.vocab import ORIENTATIONS


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_slice_affine_places_every_pixel_where_it_came_from(orientation):
    grid = prepared_grid(32)
    # A volume whose voxels hold their own world coordinates.
    ijk = np.indices(grid.shape).reshape(3, -1)
    world = (grid.affine[:3, :3] @ ijk + grid.affine[:3, 3:4]).reshape(3, *grid.shape)
    index = 11
    aff = slice_affine(grid, orientation, index)
    rows, cols = np.indices((32, 32))
    mapped = aff[:3, :3] @ np.stack([rows.ravel(), cols.ravel(), np.zeros(rows.size)]) + aff[:3, 3:4]
    for axis in range(3):
        np.testing.assert_allclose(extract_slice(world[axis], orientation, index).ravel(), mapped[axis])


def test_radiological_display_convention():
    grid = prepared_grid(32)
    x = np.indices(grid.shape)[0].astype(float)  # grows towards the subject's right
    z = np.indices(grid.shape)[2].astype(float)  # grows upwards
    y = np.indices(grid.shape)[1].astype(float)  # grows forwards
    axial = extract_slice(x, "axial", 5)
    assert axial[0, 0] > axial[0, -1]  # subject's right on the image's left
    assert extract_slice(y, "axial", 5)[0, 0] > extract_slice(y, "axial", 5)[-1, 0]  # anterior at the top
    assert extract_slice(z, "coronal", 5)[0, 0] > extract_slice(z, "coronal", 5)[-1, 0]  # superior on top
    sag = extract_slice(y, "sagittal", 5)
    assert sag[0, 0] > sag[0, -1]  # faces left: anterior on the left


def test_default_grid_is_128_at_1_5_mm_with_mni_zero_on_the_lattice():
    grid = prepared_grid()
    assert grid.shape == (128, 128, 128) and grid.spacing_mm == 1.5
    for orientation in ORIENTATIONS:
        assert grid.level_mm(orientation, grid.index_of(orientation, 0.0)) == 0.0
    with pytest.raises(ValueError):
        prepared_grid(8)
