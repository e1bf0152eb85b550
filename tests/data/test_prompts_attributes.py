"""parse_prompt reads back every attribute a caption states (the structured conditioning is fed from it), the
volume descriptors in the captions' words and in common ones, and a structure named in a plane that has no
landmark for it (the named plane wins)."""

import itertools
import random
import re
from dataclasses import fields

import numpy as np
import pytest

from dallebrain.data.captions import SliceFacts, build_captions
from dallebrain.data.landmarks import LANDMARKS, landmark
from dallebrain.data.prompts import STRUCTURE_CENTROIDS, PromptFields, parse_prompt
from dallebrain.vocab import MODALITIES, ORIENTATION_AXIS, ORIENTATIONS

STRUCTURES = ("hippocampus", "thalamus", "lateral ventricle", "putamen", "insula", "cerebellar vermis",
              "transverse temporal gyrus", "caudate nucleus")


def _positions(orientation: str) -> list[float]:
    """Every landmark row, at its centre and off it (both sides for sagittal)."""
    out = []
    for lo, _, _, centre in LANDMARKS[orientation]:
        for p in (centre, (max(lo, centre - 20) + centre) / 2 + 0.3):
            out += [p, -p] if orientation == "sagittal" and p > 4 else [p]
    return out


def _facts_grid(k: int = 900, seed: int = 0) -> list[SliceFacts]:
    """k SliceFacts drawn from the grid of every attribute value a caption can state."""
    grid = list(itertools.product(
        [(o, p) for o in ORIENTATIONS for p in _positions(o)], MODALITIES, (1.5, 3.0, None), (18, 47.6, 90, None),
        ("F", "M", None), ("small", "large", None), ("small", "large", None), ((), STRUCTURES[:3], STRUCTURES[3:]),
    ))
    picked = random.Random(seed).sample(grid, k)
    return [SliceFacts(o, p, m, f, a, s, st, v, b) for (o, p), m, f, a, s, v, b, st in picked]


def test_every_phrasing_round_trips_every_attribute():
    for facts in _facts_grid():
        band = landmark(facts.orientation, facts.slice_mm)
        for caption in build_captions(facts, n=8):  # eight templates: every phrasing
            got = parse_prompt(caption)
            where = f"{facts} -> {caption!r} -> {got}"
            assert got.orientation == facts.orientation, where
            assert got.slice_mm is not None and landmark(facts.orientation, got.slice_mm) == band, where
            if f"{ORIENTATION_AXIS[facts.orientation]} = " in caption:  # a caption that prints the level in mm
                assert got.slice_mm == round(facts.slice_mm, 1), where
            assert got.modality == facts.modality, where
            assert got.field_strength == facts.field_strength, where
            assert got.age == (None if facts.age is None else round(facts.age)), where
            assert got.sex == facts.sex, where
            if "for age" in caption:  # the terse phrasing leaves the volume descriptors out
                assert (got.ventricles, got.brain_volume) == (facts.ventricles, facts.brain_volume), where
            else:
                assert (got.ventricles, got.brain_volume) == (None, None), where
            assert got.healthy is True, where


@pytest.mark.parametrize(("text", "ventricles", "brain_volume"), [
    ("axial T1, lateral ventricles large for age", "large", None),
    ("axial T1, lateral ventricles small for age, brain volume large for age", "small", "large"),
    ("axial T2 of a 70-year-old man with enlarged ventricles", "large", None),
    ("axial T2, prominent lateral ventricles", "large", None),
    ("axial T2 of a woman with small ventricles", "small", None),
    ("axial FLAIR, atrophic brain", None, "small"),
    ("axial FLAIR, generalised brain atrophy", None, "small"),
    ("axial FLAIR, reduced brain volume", None, "small"),
    ("axial FLAIR, healthy, without atrophy", None, None),
    ("axial FLAIR, no enlarged ventricles", None, None),
    ("axial FLAIR, ventriculomegaly", None, None),  # a disorder: the prompt check refuses it, never 'large'
    ("axial FLAIR at the level of the lateral ventricles", None, None),  # a level, not a size
])
def test_volume_descriptors(text, ventricles, brain_volume):
    got = parse_prompt(text)
    assert (got.ventricles, got.brain_volume) == (ventricles, brain_volume)


