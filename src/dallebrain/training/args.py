"""The command line every training stage accepts (`dallebrain train STAGE ...` or `python -m
dallebrain.training.STAGE ...`, which `accelerate launch` can run unchanged on several GPUs)."""

from __future__ import annotations

import argparse
from pathlib import Path


def stage_parser(stage: str, description: str) -> argparse.ArgumentParser:
    from dallebrain.cli._common import OneLineParser  # here: importing it loads the cli package, which imports this

    parser = OneLineParser(prog=f"dallebrain train {stage}", description=description)
    parser.add_argument("--data", type=Path, required=True, help="prepared data set folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder (save_pretrained + checkpoints)")
    parser.add_argument("--config", type=Path, default=None, help="JSON settings (see configs/)")
    parser.add_argument("--max-steps", type=int, default=None, help="override max_steps")
    parser.add_argument("--resume", action="store_true", help="continue from the newest intact checkpoint in --out "
                        "(an error when there is none)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def overrides_of(args: argparse.Namespace) -> list[str]:
    extra = list(args.overrides)
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise ValueError(f"--max-steps must be at least 1, got {args.max_steps}")
        extra.append(f"max_steps={args.max_steps}")
    return extra


def stage_config(stage_cls, config_cls, args: argparse.Namespace):
    """The stage's settings from --config / --set / --max-steps, with every refusal that needs no data or model
    made here: a run that cannot honour `compile` stops before minutes of loading, not at its first step."""
    import torch

    from dallebrain.training.config import check_compile, load_config
    from dallebrain.training.loop import check_run_folder

    config = load_config(config_cls, args.config, overrides_of(args))
    if hasattr(config, "check"):  # a stage's own refusals of a setting's value (LdmTrainConfig.prediction_type)
        config.check()
    check_compile(config, stage_cls.name, stage_cls.compilable, torch.cuda.is_available())
    check_run_folder(args.out, args.resume, config)  # before the data and caches (ldm's are minutes)
    return config
