"""What every command shares: the one-line error and exit code of bad input, and the default worker count.
Imports nothing heavy, and nothing of the commands, so any command module can use it."""

from __future__ import annotations

import os

import typer


def fail(message: str, code: int = 2) -> None:
    """One clear line on stderr and a non-zero exit: what every bad input gets."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def workers_or_default(workers: int | None) -> int:
    """Parallel processes: as asked, else the cores (at most 4)."""
    return max(1, workers if workers is not None else min(4, os.cpu_count() or 1))
