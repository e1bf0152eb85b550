"""The `dallebrain` command: one module per command group (data, generate, train here; evaluate, serve,
synthesize and anomaly beside the code they drive), all sharing `_common.fail`. Command modules import only
typer and small constants at the top and everything heavy inside the commands, so `dallebrain --help` never
imports torch (tests/test_cli.py checks it; benchmarks/bench_cli_startup.py times it)."""

from __future__ import annotations

import typer

from dallebrain._env import configure_offline
from dallebrain.ageing.cli import age_cmd, evaluate_ageing_cmd
from dallebrain.anomaly.cli import anomaly_cmd, evaluate_anomaly_cmd, generate_lesion_cmd
from dallebrain.app.cli import serve_cmd
from dallebrain.cli._common import fail
from dallebrain.cli.data import data_app
from dallebrain.cli.generate import export_cmd, generate_cmd, variations_cmd
from dallebrain.cli.train import train_cmd
from dallebrain.evaluation.cli import evaluate_cmd
from dallebrain.judges.cli import judge_app
from dallebrain.synthesize.cli import evaluate_utility_cmd, synthesize_cmd

configure_offline()

__all__ = ["app", "fail", "main"]

app = typer.Typer(help="Dall-e Brain: text-prompted synthetic healthy brain MRI.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False, rich_markup_mode=None)
app.add_typer(data_app, name="data")
app.command("generate")(generate_cmd)
app.command("variations")(variations_cmd)
app.command("export")(export_cmd)
# the stage parses its own options (and its own --help)
app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                       "help_option_names": []})(train_cmd)
app.command("evaluate")(evaluate_cmd)
app.command("serve")(serve_cmd)
app.command("synthesize")(synthesize_cmd)
app.command("evaluate-utility")(evaluate_utility_cmd)
app.command("anomaly")(anomaly_cmd)
app.command("evaluate-anomaly")(evaluate_anomaly_cmd)
app.command("generate-lesion")(generate_lesion_cmd)
app.command("evaluate-ageing")(evaluate_ageing_cmd)
app.add_typer(judge_app, name="judge")
app.command("age")(age_cmd)


def main() -> None:
    app()
