"""`python -m dallebrain.synthesize ...` (and so `accelerate launch -m dallebrain.synthesize ...`): the
`dallebrain synthesize` command, on every process of a launch."""

import typer

from dallebrain._env import configure_offline
from dallebrain.synthesize.cli import synthesize_cmd

if __name__ == "__main__":
    configure_offline()
    typer.run(synthesize_cmd)