def test_a_ventricle_size_is_not_a_level():
    # the axial cue "ventricles" would put this slice at the lateral ventricles; the size says nothing of where
    got = parse_prompt("axial T1 of a 70-year-old man with enlarged ventricles")
    assert got.slice_mm is None and got.landmark is None
    assert parse_prompt("axial T1 with enlarged ventricles at the level of the thalami").slice_mm == 10.0


def test_descriptors_are_never_missing_and_come_last():
    # appended after the nine older fields, which callers pass positionally
    assert [f.name for f in fields(PromptFields)][-2:] == ["ventricles", "brain_volume"]
    assert PromptFields("axial", 10.0).orientation == "axial"
    missing = parse_prompt("axial T1").missing()
    assert "ventricles" not in missing and "brain_volume" not in missing and "age" in missing


def test_sagittal_slice_through_the_left_hippocampus_stays_sagittal():
    got = parse_prompt("sagittal T2-weighted slice through the left hippocampus")
    assert (got.orientation, got.hemisphere, got.modality) == ("sagittal", "left", "T2w")
    assert got.slice_mm == -26.0 and got.landmark == landmark("sagittal", -26.0)
    got = parse_prompt("sagittal T1 through the hippocampus on the right, 30-year-old man")
    assert (got.orientation, got.slice_mm, got.hemisphere) == ("sagittal", 26.0, "right")
    got = parse_prompt("sagittal T1 through the hippocampus")  # no side: no position, as "through the insula"
    assert (got.orientation, got.slice_mm, got.hemisphere) == ("sagittal", None, None)
    assert "slice_mm" in got.missing() and "hemisphere" in got.missing()
    # where the plane has the landmark, its own table still decides
    got = parse_prompt("coronal T2 through the hippocampi")
    assert (got.orientation, got.landmark, got.slice_mm) == ("coronal", "through the hippocampi", -29.0)
    assert parse_prompt("axial T1 through the hippocampus").landmark == "through the hippocampi and midbrain"


@pytest.mark.parametrize(("text", "orientation", "slice_mm"), [
    ("sagittal T1 through the brainstem", "sagittal", 0.0),
    ("sagittal T1 through the right thalamus", "sagittal", 12.0),
    ("sagittal T1 of a left-handed man through the right caudate", "sagittal", 13.0),  # "left-handed" is no side
    ("coronal T1 through the pons", "coronal", -30.0),
    ("coronal T1 through the cerebellar vermis", "coronal", -60.0),
    ("axial T1 through the fourth ventricle", "axial", -32.0),
    ("axial T1 through the amygdala", "axial", -20.0),
])
def test_structures_named_in_another_plane(text, orientation, slice_mm):
    got = parse_prompt(text)
    assert (got.orientation, got.slice_mm) == (orientation, slice_mm)
    assert got.landmark == landmark(orientation, slice_mm)


def test_structure_centroids_are_the_atlas_centroids():
    import nibabel as nib

    from dallebrain.data.captions import plain_structure_name
    from dallebrain.data.templates import atlas_label_names, atlas_paths

    img = nib.load(atlas_paths()[0])
    labels = np.asarray(img.dataobj).astype(int)
    members = {pattern: [] for pattern, _ in STRUCTURE_CENTROIDS}
    for label, name in atlas_label_names().items():
        plain = plain_structure_name(name) or ""
        # a label belongs to the first row that names it, as the parser breaks ties ("cerebellar vermis")
        first = next((pattern for pattern, _ in STRUCTURE_CENTROIDS if re.search(pattern, plain)), None)
        if first is not None:
            members[first].append(label)
    for pattern, (x, y, z) in STRUCTURE_CENTROIDS:
        voxels = np.argwhere(np.isin(labels, members[pattern]))
        assert len(voxels), pattern
        mm = voxels @ img.affine[:3, :3].T + img.affine[:3, 3]
        # lateral structures: the distance from the midline, both sides together; midline ones: centred on it
        lateral = np.abs(mm[:, 0]).mean() if x else abs(mm[:, 0].mean())
        got = (lateral, *mm[:, 1:].mean(axis=0))
        assert np.allclose(got, (x, y, z), atol=1.0), (pattern, np.round(got, 1))


def test_negated_pathology_is_healthy():
    assert parse_prompt("axial T1 of a healthy man, no lesions").healthy is True
    assert parse_prompt("axial T1 of a man with a tumour").healthy is False
