import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "dallebrain.cli"]


def run(*args):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def test_help_is_instant_and_lists_commands():
    result = run("data", "--help")
    assert result.returncode == 0 and "simulate" in result.stdout and "prepare" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["data", "simulate", "--subjects", "0", "--out", "x"], "--subjects"),
    (["data", "simulate", "--subjects", "2", "--out", "x", "--contrasts", "t1,dwi"], "unknown contrast"),
    (["data", "prepare", "--source", "mystery", "--input", ".", "--out", "x"], "unknown --source"),
    (["data", "prepare", "--source", "ixi", "--input", "/no/such/folder", "--out", "x"], "not found"),
    (["data", "prepare", "--source", "simulated", "--input", ".", "--out", "x", "--size", "100"], "--size"),
])
def test_bad_input_one_line_nonzero_exit(args, message, tmp_path):
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not (tmp_path / "x").exists()


def test_prepare_on_a_folder_with_no_cohort_fails_cleanly(tmp_path):
    result = run("data", "prepare", "--source", "simulated", "--input", str(tmp_path), "--out",
                 str(tmp_path / "out"))
    assert result.returncode == 2 and "no simulated subject" in result.stderr
