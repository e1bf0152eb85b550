"""`evaluate-utility`: train on real / synthetic / both / scarce real with and without synthetic, test on held-out
real slices. A stand-in "synthetic" set made of real slices shows the measure is real: with true labels it
teaches contrast as well as real slices do; with its contrast labels rotated (images that do not show what
their prompt asked) it teaches the wrong contrast, and the table says so."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from dallebrain.synthesize.utility import SETTINGS, UtilityOptions, run_utility

ROTATE = {"T1w": "T2w", "T2w": "PDw", "PDw": "FLAIR", "FLAIR": "T1w"}


def stand_in(real, folder, rotate: bool):
    """Real train slices posing as a synthetic set (their PNGs linked, not copied)."""
    folder.mkdir()
    os.symlink(real / "slices", folder / "slices")
    table = pd.read_parquet(real / "metadata.parquet")
    table = table[table["split"] == "train"].copy()
    if rotate:
        table["modality"] = table["modality"].map(ROTATE)
    table.to_parquet(folder / "metadata.parquet", index=False)
    return folder


@pytest.fixture(scope="module")
def reports(tiny_prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("utility")
    out = {}
    for name, rotate in (("true", False), ("rotated", True)):
        synthetic = stand_in(tiny_prepared, root / f"synthetic-{name}", rotate)
        # the rotated set needs only the synthetic-only network
        options = UtilityOptions(tiny_prepared, synthetic, root / f"report-{name}", scarce_subjects=1, steps=80,
                                 test_slices=150, settings=("synthetic",) if rotate else SETTINGS)
        out[name] = (run_utility(options, progress=False), options.out)
    return out


def test_every_setting_trained_on_its_slices_and_scored_on_real_test_slices(reports):
    summary, folder = reports["true"]
    s = summary["settings"]
    r = summary["r"]
    assert r == 576 and summary["test_slices"] == 150 and summary["test_subjects"] == 2  # val + test subjects
    assert (s["real"]["real_slices"], s["real"]["synthetic_slices"]) == (r, 0)
    assert (s["synthetic"]["real_slices"], s["synthetic"]["synthetic_slices"]) == (0, r)
    assert (s["real+synthetic"]["real_slices"], s["real+synthetic"]["synthetic_slices"]) == (r, r)
    assert s["scarce"]["real_subjects"] == 1 and s["scarce+synthetic"]["synthetic_slices"] == r
    assert json.loads((folder / "utility.json").read_text())["settings"].keys() == set(SETTINGS)
    table = (folder / "utility.md").read_text()
    assert all(f"| {name} |" in table for name in SETTINGS) and "| chance" in table and "TSTR" in table
    assert "trained on real, contrast acc. on held-out real" in table  # each task's own check against chance
    assert (folder / "utility.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_measure_tells_faithful_slices_from_slices_that_miss_their_prompt(reports):
    true, rotated = reports["true"][0], reports["rotated"][0]
    chance = true["chance"]["contrast"]
    real = true["settings"]["real"]["contrast"]["mean"]
    assert real > chance + 0.3  # the network learns contrast from real slices
    assert true["settings"]["synthetic"]["contrast"]["mean"] > chance + 0.3
    # slices that do not show the contrast they are labelled with teach the wrong one ...
    assert rotated["settings"]["synthetic"]["contrast"]["mean"] < chance
    # ... while the plane, which they do show, is learnt as well as from faithful slices
    assert rotated["settings"]["synthetic"]["orientation"]["mean"] > true["chance"]["orientation"] + 0.3


def test_bad_input_one_line_exit_2(tiny_prepared, tmp_path):
    result = subprocess.run([sys.executable, "-m", "dallebrain.cli", "evaluate-utility", "--real", str(tiny_prepared),
                             "--synthetic", str(tmp_path / "none"), "--out", str(tmp_path / "r")],
                            capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "--synthetic: not a prepared data set" in lines[0]
    assert not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match="not fewer than the 2 train subjects"):
        run_utility(UtilityOptions(tiny_prepared, tiny_prepared, tmp_path / "r", scarce_subjects=2))


def test_on_prompt_only_trains_on_the_slices_the_judge_passed(tiny_prepared, tmp_path):
    synthetic = stand_in(tiny_prepared, tmp_path / "judged", rotate=False)
    with pytest.raises(ValueError, match="was not judged"):
        run_utility(UtilityOptions(tiny_prepared, synthetic, tmp_path / "r", scarce_subjects=1, steps=1,
                                   settings=("synthetic",), on_prompt_only=True), progress=False)
    table = pd.read_parquet(synthetic / "metadata.parquet")
    table["on_prompt"] = table["modality"] == "T1w"
    table.to_parquet(synthetic / "metadata.parquet", index=False)
    summary = run_utility(UtilityOptions(tiny_prepared, synthetic, tmp_path / "r", scarce_subjects=1, steps=1,
                                         settings=("synthetic",), on_prompt_only=True), progress=False)
    assert summary["r"] == (table["modality"] == "T1w").sum() == summary["settings"]["synthetic"]["synthetic_slices"]
    assert "on-prompt slices only" in (tmp_path / "r" / "utility.md").read_text()


def test_settings_of_one_repeat_share_their_real_subjects_so_adding_synthetic_is_a_paired_comparison():
    from dallebrain.synthesize.utility import setting_rows

    train = pd.DataFrame({"subject_id": [f"sub-{k // 5:02d}" for k in range(60)]})  # 12 subjects x 5 slices

    def rows(setting, repeat):
        return setting_rows(setting, train, n_synthetic=40, r=20, scarce_subjects=3, repeat=repeat)

    for repeat in range(4):
        # with and without synthetic slices: the very same real slices (the scarce ones: 3 subjects' slices)
        assert np.array_equal(rows("scarce", repeat)[0], rows("scarce+synthetic", repeat)[0])
        assert train.iloc[rows("scarce", repeat)[0]]["subject_id"].nunique() == 3
        assert np.array_equal(rows("real", repeat)[0], rows("real+synthetic", repeat)[0])
        assert np.array_equal(rows("synthetic", repeat)[1], rows("real+synthetic", repeat)[1])
        assert np.array_equal(rows("synthetic", repeat)[1], rows("scarce+synthetic", repeat)[1])
    # while the repeats draw different subsets (else their SD would only measure initialisation)
    assert len({tuple(rows("scarce", k)[0]) for k in range(4)}) > 1
