"""What every command shares: the one-line error and exit code of bad input, and the default worker count.
Imports nothing heavy, and nothing of the commands, so any command module can use it."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import typer

TRACEBACK_VARIABLE = "DALLEBRAIN_TRACEBACK"  # set: an unexpected exception shows its traceback (cli.main, run_script)


def fail(message: str, code: int = 2) -> None:
    """One clear line on stderr and a non-zero exit: what every bad input gets (a longer message is cut to its
    first line)."""
    typer.echo(f"error: {(str(message).splitlines() or [''])[0]}", err=True)
    raise typer.Exit(code)


def first_line(exc: BaseException) -> str:
    """An exception's message in one line for `fail`; its type's name where it has no message (an empty
    KeyError or EOFError would otherwise print "error: " and nothing)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def workers_or_default(workers: int | None) -> int:
    """Parallel processes: as asked (at least 1, else the one-line refusal), else the cores (at most 4)."""
    if workers is not None and workers < 1:
        fail(f"--workers must be at least 1, got {workers}")
    return workers if workers is not None else min(4, os.cpu_count() or 1)


def run_script(main: Callable[[], object]) -> None:
    """A recipe's or benchmark's `__main__`: what its own checks did not foresee (a file missing halfway, a damaged
    table) ends in one line and exit 1, as in `dallebrain`, rather than a traceback; SystemExit (its own one-line
    refusals, argparse's exit 2) and Ctrl-C pass through; DALLEBRAIN_TRACEBACK=1 shows the traceback."""
    try:
        main()
    except Exception as exc:
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        print(f"error: {Path(sys.argv[0]).name}: {type(exc).__name__}: {first_line(exc)} (run again with "
              f"{TRACEBACK_VARIABLE}=1 for the traceback)", file=sys.stderr)
        raise SystemExit(1) from None


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments get the project's one-line `error: ...` and exit 2 (argparse prints its usage first): the
    parser of `dallebrain train STAGE`, the recipes and the benchmarks."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")
