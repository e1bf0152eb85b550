import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "dallebrain.cli"]


def run(*args):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def test_help_lists_commands_and_never_imports_torch():
    # `--help` stays instant because nothing heavy is imported to build the command tree (timed, not asserted,
    # in benchmarks/bench_cli_startup.py)
    code = ("import sys, dallebrain.cli; heavy = [m for m in ('torch', 'numpy', 'diffusers', 'gradio', 'pandas') "
            "if m in sys.modules]; print(heavy)")
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0 and imported.stdout.strip() == "[]", imported.stdout + imported.stderr
    result = run("--help")
    assert result.returncode == 0
    for command in ("generate", "variations", "export", "train", "evaluate", "serve", "synthesize", "anomaly", "data"):
        assert command in result.stdout, command
    result = run("data", "--help")
    assert result.returncode == 0 and all(c in result.stdout for c in ("simulate", "prepare", "demo"))


@pytest.mark.parametrize("args, expect", [
    (["train", "--help"], "vae"),  # the stages, not "unknown stage '--help'"
    (["train", "ldm", "--help"], "--resume"),  # the stage's own options
    (["generate", "--help"], "--negative-prompt"),
])
def test_every_level_answers_help(args, expect):
    result = run(*args)
    assert result.returncode == 0 and expect in result.stdout, result.stdout + result.stderr


def test_train_without_a_stage_or_with_bad_options_is_one_line(tmp_path):
    assert run("train").returncode == 2
    result = run("train", "vae", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--max-step", "x")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: dallebrain train vae")


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
