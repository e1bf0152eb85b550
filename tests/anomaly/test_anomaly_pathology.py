"""Pathology prompts: the parser, the place and size of the drawn lesion, and `dallebrain generate-lesion`."""

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dallebrain.anomaly.attributes import from_prompt
from dallebrain.anomaly.lesion_prompts import find_lesion, healthy_text, is_lesion_prompt
from dallebrain.anomaly.paste import slice_maps
from dallebrain.anomaly.pathology import draw_lesions, plan
from dallebrain.data.grid import prepared_grid

GRID = prepared_grid(64)


@pytest.mark.parametrize("prompt,expected", [
    ("axial FLAIR of a 70-year-old man with periventricular white-matter hyperintensities (Fazekas 2)",
     {"kind": "wmh", "fazekas": 2, "size_mm": None}),
    ("axial T2 of a woman with a 30 mm tumour in the right temporal lobe",
     {"kind": "tumour", "size_mm": 30.0, "side": "right", "region": "temporal lobe"}),
    ("coronal T1w with a 4 cm glioblastoma in the left frontal lobe", {"kind": "tumour", "size_mm": 40.0,
                                                                       "side": "left", "region": "frontal lobe"}),
    ("axial FLAIR with a chronic infarct in the left MCA territory", {"kind": "infarct", "side": "left",
                                                                      "region": "middle cerebral artery"}),
    ("axial FLAIR, 3T, with 6 MS lesions", {"kind": "ms", "count": 6}),
])
def test_lesion_words_place_and_size_are_read(prompt, expected):
    request = find_lesion(prompt)
    assert request is not None and is_lesion_prompt(prompt)
    for key, value in expected.items():
        assert getattr(request, key) == value, key


def test_prompts_without_a_lesion_are_left_to_the_healthy_model():
    for prompt in ("axial T2-weighted slice of a healthy 70-year-old woman", "axial FLAIR, TE 100 ms, TR 9000 ms",
                   "coronal T1 slice through the temporal lobes at y = -20 mm"):
        assert find_lesion(prompt) is None and not is_lesion_prompt(prompt)


def test_the_healthy_text_drops_the_lesion_and_keeps_the_slice():
    prompt = "axial T2-weighted slice of a 60-year-old woman with a 3 cm tumour in the left frontal lobe at z = 30 mm"
    request = find_lesion(prompt)
    assert request.size_mm == 30.0  # the "30 mm" of the position is not the size
    text = healthy_text(prompt, request)
    assert "tumour" not in text
    a = from_prompt(text)
    assert (a.orientation, a.slice_mm, a.modality, a.age, a.sex) == ("axial", 30.0, "T2w", 60.0, "F")


@pytest.mark.parametrize("prompt,words", [("axial T2 with a 200 mm tumour", "outside what can be drawn"),
                                          ("axial FLAIR with WMH (Fazekas 5)", "Fazekas grades"),
                                          ("axial FLAIR with 10 mm white matter hyperintensities", "Fazekas grade"),
                                          ("axial T2 with a tumour in the MCA territory", "places an infarct")])
def test_requests_that_cannot_be_drawn_are_refused_in_one_line(prompt, words):
    with pytest.raises(ValueError, match=words) as info:
        find_lesion(prompt)
    assert "\n" not in str(info.value)


def _template_slice(attributes) -> np.ndarray:
    index = GRID.index_of(attributes.orientation, attributes.slice_mm)
    maps = slice_maps(GRID, attributes.orientation, index)
    return np.clip(0.8 * maps.gm + 0.6 * maps.wm, 0, 1).astype(np.float32)


def test_drawn_lesions_lie_in_the_stated_region_at_the_stated_size():
    """The issue's targets on the renderer: >= 90 % of prompts put their lesion in the stated region (most of
    its core inside the region's atlas map) with a diameter within 30 % of the stated one."""
    prompts = [f"axial T2-weighted slice with a {size} mm tumour in the {side} {lobe}"
               for size, side, lobe in ((20, "left", "frontal lobe"), (30, "right", "temporal lobe"),
                                        (25, "left", "parietal lobe"), (20, "right", "occipital lobe"),
                                        (40, "right", "frontal lobe"), (15, "left", "temporal lobe"))]
    prompts += [f"coronal FLAIR with a {size} mm infarct in the {side} {territory}"
                for size, side, territory in ((30, "left", "middle cerebral artery"),
                                              (20, "right", "posterior cerebral artery"))]
    good, total = 0, 0
    for k, prompt in enumerate(prompts):
        request, attributes, notes = plan(prompt, GRID, seed=k)
        assert notes and "level" in notes[-1]  # the prompt gave no level: one was chosen and said so
        images = np.stack([_template_slice(attributes)] * 2)
        for item in draw_lesions(images, [k, k + 100], request, attributes, GRID):
            m = item.record["measured"]
            total += 1
            good += m["in_region"] >= 0.5 and abs(m["core_diameter_mm"] / request.size_mm - 1) <= 0.3
    assert good / total >= 0.9, (good, total)


def test_plan_refuses_a_prompt_without_lesion_or_contrast():
    with pytest.raises(ValueError, match="names no lesion"):
        plan("axial T2 slice of a healthy adult", GRID, 0)
    with pytest.raises(ValueError, match="name the contrast"):
        plan("axial slice with a 20 mm tumour in the left frontal lobe", GRID, 0)


def test_generate_lesion_writes_the_slice_and_its_mask_on_one_affine(tiny_pipeline, tmp_path):
    from dallebrain.cli import app

    out = tmp_path / "les"
    prompt = "axial T2-weighted slice of a 50-year-old man with a 25 mm tumour in the right frontal lobe"
    result = CliRunner().invoke(app, ["generate-lesion", prompt, "--n", "2", "--steps", "2", "--model",
                                      str(tiny_pipeline), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for stem in ("seed-000000", "seed-000001"):
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["requested"]["kind"] == "tumour" and record["requested"]["size_mm"] == 25.0
        assert "tumour" not in record["prompt_used_for_the_healthy_slice"]
        mask = np.asarray(Image.open(out / f"{stem}_lesion_mask.png"))
        assert set(np.unique(mask)) <= {0, 4, 5, 6} and (mask == 4).any()
        image_nii, mask_nii = nib.load(out / f"{stem}.nii.gz"), nib.load(out / f"{stem}_lesion_mask.nii.gz")
        assert np.allclose(image_nii.affine, mask_nii.affine)
        assert np.array_equal(np.asarray(mask_nii.dataobj)[..., 0], mask)
        assert record["measured"]["core_area_mm2"] == pytest.approx(float(np.isin(mask, (4, 5)).sum()) * 9.0)
    again = CliRunner().invoke(app, ["generate-lesion", prompt, "--model", str(tiny_pipeline), "--out", str(out)])
    assert again.exit_code == 2 and "exists" in again.output
    for bad, words, more in (("axial T2 of a healthy adult", "names no lesion", []),
                             ("axial slice with a tumour", "contrast", []),
                             ("axial FLAIR with WMH (Fazekas 7)", "Fazekas", []),
                             (prompt, "steps", ["--steps", "0"]),  # once taken as "the default"
                             (prompt, "guidance", ["--guidance", "inf"])):
        result = CliRunner().invoke(app, ["generate-lesion", bad, "--model", str(tiny_pipeline), "--out",
                                          str(tmp_path / "bad"), *more])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and words in lines[0], result.output
    assert not (tmp_path / "bad").exists()
