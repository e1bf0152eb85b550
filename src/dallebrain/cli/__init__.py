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
from dallebrain.cli._common import TRACEBACK_VARIABLE, fail
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


def main(argv: list[str] | None = None) -> None:
    """The `dallebrain` command. Click's own refusals (an option that is not a number, a missing argument, an
    unknown option) come out as one line naming the command and the option, as every other bad input does,
    instead of click's usage block; an EOFError that escapes a command (a file cut short) is named rather than
    shown as "Aborted!"; any other exception is one line too, its traceback shown when DALLEBRAIN_TRACEBACK is
    set."""
    import os
    import sys

    from dallebrain.cli._common import first_line

    # click's classes as typer raises them (typer 0.29 vendors its own click: `import click` would not catch them)
    usage_error, click_exception = (next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)
                                    for name in ("UsageError", "ClickException"))
    try:
        code = typer.main.get_command(app).main(args=argv, prog_name="dallebrain", standalone_mode=False)
    except usage_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `dallebrain` or a group alone: the help, exit 2
            exc.show()
        else:
            path = exc.ctx.command_path if exc.ctx is not None else "dallebrain"
            message = (exc.format_message().strip().splitlines() or [type(exc).__name__])[0]  # names the option
            typer.echo(f"error: {path}: {message} (see {path} --help)", err=True)
        code = exc.exit_code
    except click_exception as exc:
        typer.echo(f"error: {first_line(exc)}", err=True)
        code = exc.exit_code
    except typer.Abort as exc:
        if isinstance(exc.__cause__, EOFError):
            typer.echo(f"error: a file ended before its data did ({first_line(exc.__cause__)})", err=True)
        else:
            typer.echo("Aborted!", err=True)
        code = 1
    except Exception as exc:
        # what no check foresaw (an input no command validates, or a bug): still one line and exit 1, with the
        # traceback one variable away for a bug report
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        typer.echo(f"error: unexpected {type(exc).__name__}: {first_line(exc)} (run again with "
                   f"{TRACEBACK_VARIABLE}=1 for the traceback)", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
