"""`data simulate --timepoints`: one anatomy per subject, aged per session, BIDS sessions; `prepare` keeps a
subject's sessions in one split."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from dallebrain.data.anatomy import AgeingModel
from dallebrain.data.longitudinal import parse_timepoints
from dallebrain.data.simulate import SimulationOptions, simulate_cohort
from dallebrain.data.simulate_sessions import SESSION_COLUMNS
from testing_constants import TINY_GRID

TIMEPOINTS = (0.0, 5.0, 10.0)


@pytest.fixture(scope="module")
def long_cohort(tmp_path_factory):
    """The tiny cohort's first three subjects (seed 7), each scanned at 0, 5 and 10 years."""
    out = tmp_path_factory.mktemp("longitudinal")
    simulate_cohort(out, SimulationOptions(3, seed=7, grid=TINY_GRID, timepoints=TIMEPOINTS), progress=False)
    return out


def _sessions(cohort, sid):
    return pd.read_csv(cohort / sid / f"{sid}_sessions.tsv", sep="\t")


def _session_record(cohort, sid, ses):
    return json.loads((cohort / sid / ses / f"{sid}_{ses}_simulation.json").read_text())


def test_parse_timepoints():
    assert parse_timepoints("0, 5,10") == (0.0, 5.0, 10.0)
    for bad, message in (("5,0", "increase"), ("0,x", "comma-separated"), ("-1,2", "between"), (" ", "empty")):
        with pytest.raises(ValueError, match=message):
            parse_timepoints(bad)


def test_bids_sessions_and_sessions_table(long_cohort):
    participants = pd.read_csv(long_cohort / "participants.tsv", sep="\t")
    assert list(participants["sessions"]) == [3, 3, 3]
    for row in participants.itertuples():
        sid = row.participant_id
        table = _sessions(long_cohort, sid)
        assert list(table.columns) == SESSION_COLUMNS
        assert list(table["session_id"]) == ["ses-01", "ses-02", "ses-03"]
        np.testing.assert_allclose(table["age"], row.age + np.array(TIMEPOINTS), atol=0.051)
        for ses in table["session_id"]:
            anat = long_cohort / sid / ses / "anat"
            for suffix in ("T1w", "T2w", "PDw", "FLAIR", "dseg", "atlas-Neuromorphometrics_dseg"):
                assert (anat / f"{sid}_{ses}_{suffix}.nii.gz").exists()


def test_one_anatomy_aged_over_the_sessions(long_cohort):
    """Ventricles grow and grey matter falls at every step; head size, sex and shape warp never change;
    the pose does (a new head position per visit), and each session records its exact transform."""
    model = AgeingModel()
    for sid in ("sub-0001", "sub-0002", "sub-0003"):
        table = _sessions(long_cohort, sid)
        assert table["lateral_ventricles_ml"].is_monotonic_increasing and table["lateral_ventricles_ml"].is_unique
        assert table["gm_ml"].is_monotonic_decreasing and table["gm_ml"].is_unique
        records = [_session_record(long_cohort, sid, ses) for ses in table["session_id"]]
        assert len({r["shape_warp_sha1"] for r in records}) == 1
        assert len({r["sex"] for r in records}) == 1
        assert len({round(r["targets"]["icv_ml"], 6) for r in records}) == 1
        poses = [np.asarray(r["to_mni"]) for r in records]
        dets = [np.linalg.det(p[:3, :3]) for p in poses]
        np.testing.assert_allclose(dets, dets[0], rtol=1e-9)
        assert not np.allclose(poses[0], poses[1])
        # Grey matter lost over 10 years is the cohort's own age trend (within 20 %).
        age0 = float(table["age"].iloc[0])
        expected = 1 - model.gm_fraction(age0 + 10) / model.gm_fraction(age0)
        measured = 1 - table["gm_ml"].iloc[2] / table["gm_ml"].iloc[0]
        if expected > 0.005:
            assert measured == pytest.approx(expected, rel=0.2), (sid, age0)


def test_baseline_session_is_todays_scan(long_cohort, tiny_cohort):
    """Time point 0 is the subject the healthy cohort has (same seed): baseline is the age drawn as today."""
    for sid in ("sub-0001", "sub-0003"):
        for suffix in ("T1w", "FLAIR", "dseg"):
            today = np.asarray(nib.load(tiny_cohort / sid / "anat" / f"{sid}_{suffix}.nii.gz").dataobj)
            baseline = np.asarray(nib.load(long_cohort / sid / "ses-01" / "anat" /
                                           f"{sid}_ses-01_{suffix}.nii.gz").dataobj)
            np.testing.assert_array_equal(today, baseline)


def test_scanner_kept_or_redrawn(long_cohort, tmp_path):
    kept = [_session_record(long_cohort, "sub-0002", f"ses-0{i}") for i in (1, 2, 3)]
    assert len({r["field_strength"] for r in kept}) == 1
    assert all(r["sequences"] == kept[0]["sequences"] for r in kept)
    simulate_cohort(tmp_path, SimulationOptions(2, seed=7, contrasts=("T2w",), grid=TINY_GRID, timepoints=(0, 2),
                                                session_scanner="redraw"), progress=False)
    for sid in ("sub-0001", "sub-0002"):
        first, second = (_session_record(tmp_path, sid, ses) for ses in ("ses-01", "ses-02"))
        assert first["sequences"]["T2w"]["tr"] != second["sequences"]["T2w"]["tr"]
        assert first["shape_warp_sha1"] == second["shape_warp_sha1"]


def test_prepare_keeps_sessions_of_a_subject_together(long_cohort, tmp_path):
    from dallebrain.data.prepare import PrepareOptions, prepare

    prepare(PrepareOptions("simulated", long_cohort, tmp_path, size=32, slice_step_mm=24.0), progress=False)
    table = pd.read_parquet(tmp_path / "metadata.parquet")
    assert table["subject_id"].nunique() == 3
    assert (table.groupby("subject_id")["session_id"].nunique() == 3).all()
    assert (table.groupby("subject_id")["split"].nunique() == 1).all()
    ages = table.groupby(["subject_id", "session_id"])["age"].first().unstack()
    np.testing.assert_allclose(ages["ses-03"] - ages["ses-01"], 10.0, atol=0.051)
    assert "- sessions: 9 scans" in (tmp_path / "README.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--timepoints", "5,0"], "increase"),
    (["--timepoints", "0,5", "--session-scanner", "maybe"], "session scanner"),
])
def test_cli_refuses_bad_timepoints(tmp_path, args, message):
    result = subprocess.run([sys.executable, "-m", "dallebrain.cli", "data", "simulate", "--subjects", "1",
                             "--out", "x", *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not (tmp_path / "x").exists()


def test_a_cohort_folder_keeps_its_design(long_cohort):
    with pytest.raises(ValueError, match="other settings"):
        simulate_cohort(long_cohort, SimulationOptions(3, seed=7, grid=TINY_GRID), progress=False)
