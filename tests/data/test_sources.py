"""Cohort readers on fake cohorts written in the real download layouts (see fixtures_cohorts.py)."""

from __future__ import annotations

import pytest
from fixtures_cohorts import write_bids, write_hcp, write_ixi, write_nifti, write_oasis

from dallebrain.data.sources import bids, hcp, ixi, oasis, tables


def by_id(records):
    assert [r.subject_id for r in records] == sorted(r.subject_id for r in records)
    return {r.subject_id: r for r in records}


# ------------------------------------------------------------------ IXI
def test_ixi_from_xlsx_with_code_sheets(tmp_path):
    write_ixi(tmp_path)
    records = by_id(ixi.find_subjects(tmp_path))
    assert sorted(records) == ["IXI002", "IXI012", "IXI013", "IXI014", "IXI015", "IXI016", "IXI017", "IXI020"]
    s002 = records["IXI002"]
    assert set(s002.images) == {"T1w", "T2w", "PDw"}
    assert s002.images["T2w"].parent.name == "IXI-T2-PD"
    assert (s002.source, s002.age, s002.sex, s002.site, s002.field_strength) == (
        "ixi",
        35.8,
        "F",
        "Guys",
        1.5,
    )
    assert s002.extra["scanner"] == "Philips 1.5T"
    assert s002.extra["ethnicity"] == "White"
    assert s002.extra["marital_status"] == "Married"
    assert s002.extra["qualification"] == "A-levels"
    assert s002.extra["dob"] == "1960-01-02"
    assert s002.problems == []
    assert (records["IXI012"].site, records["IXI012"].field_strength, records["IXI012"].sex) == (
        "HH",
        3.0,
        "M",
    )
    assert records["IXI012"].extra["scanner"] == "Philips 3T"
    s013 = records["IXI013"]
    assert set(s013.images) == {"T1w"}  # MRA ignored
    assert (s013.field_strength, s013.extra["scanner"], s013.extra["ethnicity"]) == (1.5, "GE 1.5T", None)
    assert records["IXI014"].problems == ["no demographics row"]
    assert records["IXI014"].age is None
    assert records["IXI015"].problems == ["age missing"]
    assert records["IXI015"].age is None and records["IXI015"].sex == "F"
    assert records["IXI016"].problems == []
    assert records["IXI016"].extra["height_cm"] == 170  # the fuller of two agreeing rows
    assert records["IXI017"].problems == ["conflicting demographic rows"]
    assert records["IXI017"].sex == "M"  # the fuller row
    assert records["IXI020"].images == {}
    assert any("no T1, T2 or PD image" in p for p in records["IXI020"].problems)
    assert all(r.in_mni is False for r in records.values())


def test_ixi_from_csv_keeps_raw_codes(tmp_path):
    table = write_ixi(tmp_path / "cohort", table="csv")
    records = by_id(ixi.find_subjects(tmp_path / "cohort"))
    assert table.name == "IXI.csv"
    assert records["IXI002"].age == 35.8
    assert records["IXI002"].extra["ethnic_id"] == 1
    assert records["IXI017"].problems == ["conflicting demographic rows"]
    # An explicit path works from anywhere.
    assert len(ixi.find_subjects(tmp_path / "cohort" / "IXI-T1", demographics=table)) == 7


