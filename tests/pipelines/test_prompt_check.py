"""Prompts the healthy-brain MRI model cannot serve are refused in one line (CLI exit 2, API ValueError, web
message) before anything is made; words it will not follow are warnings on stderr and in the JSON sidecar."""

import itertools
import json
import random

import pytest
from typer.testing import CliRunner

from dallebrain.cli import app
from dallebrain.data.captions import SliceFacts, build_captions, plain_structure_name
from dallebrain.data.templates import atlas_label_names
from dallebrain.pipelines.prompt_check import COHORT_AGES, check_prompt, require_servable
from dallebrain.vocab import FIELD_STRENGTHS, MODALITIES, ORIENTATIONS

HEALTHY = "axial T2-weighted slice of a healthy 70-year-old woman at the level of the lateral ventricles"

# (prompt, words the one-line refusal must contain), 2-3 per class
REFUSED = {
    "modality": [
        ("axial CT of a brain with a large glioblastoma", "'CT' asks for CT"),
        ("axial FDG PET of a healthy 60-year-old", "'FDG' asks for PET"),
        ("axial diffusion-weighted MRI of a healthy brain", "'diffusion-weighted' asks for diffusion-weighted MRI"),
        ("coronal SWI of a 40-year-old man", "'SWI' asks for susceptibility"),
        ("MRA of the circle of Willis", "'MRA' asks for angiography"),
    ],
    "body part": [
        ("sagittal T2-weighted MRI of the lumbar spine", "'lumbar': this model makes slices of the human brain"),
        ("coronal PD-weighted knee MRI of a 30-year-old man", "'knee'"),
        ("axial T1 of a mouse brain", "'mouse'"),
    ],
    "pathology": [
        ("axial FLAIR of a 45-year-old woman with a glioblastoma", "'glioblastoma' names a pathology"),
        ("axial FLAIR of a 35-year-old woman with MS", "'MS' names a pathology"),
        ("axial T2 of a 70-year-old man after a stroke", "'stroke' names a pathology"),
        ("axial T1 with a subdural haemorrhage", "'haemorrhage' names a pathology"),
        ("axial T2, ventriculomegaly", "'ventriculomegaly' names a pathology"),
    ],
    "contradiction": [
        ("axial and coronal T1-weighted slice", "two planes (axial, coronal)"),
        ("axial T1-weighted and T2-weighted slice", "two contrasts (T1w, T2w)"),
        ("axial T1 of a man, female", "two sexes (M, F)"),
        ("axial T1 of a 30-year-old, age 70", "two ages (30, 70)"),
        ("axial T1 at 1.5 T and 3 T", "two field strengths (1.5 T, 3 T)"),
        ("axial T1, small ventricles, enlarged ventricles", "two ventricle sizes"),
        ("coronal T2 slice at z = 10 mm", "'z = 10 mm' is not a level of a coronal slice"),
        ("axial T1 at y = -20 mm", "'y = -20 mm' is not a level of an axial slice"),
        ("axial T1 of a woman at the level of the cerebellum at z = 40 mm",
         "two levels ('at the level of the cerebellum' as read, and z = "),
        ("sagittal T1 through the left insula (x = +36 mm)", "two levels ('through the left insula' as read, and x"),
        ("coronal FLAIR of a 30-year-old man at the level of the cerebellum at y = 20 mm", "two levels"),
    ],
    "outside the head": [
        ("axial T1 at z = 200 mm", "200 mm is outside the head (axial slices are made from z = -87 to"),
        ("sagittal T2 slice at x = -100 mm", "x = -100 mm is outside the head"),
        ("coronal FLAIR 120 mm above", "outside the head"),
    ],
}
REFUSED_CASES = [case for cases in REFUSED.values() for case in cases]


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(("prompt", "says"), REFUSED_CASES)
def test_refused_prompts(prompt, says):
    check = check_prompt(prompt)
    assert check.refusal is not None and says in check.refusal and "\n" not in check.refusal
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        require_servable(prompt)


@pytest.mark.parametrize(("prompt", "says"), [case for cases in REFUSED.values() for case in cases[:2]])
def test_cli_refuses_in_one_line_before_anything_is_made(prompt, says, tmp_path):
    # no model at --model: the refusal comes before any model, folder or image
    result = _cli("generate", prompt, "--model", tmp_path / "no-model", "--out", tmp_path / "out")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.output, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0]
    assert not (tmp_path / "out").exists()
    if "pathology" in says:
        assert "dallebrain generate-lesion" in lines[0]


def test_api_and_web_refuse_before_anything_is_made(tmp_path):
    from dallebrain import api
    from dallebrain.app import handlers

    with pytest.raises(ValueError, match="'CT' asks for CT"):
        api.generate_to_folder(None, "axial CT of the brain", tmp_path / "api")  # never reaches the pipeline
    with pytest.raises(handlers.RequestError, match="'tumour' names a pathology"):
        handlers.generate("axial T1 of a woman with a 30 mm tumour", model=tmp_path / "no-model",
                          work_dir=tmp_path / "web")
    with pytest.raises(handlers.RequestError, match="two sexes"):
        handlers.ageing_sequence("axial T1 of a man, female", model=tmp_path / "no-model", work_dir=tmp_path / "web")
    assert not (tmp_path / "api").exists() and not (tmp_path / "web").exists()


