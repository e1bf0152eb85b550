"""Where a slice sits and what contrast it is, from sidecars, affines, file names and prompts."""

import numpy as np
import pytest

from dallebrain.anomaly.attributes import SliceAttributes, from_affine, from_prompt, from_sidecar
from dallebrain.data.grid import prepared_grid, slice_affine


@pytest.mark.parametrize("orientation,index,level", [("axial", 70, 18.0), ("coronal", 60, -24.0),
                                                      ("sagittal", 40, -36.0)])
def test_plane_and_level_come_back_from_a_slice_affine(orientation, index, level):
    grid = prepared_grid(128)
    a = from_affine(slice_affine(grid, orientation, index))
    assert a.orientation == orientation
    assert a.slice_mm == pytest.approx(level)
    assert grid.level_mm(orientation, index) == pytest.approx(level)


def test_an_oblique_or_unplaced_affine_gives_no_position():
    assert from_affine(np.diag([1.5, 1.5, 1.5, 1.0])).orientation is None  # `generate` could not place it
    tilt = np.radians(30)
    oblique = np.eye(4)
    oblique[:3, 2] = [0, np.sin(tilt), np.cos(tilt)]
    oblique[:3, 3] = [1, 2, 3]
    assert from_affine(oblique).orientation is None


def test_sidecars_of_generate_and_of_bids_are_read_and_gaps_filled_in_order():
    generated = {"parsed_prompt": {"orientation": "axial", "slice_mm": 18.0, "modality": "FLAIR", "age": 70.0,
                                   "sex": "M", "field_strength": None}}
    a = from_sidecar(generated)
    assert (a.orientation, a.slice_mm, a.modality, a.age, a.sex) == ("axial", 18.0, "FLAIR", 70.0, "M")
    bids = from_sidecar({"MagneticFieldStrength": 3, "modality": "T2w"})
    merged = bids.merged(from_prompt("coronal T1 slice at y = -20 mm"))
    assert merged.modality == "T2w"  # the sidecar wins over the prompt
    assert (merged.orientation, merged.slice_mm, merged.field_strength) == ("coronal", -20.0, 3.0)


def test_check_refuses_in_one_line_what_a_detector_cannot_do_without():
    with pytest.raises(ValueError, match="modality unknown") as info:
        SliceAttributes("axial", 10.0, None).check("x.png")
    assert "\n" not in str(info.value) and "--prompt" in str(info.value)
    with pytest.raises(ValueError, match="outside the head"):
        SliceAttributes("axial", 400.0, "T1w").check("x.png")


def test_the_healthy_prompt_names_the_slice_own_plane_level_and_contrast():
    prompt = SliceAttributes("axial", 18.0, "FLAIR", age=70.0, sex="F").healthy_prompt()
    parsed = from_prompt(prompt)
    assert (parsed.orientation, parsed.slice_mm, parsed.modality, parsed.age, parsed.sex) == \
        ("axial", 18.0, "FLAIR", 70.0, "F")
    assert "healthy" in prompt