def test_ixi_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="IXI folder not found"):
        ixi.find_subjects(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no IXI image"):
        ixi.find_subjects(tmp_path / "empty")
    write_nifti(tmp_path / "images" / "IXI002-Guys-0828-T1.nii.gz")
    with pytest.raises(ValueError, match="no IXI.xls"):
        ixi.find_subjects(tmp_path / "images")
    with pytest.raises(ValueError, match="file not found"):
        ixi.find_subjects(tmp_path / "images", demographics=tmp_path / "IXI.xls")
    (tmp_path / "images" / "IXI.xls").write_bytes(b"\x00garbage, not a workbook")
    with pytest.raises(ValueError, match="cannot read IXI demographics"):
        ixi.find_subjects(tmp_path / "images")


# ------------------------------------------------------------------ OASIS-1
def test_oasis(tmp_path):
    write_oasis(tmp_path)
    records = by_id(oasis.find_subjects(tmp_path))
    assert sorted(records) == ["OAS1_0001", "OAS1_0002", "OAS1_0003", "OAS1_0004", "OAS1_0005"]  # MR2 skipped
    young = records["OAS1_0001"]
    assert young.images["T1w"].name == "OAS1_0001_MR1_mpr_n4_anon_111_t88_masked_gfc.hdr"
    assert young.in_mni is True
    assert young.tissue_seg.name.endswith("_masked_gfc_fseg.hdr")
    assert (young.source, young.age, young.sex, young.field_strength) == ("oasis1", 24.0, "F", 1.5)
    assert young.extra["cdr"] is None and young.extra["etiv"] == 1344 and young.extra["nwbv"] == 0.843
    assert young.problems == []  # blank CDR: not rated, healthy
    raw_only = records["OAS1_0002"]
    assert raw_only.images["T1w"].name == "OAS1_0002_MR1_mpr-1_anon.hdr"
    assert raw_only.in_mni is False and raw_only.tissue_seg is None
    assert (raw_only.extra["cdr"], raw_only.extra["mmse"]) == (0.0, 29.0)
    assert raw_only.problems == []
    assert records["OAS1_0003"].problems == ["not healthy (CDR 1)"]
    assert records["OAS1_0004"].extra["session_dir"].endswith("OAS1_0004_MR1")
    assert records["OAS1_0004"].problems == []
    assert records["OAS1_0005"].problems == ["no demographics row"]


def test_oasis_half_extracted_pair_and_bad_inputs(tmp_path):
    write_oasis(tmp_path)
    for img in (tmp_path / "disc1" / "OAS1_0002_MR1" / "RAW").glob("*.img"):
        img.unlink()
    record = by_id(oasis.find_subjects(tmp_path))["OAS1_0002"]
    assert record.images == {}
    assert any("no MPRAGE image" in p for p in record.problems)
    with pytest.raises(ValueError, match="OASIS-1 folder not found"):
        oasis.find_subjects(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no OASIS-1 session folder"):
        oasis.find_subjects(tmp_path / "empty")
    (tmp_path / "oasis_cross-sectional.csv").unlink()
    with pytest.raises(ValueError, match="demographics file not found"):
        oasis.find_subjects(tmp_path)


# ------------------------------------------------------------------ HCP
def test_hcp(tmp_path):
    write_hcp(tmp_path)
    records = by_id(hcp.find_subjects(tmp_path))
    assert sorted(records) == ["100307", "100408", "101915", "102311", "103111"]
    mni = records["100307"]
    assert set(mni.images) == {"T1w", "T2w"} and mni.in_mni is True
    assert mni.images["T1w"].as_posix().endswith("MNINonLinear/T1w_restore_brain.nii.gz")
    assert mni.tissue_seg.as_posix().endswith("MNINonLinear/aparc+aseg.nii.gz")
    assert (mni.source, mni.age, mni.sex, mni.field_strength) == ("hcp", 28.0, "F", 3.0)
    assert mni.extra["age_range"] == "26-30"
    native = records["100408"]
    assert native.in_mni is False and set(native.images) == {"T1w"}
    assert native.images["T1w"].name == "T1w_acpc_dc_restore_brain.nii.gz"
    assert native.tissue_seg.as_posix().endswith("T1w/aparc+aseg.nii.gz")
    assert native.age == 33.0
    assert (records["101915"].age, records["101915"].extra["age_range"]) == (37.0, "36+")
    assert records["102311"].images == {} and records["102311"].age == 23.5
    assert records["102311"].problems and "no T1w" in records["102311"].problems[0]
    assert records["103111"].problems == ["no demographics row"]


def test_hcp_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="HCP folder not found"):
        hcp.find_subjects(tmp_path / "absent")
    (tmp_path / "not-a-subject").mkdir()
    with pytest.raises(ValueError, match="no HCP subject folder"):
        hcp.find_subjects(tmp_path)
    csv = write_hcp(tmp_path / "cohort")
    csv.unlink()
    with pytest.raises(ValueError, match="unrestricted"):
        hcp.find_subjects(tmp_path / "cohort")


# ------------------------------------------------------------------ BIDS
def test_bids(tmp_path):
    write_bids(tmp_path)
    records = by_id(bids.find_subjects(tmp_path))
    assert sorted(records) == ["01", "02", "03", "04", "05"]
    one = records["01"]
    assert set(one.images) == {"T1w", "FLAIR"} and one.images["FLAIR"].name == "sub-01_FLAIR.nii"
    assert (one.source, one.age, one.sex, one.field_strength, one.site) == ("bids", 23.0, "F", 3.0, "Siemens")
    assert one.extra == {"handedness": "right"}
    two = records["02"]
    assert two.extra["session"] == "1"
    assert two.images["T2w"].name == "sub-02_ses-1_run-1_T2w.nii.gz"
    assert (two.age, two.sex, two.field_strength) == (41.5, "M", 1.5)
    three = records["03"]
    assert three.sex is None and three.problems == ["sex code '1' is ambiguous"]
    assert records["04"].problems == ["no demographics row"]
    assert records["05"].images == {}
    assert records["05"].problems == ["no anat image (T1w, T2w, PDw or FLAIR)", "age missing"]


def test_bids_without_participants_and_bad_inputs(tmp_path):
    participants = write_bids(tmp_path / "ds")
    participants.unlink()
    records = bids.find_subjects(tmp_path / "ds")
    assert all("no demographics row" in r.problems for r in records)
    with pytest.raises(ValueError, match="participants file not found"):
        bids.find_subjects(tmp_path / "ds", demographics=participants)
    with pytest.raises(ValueError, match="BIDS folder not found"):
        bids.find_subjects(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no sub-"):
        bids.find_subjects(tmp_path / "empty")


# ------------------------------------------------------------------ shared helpers
@pytest.mark.parametrize(
    ("value", "sex", "has_problem"),
    [
        ("F", "F", False),
        ("male", "M", False),
        (" m ", "M", False),
        ("Female", "F", False),
        ("n/a", None, False),
        (None, None, False),
        ("1", None, True),
        (2, None, True),
        ("x", None, True),
    ],
)
def test_parse_sex(value, sex, has_problem):
    parsed, problem = tables.parse_sex(value)
    assert parsed == sex and (problem is not None) == has_problem


def test_parse_sex_with_codes_and_age_ranges():
    assert tables.parse_sex(1.0, {1: "M", 2: "F"}) == ("M", None)
    assert tables.parse_sex(0, {1: "M", 2: "F"}) == (None, None)
    assert [tables.parse_age_range(v) for v in ("22-25", "26-30", "31-35", "36+", "41.5", "", "old")] == [
        23.5,
        28.0,
        33.0,
        37.0,
        41.5,
        None,
        None,
    ]