@pytest.mark.parametrize("prompt", [
    "axial T1 of a healthy man, no tumour and no lesions",
    "axial T2 of a healthy woman without atrophy, not a CT",
    "axial T2-weighted FLAIR of a 60-year-old man",  # FLAIR is T2-weighted: one contrast
    "axial T2-FLAIR, 60 years old, 60-year-old man",  # the same age twice
    "coronal T1 showing the transverse temporal gyrus",  # 'transverse' names a gyrus here, not a plane
    "axial T1 of a 74 years old man",
    "axial T1 of Mrs Smith, a healthy 60-year-old",  # "Mrs" is no MR spectroscopy
])
def test_served_without_warnings(prompt):
    check = check_prompt(prompt)
    assert (check.refusal, check.warnings) == (None, [])


@pytest.mark.parametrize(("prompt", "says"), [
    ("axial T1 of a child", "'child' ignored: the cohort is adults aged 18-90"),
    ("paediatric axial T2 slice", "'paediatric' ignored"),
    ("axial T1 of a 12-year-old girl", "age 12 is outside the training range (18-90 years)"),
    ("axial T1 of a 95-year-old man", "age 95 is outside the training range"),
    ("axial T1 of an elderly woman", "'elderly' is not read as an age"),
    ("axial T1 of a healthy 130-year-old woman", "'130-year-old' ignored: not a human age"),
    ("axial T2 slice at z = 95 mm", "z = +95 mm is outside the MNI152 brain (z -72 to +82 mm)"),
    ("sagittal T1 at x = -80 mm", "x = -80 mm is outside the MNI152 brain"),
    ("axial T1 of a woman aged 250 years", "'aged 250' ignored: not a human age"),
    ("axial T1 of a left-handed 30-year-old man", "'left-handed' ignored: handedness"),
    ("oblique T1 slice", "'oblique' ignored"),
    ("axial T1 at 7 T", "7 T is outside the training range (trained at 1.5 T and 3 T only)"),
])
def test_warnings(prompt, says):
    check = check_prompt(prompt)
    assert check.refusal is None and any(says in w for w in check.warnings), check.warnings


def test_every_healthy_caption_is_served_without_warnings():
    structures = sorted({n for label in atlas_label_names().values() if (n := plain_structure_name(label))})
    grid = list(itertools.product(ORIENTATIONS, MODALITIES, (*FIELD_STRENGTHS, None), (*COHORT_AGES, 50, None),
                                  ("F", "M", None), ("small", "large", None)))
    for i, (orientation, modality, field, age, sex, size) in enumerate(random.Random(0).sample(grid, 300)):
        named = tuple(structures[(3 * i + k) % len(structures)] for k in range(3))  # every structure name in turn
        facts = SliceFacts(orientation, -20.0, modality, field, age, sex, named, size, size)
        for caption in build_captions(facts, n=8):
            check = check_prompt(caption)
            assert (check.refusal, check.warnings) == (None, []), caption


def test_the_documented_prompts_are_served():
    import re
    from pathlib import Path

    from dallebrain.app.handlers import EXAMPLE_PROMPTS

    root = Path(__file__).resolve().parents[2]
    readme = [m.group(1) for doc in ("README.md", "DEVELOPERS.md")
              for m in re.finditer(r'(?:generate|pipe\()\s*"([^"]+)"', (root / doc).read_text())]
    assert len(readme) >= 4
    for prompt in [*readme, *EXAMPLE_PROMPTS, HEALTHY]:
        assert check_prompt(prompt).refusal is None, prompt


def test_cohort_ages_are_the_simulators():
    from dallebrain.data.simulate_scan import AGE_RANGE

    assert COHORT_AGES == AGE_RANGE


def test_cli_warning_on_stderr_and_in_the_sidecar(tiny_unclip, tmp_path):
    prompt = "axial T1-weighted slice of a healthy 12-year-old left-handed girl at the level of the thalami"
    result = _cli("generate", prompt, "--route", "unclip", "--model", tiny_unclip, "--steps", 1, "--prior-steps", 1,
                  "--out", tmp_path / "gen")
    assert result.exit_code == 0, (result.output, result.exception)
    sidecar = json.loads((tmp_path / "gen" / "seed-000000.json").read_text())
    assert sidecar["warnings"] == check_prompt(prompt).warnings and len(sidecar["warnings"]) == 2
    assert any("age 12 is outside the training range" in w for w in sidecar["warnings"])
    printed = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert printed == [f"warning: {w}" for w in sidecar["warnings"]]


def test_web_shows_the_warning(tiny_unclip, tmp_path):
    from dallebrain.app import handlers

    out = handlers.generate("axial T1 of an elderly woman", steps=1, route="unclip", model=tiny_unclip,
                            work_dir=tmp_path / "web", device="cpu")
    # the page's notes are markdown, escaped: the words, not the quotes around them
    assert "elderly" in out.message and "is not read as an age" in out.message and len(out.images) == 1


def test_a_pipeline_called_directly_records_what_generate_refuses(tiny_unclip, tmp_path):
    from dallebrain.pipelines.unclip import UnCLIPPipeline

    prompt = "axial CT of a brain"
    UnCLIPPipeline.from_pretrained(tiny_unclip)(prompt, steps=1, prior_steps=1).save(tmp_path)
    sidecar = json.loads((tmp_path / "seed-000000.json").read_text())
    assert check_prompt(prompt).refusal in sidecar["warnings"]
