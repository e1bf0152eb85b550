"""A prompt's level through the model's level map (pipelines/level_map.py): the inverse of where each caption lands."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from cli_inprocess import run_cli
from dallebrain.api import load_pipeline
from dallebrain.data.grid import grid_in_info
from dallebrain.data.prompts import parse_prompt
from dallebrain.pipelines.caption_form import caption_at, caption_form
from dallebrain.pipelines.level_map import Curve, LevelMap, fit_curve, level_map_of

SHORT = "axial FLAIR MRI slice of a healthy 20-year-old woman at z = 20 mm"


def test_the_curve_finds_the_two_captions_whose_judged_levels_bracket_the_asked_one():
    curve = Curve((9.0, 12.0, 15.0, 18.0), (6.9, 13.3, 13.3, 16.5))
    lower, upper, w = curve.caption_for(10.1)
    assert (lower, upper) == (9.0, 12.0) and w == pytest.approx(0.5)  # 6.9 + 0.5 * 6.4
    assert curve.caption_for(16.5) == (18.0, 18.0, 0.0)
    assert curve.caption_for(6.9) == (9.0, 9.0, 0.0)
    # a flat run (12 and 15 mm both drawn at 13.3): the middle of the captions that give it
    assert curve.caption_for(13.3) == (12.0, 15.0, pytest.approx(0.5))
    assert curve.caption_for(14.9) == (15.0, 18.0, pytest.approx(0.5))
    # outside what the captions reach: no mix (the asked level's own caption)
    assert curve.caption_for(6.0) is None and curve.caption_for(17.0) is None


def test_fitting_averages_the_seeds_and_makes_the_judged_levels_non_decreasing():
    curve = fit_curve([0, 3, 6, 9], [[1.0, 3.0], [5.0, 5.0], [4.0, 4.0], [9.0, 11.0]])
    assert curve.caption_mm == (0.0, 3.0, 6.0, 9.0)
    assert curve.judged_mm == (2.0, 4.5, 4.5, 10.0)  # 5 then 4 pooled
    for bad in (([0], [[1.0]]), ([3, 0], [1.0, 2.0]), ([0, 3], [1.0, float("nan")]), ([0, 3], [1.0])):
        with pytest.raises(ValueError, match="level map"):
            fit_curve(*bad)


def test_sagittal_levels_are_mapped_as_their_distance_from_the_midline_and_keep_their_side():
    curves = {"T1w": {"sagittal": Curve((0.0, 30.0), (2.0, 32.0))}}
    level_map = LevelMap(curves)
    assert level_map.caption_for("T1w", "sagittal", 17.0) == (0.0, 30.0, pytest.approx(0.5))
    assert level_map.caption_for("T1w", "sagittal", -17.0) == (-0.0, -30.0, pytest.approx(0.5))
    assert level_map.caption_for("T2w", "sagittal", 17.0) is None  # no curve for the contrast
    assert level_map.caption_for("T1w", "axial", 17.0) is None
    assert level_map.caption_for("T1w", "sagittal", None) is None


def test_a_round_trip_through_the_model_info_and_malformed_maps_are_refused():
    level_map = LevelMap({"FLAIR": {"axial": Curve((12.0, 24.0), (14.0, 21.0))}})
    info = level_map.to_info({"seeds": 6})
    assert level_map_of({"level_map": json.loads(json.dumps(info))}) == level_map
    assert level_map_of({}) is None
    for bad in ({"curves": {"FLAIR": {"axial": {"caption_mm": [24, 12], "judged_mm": [1, 2]}}}},
                {"curves": {"FLAIR": {"axial": {"caption_mm": [12, 24], "judged_mm": [3, 2]}}}},
                {"curves": {"FLAIR": {"oblique": {"caption_mm": [12, 24], "judged_mm": [1, 2]}}}},
                {"curves": {"FLAIR": {"axial": {"caption_mm": [12, 24]}}}},
                {"curves": []}):
        with pytest.raises(ValueError, match="malformed sampling.level_map"):
            level_map_of({"level_map": bad})


@pytest.fixture()
def mapped_pipeline(tiny_pipeline, tmp_path):
    """The tiny pipeline with a level map for axial FLAIR: the slices of the 18 mm caption judged at 16 mm, those
    of the 24 mm caption at 22 mm."""
    folder = tmp_path / "mapped"
    shutil.copytree(tiny_pipeline, folder)
    info = json.loads((folder / "dallebrain.json").read_text())
    curve = LevelMap({"FLAIR": {"axial": Curve((12.0, 18.0, 24.0, 30.0), (10.0, 16.0, 22.0, 28.0))}})
    info.setdefault("sampling", {})["level_map"] = curve.to_info({"seeds": 2})
    (folder / "dallebrain.json").write_text(json.dumps(info))
    return folder


def test_the_pipeline_encodes_the_mix_of_the_two_captions_and_records_it(mapped_pipeline):
    pipe = load_pipeline(mapped_pipeline, device="cpu")
    grid, fields = grid_in_info(pipe.info), parse_prompt(SHORT)
    lower, upper = caption_at(fields, 18.0, grid), caption_at(fields, 24.0, grid)
    encoded = pipe.encode_model_text(SHORT)  # 20 mm asked: 2/3 of the way from 16 to 22
    expected = torch.lerp(pipe.encode_prompt(lower)[0], pipe.encode_prompt(upper)[0], 4 / 6)
    torch.testing.assert_close(encoded.states, expected)
    assert not encoded.truncated and encoded.text == upper and "(z = +24 mm)" in upper and "(z = +18 mm)" in lower
    assert encoded.level_map == {"asked_mm": 20.0, "caption_mm": [18.0, 24.0],
                                 "weight_upper": pytest.approx(4 / 6, abs=1e-4), "model_level_mm": 22.0,
                                 "texts": [lower, upper]}
    # the attributes and the start read the mixed level, as the map was measured (caption, attributes and start
    # at one level)
    assert encoded.conditioning == caption_at(fields, 22.0, grid)
    assert parse_prompt(encoded.conditioning).slice_mm == 22.0
    seen = []
    start_means = pipe.start_means
    pipe.start_means = lambda prompts: seen.append(list(prompts)) or start_means(prompts)
    mapped = pipe(SHORT, seed=3, steps=2)
    assert seen == [[encoded.conditioning]]  # the start (and the attributes) of the mixed level
    pipe.start_means = start_means
    assert mapped.settings["level_map"]["caption_mm"] == [18.0, 24.0]
    assert mapped.settings["prompt_as_encoded"] == upper
    np.testing.assert_allclose(pipe.sample([SHORT], [3], steps=2)[0], mapped.images[0], atol=1e-5)
    # without the map: the asked level's own caption, as before
    pipe.level_map = None
    plain = pipe(SHORT, seed=3, steps=2)
    assert "level_map" not in plain.settings and plain.settings["prompt_as_encoded"] == caption_form(SHORT, grid)
    assert np.abs(plain.images - mapped.images).mean() > 1e-5  # the text the UNet got changed
    assert pipe.encode_model_text(SHORT).conditioning == SHORT


@pytest.mark.parametrize("prompt", [
    "axial T1-weighted MRI slice of a healthy 20-year-old woman at z = 20 mm",  # no curve for T1w
    "coronal FLAIR MRI slice of a healthy 20-year-old woman at y = -20 mm",  # nor for coronal
    "axial FLAIR MRI slice of a healthy 20-year-old woman at z = 40 mm",  # beyond the judged levels
    "Axial FLAIR brain MRI of a healthy 20-year-old woman (z = +20 mm), showing the lateral ventricle.",  # a caption
])
def test_prompts_the_map_leaves_alone(mapped_pipeline, prompt):
    pipe = load_pipeline(mapped_pipeline, device="cpu")
    encoded = pipe.encode_model_text(prompt)
    assert encoded.level_map is None and encoded.conditioning == prompt
    assert "level_map" not in pipe(prompt, seed=0, steps=2).settings


def test_literal_prompts_bypass_the_map_and_the_sidecar_records_it(mapped_pipeline, tmp_path):
    for name, extra in (("mapped", []), ("literal", ["--literal-prompt"])):
        result = run_cli("generate", SHORT, "--model", str(mapped_pipeline), "--steps", "2", "--out", name, *extra,
                         cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    mapped = json.loads((tmp_path / "mapped" / "seed-000000.json").read_text())
    literal = json.loads((tmp_path / "literal" / "seed-000000.json").read_text())
    assert mapped["level_map"]["asked_mm"] == 20.0 and mapped["level_map"]["caption_mm"] == [18.0, 24.0]
    assert "level_map" not in literal


def test_a_model_with_a_malformed_map_is_refused_in_one_line(mapped_pipeline, tmp_path):
    info = json.loads((mapped_pipeline / "dallebrain.json").read_text())
    info["sampling"]["level_map"]["curves"]["FLAIR"]["axial"]["judged_mm"] = [3, 2, 1, 0]
    (mapped_pipeline / "dallebrain.json").write_text(json.dumps(info))
    result = run_cli("generate", SHORT, "--model", str(mapped_pipeline), "--steps", "2", "--out", "x", cwd=tmp_path)
    assert result.returncode != 0
    assert "malformed sampling.level_map" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_a_model_whose_ldm_weights_change_loses_its_level_map(mapped_pipeline):
    """Measured on the old UNet's slices, the map goes with the LDM's grey-level maps (recipes' model_with_parts,
    gpu_ldm_finetune's install); a change to the unCLIP route alone keeps it."""
    from dallebrain.pipelines.grey_levels import drop_grey_level_maps

    drop_grey_level_maps(mapped_pipeline, ("unclip",))
    assert "level_map" in json.loads((mapped_pipeline / "dallebrain.json").read_text())["sampling"]
    drop_grey_level_maps(mapped_pipeline, ("ldm",))
    info = json.loads((mapped_pipeline / "dallebrain.json").read_text())
    assert "level_map" not in info["sampling"] and load_pipeline(mapped_pipeline).level_map is None


@pytest.mark.parametrize("prompt", [
    "axial FLAIR MRI slice at z = 20 mm",
    "sagittal T1 slice of a 45 year old man through the left insula at 3T, enlarged ventricles, small brain",
    "coronal PD-weighted slice of a healthy 80-year-old woman through the hippocampi, 1.5 T",
])
def test_the_conditioning_caption_states_every_attribute_of_the_prompt_but_the_level(prompt):
    """The attributes the UNet gets for a mixed level are read from the caption at that level: the same plane,
    contrast, age, sex, field and volume descriptors as the prompt, only the level moved."""
    from dallebrain.api import default_model
    from dallebrain.models.conditioning import ATTRIBUTES, prompt_attributes

    grid = grid_in_info(json.loads((default_model() / "dallebrain.json").read_text()))
    fields = parse_prompt(prompt)
    moved = prompt_attributes(caption_at(fields, fields.slice_mm + 1.3, grid))
    asked = prompt_attributes(prompt)
    assert {k: moved[k] for k in ATTRIBUTES if k != "slice_mm"} == {k: asked[k] for k in ATTRIBUTES if k != "slice_mm"}
    assert moved["slice_mm"] == pytest.approx(fields.slice_mm + 1.3)
