"""A short prompt is encoded in the form the model was trained on (pipelines/caption_form.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_inprocess import run_cli
from dallebrain.api import load_pipeline
from dallebrain.data.captions import SliceFacts, build_captions
from dallebrain.data.grid import VolumeGrid, grid_in_info
from dallebrain.pipelines.caption_form import (
    TABLE,
    caption_form,
    compute_structures_table,
    structures_table,
    words_left_out,
)

SHORT = "axial FLAIR MRI slice of a healthy 20-year-old woman at the level of the lateral ventricles"


@pytest.fixture(scope="module")
def shipped_grid() -> VolumeGrid:
    g = json.loads(TABLE.read_text())["grid"]
    return VolumeGrid(tuple(g["shape"]), g["spacing_mm"], tuple(g["origin_mm"]))


def test_a_short_prompt_becomes_the_canonical_caption_of_what_it_states(shipped_grid):
    text = caption_form(SHORT, shipped_grid)
    levels = dict(structures_table(shipped_grid)["axial"])
    expected = build_captions(SliceFacts(orientation="axial", slice_mm=23.0, modality="FLAIR", age=20.0, sex="F",
                                         structures=levels[24.0]), 1)[0]  # 24: the kept level nearest to 23
    assert text == expected
    assert text.startswith("Axial FLAIR brain MRI of a healthy 20-year-old woman at the level of the lateral "
                           "ventricles (z = +23 mm), showing the ")
    assert "lateral ventricle" in text.split("showing")[1]
    # what the prompt states carries over: field, the sagittal side, the volume descriptors
    sagittal = caption_form("sagittal T1 slice of a 45 year old man through the left insula at 3T, enlarged "
                            "ventricles", shipped_grid)
    assert "Sagittal T1-weighted" in sagittal and "(x = -36 mm)" in sagittal and "3 T" in sagittal
    assert "lateral ventricles large for age" in sagittal and "45-year-old man" in sagittal


@pytest.mark.parametrize("prompt", [
    "axial T1 brain",  # no level
    "brain MRI at the level of the lateral ventricles, 30-year-old woman",  # no contrast
    "T2-weighted slice of a healthy 30-year-old man",  # no plane, no level
    "Axial FLAIR brain MRI of a healthy 18-year-old woman at the level of the lateral ventricles (z = +24 mm), "
    "1.5 T, showing the middle frontal gyrus.",  # a caption already: sent as written
    "Brain MR image, axial slice at z = +24 mm, FLAIR; healthy woman, age 18; middle frontal gyrus visible.",
])
def test_prompts_that_stay_as_written(prompt, shipped_grid):
    assert caption_form(prompt, shipped_grid) is None


def test_no_grid_no_rewrite():
    assert caption_form(SHORT, None) is None
    assert grid_in_info({}) is None
    assert grid_in_info({"grid": {"shape": [64, 64, 64], "spacing_mm": 3.0, "origin_mm": [-96, -114, -87]}}) == \
        VolumeGrid((64, 64, 64), 3.0, (-96.0, -114.0, -87.0))


def test_the_shipped_table_is_the_template_atlas_on_the_shipped_grid(shipped_grid):
    """The package's table (read instead of resampling the atlas at every start-up) is what the atlas gives."""
    from dallebrain.api import default_model
    from dallebrain.pipelines.folder import model_grid

    assert model_grid(default_model()) == shipped_grid
    shipped = json.loads(TABLE.read_text())["planes"]
    computed = compute_structures_table(shipped_grid)
    assert {p: [[mm, list(n)] for mm, n in rows] for p, rows in computed.items()} == shipped


def test_the_pipeline_encodes_the_caption_form_and_records_it(tiny_pipeline):
    pipe = load_pipeline(tiny_pipeline, device="cpu")
    assert grid_in_info(pipe.info) is not None  # the tiny model's dallebrain.json gives its grid
    rewritten = pipe(SHORT, seed=1, steps=2)
    text = rewritten.settings["prompt_as_encoded"]
    assert text == caption_form(SHORT, grid_in_info(pipe.info)) and text != SHORT
    pipe.prompt_form = "literal"
    literal = pipe(SHORT, seed=1, steps=2)
    assert "prompt_as_encoded" not in literal.settings
    assert np.abs(literal.images - rewritten.images).mean() > 1e-4  # the words the text encoder gets changed
    # the same as sending the caption itself, as written
    np.testing.assert_allclose(pipe(text, seed=1, steps=2).images, rewritten.images, atol=1e-6)
    pipe.prompt_form = "caption"
    np.testing.assert_allclose(pipe.sample([SHORT], [1], steps=2)[0], rewritten.images[0], atol=1e-5)
    pipe.prompt_form = "verbatim"
    with pytest.raises(ValueError, match="prompt_form must be one of caption, literal"):
        pipe(SHORT, seed=1, steps=2)


