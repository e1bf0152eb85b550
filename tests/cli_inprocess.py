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


class RecipeSubprocess:
    """Stands in for the `subprocess` module of recipes/shipped_model.py: its `run` of `python -m dallebrain.cli
    ARGS` (each recipe step) goes through run_cli in this process, so a recipe test pays the imports once rather
    than ~8 s per step; `check=True` raises CalledProcessError as subprocess does. The environment's thread count
    (shipped_model.run's `threads`) does not apply in-process. The slow whole-chain recipe test keeps real
    subprocesses."""

    def run(self, command, check: bool = False, env=None, **_) -> subprocess.CompletedProcess:
        if list(command[1:3]) != ["-m", "dallebrain.cli"]:
            raise AssertionError(f"not a dallebrain command: {command}")
        result = run_cli(*command[3:])
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, command, result.stdout, result.stderr)
        return result


_SCRIPTS: dict = {}


def run_script(path: Path, *args) -> subprocess.CompletedProcess:
    """`python PATH ARGS` for a recipe or benchmark with a main(argv), run in this process (the module loaded once),
    with what a subprocess returns: SystemExit("error: ...") is exit status 1 with that line on stderr, as the
    interpreter gives it; SystemExit(n) is status n; any other exception is raised (a traceback is a bug)."""
    import importlib.util
    import io

    path = Path(path)
    if path not in _SCRIPTS:
        spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _SCRIPTS[path] = module
    argv = [str(a) for a in args]
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            _SCRIPTS[path].main(argv)
        except SystemExit as stop:
            if isinstance(stop.code, str):
                print(stop.code, file=err)
                code = 1
            else:
                code = stop.code or 0
    return subprocess.CompletedProcess([str(path), *argv], code, out.getvalue(), err.getvalue())
