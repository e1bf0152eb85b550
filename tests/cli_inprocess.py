"""`dallebrain ARGS` run inside the test process (typer's CliRunner) with what a subprocess returns: the exit code,
stdout and stderr apart. Each fresh `python -m dallebrain.cli` pays ~10 s importing torch and diffusers again;
this runs the same command objects without that. The README command's test (test_shipped_model.py) and the
`--help` / bad-input tests (test_cli.py) keep real subprocesses, so the entry point itself stays tested."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path


def run_cli(*args, cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    from typer.testing import CliRunner

    from dallebrain.cli import app

    argv = [str(a) for a in args]
    with contextlib.chdir(cwd or os.getcwd()):
        result = CliRunner().invoke(app, argv)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback is a bug, not an exit code: show it
    return subprocess.CompletedProcess(["dallebrain", *argv], result.exit_code, result.stdout, result.stderr)