def test_generate_records_the_encoded_text_and_literal_prompt_turns_it_off(tiny_pipeline, tmp_path):
    for name, extra in (("caption", []), ("literal", ["--literal-prompt"])):
        result = run_cli("generate", SHORT, "--model", str(tiny_pipeline), "--steps", "2", "--out", name, *extra,
                         cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    caption = json.loads((tmp_path / "caption" / "seed-000000.json").read_text())
    literal = json.loads((tmp_path / "literal" / "seed-000000.json").read_text())
    assert caption["prompt"] == literal["prompt"] == SHORT
    assert caption["prompt_as_encoded"].startswith("Axial FLAIR brain MRI of a healthy 20-year-old woman")
    assert "prompt_as_encoded" not in literal


@pytest.mark.parametrize("extra, left_out", [
    ("", []),
    (", high resolution, very sharp", ["high", "resolution", "very", "sharp"]),
    (", 3T, large ventricles", []),  # read by the parser: in the caption
    (", elderly", ["elderly"]),  # an age word the parser does not read: the caption says "20-year-old"
])
def test_words_the_caption_form_leaves_out_are_named(shipped_grid, extra, left_out):
    prompt = SHORT + extra
    assert words_left_out(prompt, caption_form(prompt, shipped_grid)) == left_out


def test_the_left_out_words_are_warned_about_on_stderr_and_in_the_sidecar(tiny_pipeline, tmp_path):
    prompt = SHORT + ", high resolution"
    pipe = load_pipeline(tiny_pipeline, device="cpu")
    (warning,) = [w for w in pipe(prompt, seed=1, steps=2).warnings if "caption form" in w]
    assert "not read: high, resolution;" in warning and "--literal-prompt" in warning
    assert not any("caption form" in w for w in pipe(SHORT, seed=1, steps=2).warnings)
    result = run_cli("generate", prompt, "--model", str(tiny_pipeline), "--steps", "2", "--out", "o", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning: prompt encoded in caption form" in result.stderr and "high, resolution" in result.stderr
    sidecar = json.loads((tmp_path / "o" / "seed-000000.json").read_text())
    assert any("high, resolution" in w for w in sidecar["warnings"])
    literal = run_cli("generate", prompt, "--model", str(tiny_pipeline), "--steps", "2", "--out", "l",
                      "--literal-prompt", cwd=tmp_path)
    assert literal.returncode == 0 and "caption form" not in literal.stderr


def test_the_unclip_prior_reads_the_caption_form_too(tiny_unclip, shipped_grid, tmp_path):
    """The prior was trained on captions, as the LDM's text encoder was: a short prompt reaches it in caption form
    (recorded as the LDM records it), and sending that caption as written gives the same slices."""
    import shutil

    folder = tmp_path / "unclip"
    shutil.copytree(tiny_unclip, folder)
    grid = {"shape": list(shipped_grid.shape), "spacing_mm": shipped_grid.spacing_mm,
            "origin_mm": list(shipped_grid.origin_mm)}
    (folder / "dallebrain.json").write_text(json.dumps({"grid": grid}))
    pipe = load_pipeline(folder, route="unclip", device="cpu")
    rewritten = pipe(SHORT, seed=1, steps=2)
    text = rewritten.settings["prompt_as_encoded"]
    assert text == caption_form(SHORT, shipped_grid) and text != SHORT
    np.testing.assert_allclose(pipe(text, seed=1, steps=2).images, rewritten.images, atol=1e-6)
    np.testing.assert_allclose(pipe.sample([SHORT], [1], steps=2)[0], rewritten.images[0], atol=1e-5)
    frames = pipe.interpolate(SHORT, rewritten.images[0], n_frames=2, seed=1, steps=2)
    assert frames.settings["ends_as_encoded"] == [text, None]  # an image end has no text
    embeds = pipe.image_embeds_of_prompt(SHORT, [1])
    pipe.prompt_form = "literal"
    literal = pipe(SHORT, seed=1, steps=2)
    assert "prompt_as_encoded" not in literal.settings
    assert (pipe.image_embeds_of_prompt(SHORT, [1]) - embeds).abs().max() > 1e-4
