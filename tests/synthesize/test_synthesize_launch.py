"""Data parallel through `accelerate launch`: two CPU processes, each a contiguous range of batches (seeds), give
the data set one process gives, byte for byte, with one merge step; the command line refuses bad input in one
line (the library's other refusals are tested in-process in test_synthesize_plan.py)."""

import hashlib
import os
import subprocess
import sys

import pytest


def digests(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "judge" not in p.parts}


ARGS = ["--n", "10", "--seed", "3", "--steps", "2", "--batch-size", "4", "--precision", "fp32", "--planes",
        "axial,coronal", "--contrasts", "T1w=3,FLAIR=1", "--no-progress"]


# `--multi_gpu` is what makes accelerate start torchrun (its `--cpu` alone starts one process); without a GPU the
# processes join one gloo group on the CPU.


def env():
    # one thread per process (two processes on the two cores), offline like the tests
    return os.environ | {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.mark.slow
def test_two_processes_make_the_same_data_set_as_one(tiny_pipeline, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.run([sys.executable, "-m", "dallebrain.cli", "synthesize", *ARGS, "--model",
                             str(tiny_pipeline), "--out", str(one)], capture_output=True, text=True, env=env(),
                            timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    launched = subprocess.run(["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "dallebrain.synthesize",
                               *ARGS, "--model", str(tiny_pipeline), "--out", str(two)],
                              capture_output=True, text=True, env=env(), timeout=600)
    assert launched.returncode == 0, launched.stderr[-2000:]
    # each process generated its own range of batches: 3 batches (4 + 4 + 2 slices), the first to process 1
    counts = sorted(int(line.split()[1]) for line in launched.stdout.splitlines() if line.startswith("generated"))
    assert counts == [4, 6], launched.stdout
    assert digests(two) == digests(one)


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "--n must be"),
    (["--n", "4", "--like", "/no/such/prepared", "--ages", "20-30"], "not both"),
    (["--n", "4", "--contrasts", "T1w,DWI"], "unknown contrast"),
    (["--n", "4", "--model", "/no/such/model"], "model folder not found"),
])
def test_bad_input_one_line_exit_2_nothing_written(args, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "dallebrain.cli", "synthesize", *args, "--out",
                             str(tmp_path / "x")], capture_output=True, text=True, env=env(), timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (
        result.stderr)
    assert not (tmp_path / "x").exists()
