"""`python -m dallebrain.app ...`: the serve command on its own."""

import typer

from dallebrain.app.cli import serve_cmd

if __name__ == "__main__":
    typer.run(serve_cmd)
