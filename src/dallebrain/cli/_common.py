"""What every command shares: the one-line error and exit code of bad input, and the default worker count.
Imports nothing heavy, and nothing of the commands, so any command module can use it."""

from __future__ import annotations

import os

import typer


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
