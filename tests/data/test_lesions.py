"""`data simulate --lesions`: lesion tissues, masks that match the rendering, BIDS derivatives, tables,
captions that name lesions plainly, and a healthy default that stays as it was."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from dallebrain.data.anatomy import age_template, draw_traits, place_in_native
from dallebrain.data.captions import SliceFacts, build_captions
from dallebrain.data.lesion_atlas import lesion_atlas
from dallebrain.data.lesion_plans import (
    DRAW,
    FAZEKAS_BY_AGE,
    LESION_COLUMNS,
    add_lesions,
    draw_wmh,
    fazekas_grade,
)
from dallebrain.data.lesion_shapes import displace_outwards
from dallebrain.data.lesions import MASK_LABELS, full_mask, parse_lesions
from dallebrain.data.mr_physics import draw_sequence, tissue_signals
from dallebrain.data.prompts import parse_prompt
from dallebrain.data.simulate import LESION_DERIVATIVES, SimulationOptions, simulate_cohort, synthesize
from testing_constants import TINY_GRID

CONTRASTS = ("T1w", "T2w", "PDw", "FLAIR")


def _lesioned(kind: str, seed: int = 0, age: float = 78.0):
    """A subject of the tiny grid with one lesion of `kind`: (anatomy, lesion-free anatomy, plan, mask)."""
    rng = np.random.default_rng([seed, 11])
    traits = draw_traits(TINY_GRID, "F", rng)
    plan = None
    while plan is None:  # a WMH draw may be Fazekas 0: draw again
        plan = DRAW[kind](rng, age, lesion_atlas(TINY_GRID), TINY_GRID)
    ml = TINY_GRID.spacing_mm ** 3 / 1000 * traits.scale ** 3
    aged = add_lesions(age_template(TINY_GRID, age, traits), plan, TINY_GRID, ml, age)
    anatomy = place_in_native(TINY_GRID, aged, traits, traits.to_mni())
    return anatomy, anatomy.without_lesions(), plan, full_mask(TINY_GRID.shape, anatomy.lesions, anatomy.lesion_mask)


def _render(anatomy, modality, field, noise=0.03):
    seq = draw_sequence(modality, field, np.random.default_rng(1))
    flat = np.zeros(TINY_GRID.shape, np.float32)
    image = synthesize(anatomy, seq, field, np.random.default_rng(2), 0.0, noise, flat)
    return image, noise * max(tissue_signals(seq, field).values())


@pytest.mark.parametrize("kind", ["wmh", "ms", "infarct", "tumour"])
def test_mask_is_where_the_rendering_departs_from_the_lesion_free_brain(kind):
    """Dice >= 0.95 between the mask and the voxels that differ from the lesion-free rendering (same noise)
    by more than the noise sigma in any contrast, at 1.5 T and 3 T."""
    anatomy, healthy, _, mask = _lesioned(kind)
    lesion = mask > 0
    assert lesion.sum() >= 3
    for field in (1.5, 3.0):
        abnormal = np.zeros(TINY_GRID.shape, bool)
        for modality in CONTRASTS:
            (with_lesion, sigma), (without, _) = _render(anatomy, modality, field), _render(healthy, modality, field)
            abnormal |= np.abs(with_lesion - without) > sigma
        dice = 2 * (abnormal & lesion).sum() / (abnormal.sum() + lesion.sum())
        assert dice >= 0.95, (kind, field, dice)


@pytest.mark.parametrize("kind, label", [("wmh", 1), ("ms", 2), ("tumour", 6), ("infarct", 3)])
def test_lesions_look_as_they_do_on_each_contrast(kind, label):
    """WMH, plaques, oedema: bright on FLAIR and T2w, darker on T1w than the tissue they replaced; a chronic
    infarct: bright on T2w, dark on T1w."""
    anatomy, healthy, _, mask = _lesioned(kind)
    where = mask == label
    ratio = {}
    for modality in CONTRASTS:
        ratio[modality] = float(_render(anatomy, modality, 3.0)[0][where].mean()
                                / _render(healthy, modality, 3.0)[0][where].mean())
    assert ratio["T2w"] > 1.2 and ratio["T1w"] < 0.95, ratio
    if kind != "infarct":  # an infarct's cavity is nulled like CSF on FLAIR; only its rim is bright
        assert ratio["FLAIR"] > 1.2, ratio


def test_tumour_pushes_its_neighbours_away():
    """Mass effect: a ball of radius k inserted at the centre moves a point at radius r to (r^3 + k^3)^(1/3),
    and tissue at the skull does not move."""
    shape = (41, 41, 41)
    marker = np.zeros(shape, np.float32)
    marker[20, 20, 30] = 1.0  # 10 voxels = 30 mm from the centre on the 3 mm grid
    tissue = {"gm": marker.copy(), "wm": np.zeros(shape, np.float32), "csf": np.zeros(shape, np.float32),
              "labels": np.zeros(shape, np.int16)}
    box = tuple(slice(0, n) for n in shape)
    centre = np.array([20.0, 20.0, 20.0])
    displace_outwards(tissue, TINY_GRID, centre, 24.0, np.full(shape, 100.0, np.float32), box)
    moved_to = np.unravel_index(np.argmax(tissue["gm"]), shape)
    expected_mm = (30.0 ** 3 + 24.0 ** 3) ** (1 / 3)
    assert moved_to[:2] == (20, 20) and abs((moved_to[2] - 20) * 3.0 - expected_mm) <= 3.0
    pinned = {**{k: v.copy() for k, v in tissue.items()}, "gm": marker.copy()}
    displace_outwards(pinned, TINY_GRID, centre, 24.0, np.zeros(shape, np.float32), box)
    np.testing.assert_array_equal(pinned["gm"], marker)


def test_wmh_grade_rises_with_age_and_the_load_grows():
    atlas = lesion_atlas(TINY_GRID)
    grades = {}
    for age in (40.0, 85.0):
        plans = [draw_wmh(np.random.default_rng([int(age), i]), age, atlas, TINY_GRID) for i in range(200)]
        grades[age] = np.mean([0 if p is None else fazekas_grade(p.volume_ml) for p in plans])
    expected = {age: sum(g * p for g, p in enumerate(next(p for upper, p in FAZEKAS_BY_AGE if age < upper)))
                for age in grades}
    assert grades[85.0] > grades[40.0] + 1.0
    assert grades[40.0] == pytest.approx(expected[40.0], abs=0.15)
    plan = next(p for i in range(50) if (p := draw_wmh(np.random.default_rng(i), 80.0, atlas, TINY_GRID)))
    assert plan.volume_at(90.0) > plan.volume_at(80.0) > 0


@pytest.fixture(scope="module")
def lesion_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("lesions")
    simulate_cohort(out, SimulationOptions(6, seed=7, grid=TINY_GRID, lesions=("wmh", "ms", "infarct", "tumour"),
                                           lesion_fraction=0.7), progress=False)
    return out


def test_masks_as_bids_derivatives_and_lesion_tables(lesion_cohort):
    table = pd.read_csv(lesion_cohort / "participants.tsv", sep="\t")
    assert set(LESION_COLUMNS) <= set(table.columns)
    assert table["healthy"].any() and not table["healthy"].all()
    root = lesion_cohort / LESION_DERIVATIVES
    assert json.loads((root / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    assert (root / "label-lesion_mask.tsv").read_text().splitlines()[1].startswith("1\twmh")
    for row in table.itertuples():
        sid = row.participant_id
        mask_img = nib.load(root / sid / "anat" / f"{sid}_label-lesion_mask.nii.gz")
        mask = np.asarray(mask_img.dataobj)
        np.testing.assert_allclose(mask_img.affine, TINY_GRID.affine)
        assert set(np.unique(mask)) <= {0, *MASK_LABELS}
        assert row.healthy == (mask.sum() == 0)  # "healthy" only where true
        assert row.lesion_ml == pytest.approx((mask > 0).sum() * TINY_GRID.spacing_mm ** 3 / 1000, rel=1e-3)
        if not row.healthy:
            assert row.lesion_type in ("wmh", "ms", "infarct", "tumour") and row.findings


def test_subjects_without_lesions_are_the_healthy_cohorts(lesion_cohort, tiny_cohort):
    healthy = pd.read_csv(lesion_cohort / "participants.tsv", sep="\t").query("healthy")
    compared = 0
    for sid in healthy["participant_id"]:
        if not (tiny_cohort / sid).exists():
            continue
        for suffix in ("T1w", "FLAIR"):
            name = f"{sid}/anat/{sid}_{suffix}.nii.gz"
            np.testing.assert_array_equal(np.asarray(nib.load(tiny_cohort / name).dataobj),
                                          np.asarray(nib.load(lesion_cohort / name).dataobj))
        compared += 1
    assert compared >= 1


def test_default_cohort_stays_healthy(tiny_cohort):
    table = pd.read_csv(tiny_cohort / "participants.tsv", sep="\t")
    assert not set(LESION_COLUMNS) & set(table.columns)
    assert not (tiny_cohort / "derivatives").exists()
    assert json.loads((tiny_cohort / "dataset_description.json").read_text())["Name"].endswith("healthy cohort")


def test_prepare_slices_masks_and_names_lesions_in_captions(lesion_cohort, tmp_path):
    from dallebrain.data.prepare import PrepareOptions, prepare
    from dallebrain.data.slicing import load_png

    prepare(PrepareOptions("simulated", lesion_cohort, tmp_path, size=64, slice_step_mm=6.0), progress=False)
    table = pd.read_parquet(tmp_path / "metadata.parquet")
    sick = table[~table["healthy"].astype(bool)]
    in_view = sick[sick["lesion_labels"].map(len) > 0]
    assert len(in_view) > 0
    for row in in_view.sample(min(10, len(in_view)), random_state=0).itertuples():
        mask = np.round(load_png(tmp_path / row.mask_path) * 255).astype(int)
        assert set(np.unique(mask[mask > 0])) == set(row.lesion_labels)
        assert row.findings in row.caption and "healthy" not in row.caption.lower()
        assert parse_prompt(row.caption).healthy is False
    out_of_view = sick[sick["lesion_labels"].map(len) == 0]
    assert not any(f in c for f, c in zip(out_of_view["findings"], out_of_view["caption"], strict=True))
    assert not out_of_view["caption"].str.contains("healthy").any()
    assert table[table["healthy"].astype(bool)]["caption"].str.contains("healthy").all()
    assert "- lesions: {" in (tmp_path / "README.md").read_text()


def test_healthy_captions_unchanged_and_lesions_named_plainly():
    facts = SliceFacts("axial", 23.0, "FLAIR", 3.0, 74.0, "F", ("lateral ventricle", "caudate nucleus"), "large")
    assert build_captions(facts, n=2, seed=0) == [  # as before lesions existed
        "Axial FLAIR brain MRI of a healthy 74-year-old woman at the level of the lateral ventricles (z = +23 mm), "
        "3 T, showing the lateral ventricle and caudate nucleus; lateral ventricles large for age.",
        "Orientation: axial; Level: at the level of the lateral ventricles (z = +23 mm); Contrast: FLAIR; Field "
        "strength: 3 T; Age: 74; Sex: female; Healthy; Structures: lateral ventricle and caudate nucleus; Volumes: "
        "lateral ventricles large for age"]
    tumour = "a 25 mm tumour in the left frontal lobe and surrounding oedema"
    sick = SliceFacts("axial", 23.0, "FLAIR", 3.0, 74.0, "F", healthy=False, lesions=(tumour,))
    captions = build_captions(sick, n=6, seed=0)
    assert captions[0].startswith(f"Axial FLAIR brain MRI of a 74-year-old woman with {tumour} at the level")
    assert all(tumour in c and "healthy" not in c.lower() for c in captions)


def test_parse_lesions_and_options():
    assert parse_lesions("WMH, tumor,ms") == ("wmh", "tumour", "ms")
    with pytest.raises(ValueError, match="unknown lesion"):
        parse_lesions("wmh,flu")
    with pytest.raises(ValueError, match="between 0 and 1"):
        SimulationOptions(2, lesions=("wmh",), lesion_fraction=1.5)


@pytest.mark.parametrize("args, message", [
    (["--lesion-fraction", "0.5"], "needs --lesions"),
    (["--lesions", "wmh,flu"], "unknown lesion"),
    (["--lesions", "ms", "--lesion-fraction", "2"], "between 0 and 1"),
])
def test_cli_refuses_bad_lesion_options(tmp_path, args, message):
    result = subprocess.run([sys.executable, "-m", "dallebrain.cli", "data", "simulate", "--subjects", "1",
                             "--out", "x", *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not (tmp_path / "x").exists()


def test_wmh_grow_over_the_sessions_of_a_longitudinal_subject(tmp_path):
    simulate_cohort(tmp_path, SimulationOptions(3, seed=7, contrasts=("FLAIR",), grid=TINY_GRID, timepoints=(0, 10),
                                                lesions=("wmh",), lesion_fraction=1.0), progress=False)
    grown = 0
    for sid in ("sub-0001", "sub-0002", "sub-0003"):
        table = pd.read_csv(tmp_path / sid / f"{sid}_sessions.tsv", sep="\t")
        assert set(LESION_COLUMNS) <= set(table.columns)
        assert table["wmh_ml"].is_monotonic_increasing and table["fazekas"].is_monotonic_increasing
        for ses in ("ses-01", "ses-02"):
            mask = tmp_path / LESION_DERIVATIVES / sid / ses / "anat" / f"{sid}_{ses}_label-lesion_mask.nii.gz"
            assert mask.exists()
        grown += table["wmh_ml"].iloc[1] > table["wmh_ml"].iloc[0] > 0
    participants = pd.read_csv(tmp_path / "participants.tsv", sep="\t")
    assert grown >= 1 and list(participants["sessions"]) == [2, 2, 2]
