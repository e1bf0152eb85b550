"""Stage settings: a dataclass per stage with a default, a JSON file from configs/, then `key=value`
overrides from the command line (nanoGPT style: `--set batch_size=32`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclasses.dataclass
class TrainConfig:
    """Settings every stage shares."""

    max_steps: int = 1000  # optimisation steps (each of gradient_accumulation micro-batches)
    batch_size: int = 16  # micro-batch per process
    learning_rate: float = 1e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 100  # linear warm-up, then cosine decay to 10 %
    gradient_accumulation: int = 1
    mixed_precision: str = "no"  # "no", "fp16" or "bf16" (accelerate)
    max_grad_norm: float = 1.0
    checkpoint_every: int = 500  # steps between checkpoints (and at the end)
    keep_checkpoints: int = 2  # older ones are deleted
    log_every: int = 10  # steps between rows of losses.csv
    sample_every: int = 500  # steps between sample grids (0: never)
    seed: int = 0


def _coerce(value: str, current: Any) -> Any:
    if isinstance(current, bool):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"expected true/false, got {value!r}")
        return value.lower() in ("true", "1")
    if isinstance(current, int):
        return int(value)
    if isinstance(current, float):
        return float(value)
    if isinstance(current, (list, tuple)):
        parsed = json.loads(value)
        return type(current)(parsed)
    return value


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Default config of `cls`, updated from a JSON file and `key=value` strings; unknown keys are errors."""
    config = cls()
    names = {f.name for f in dataclasses.fields(cls)}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file not found: {path}")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"config file {path} is not valid JSON: {exc.msg} (line {exc.lineno})") from exc
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown setting(s) in {path}: {', '.join(unknown)}")
        for key, value in values.items():
            current = getattr(config, key)
            setattr(config, key, type(current)(value) if isinstance(current, tuple) else value)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or key not in names:
            raise ValueError(f"bad override {item!r}: use key=value with key one of {', '.join(sorted(names))}")
        setattr(config, key, _coerce(value, getattr(config, key)))
    return config


def config_dict(config) -> dict:
    return dataclasses.asdict(config)
