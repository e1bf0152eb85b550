"""Stage settings: a dataclass per stage with a default, a JSON file from configs/, then `key=value`
overrides from the command line (nanoGPT style: `--set batch_size=32`).

A stage's model architecture is its model's own config nested under one field (`LdmTrainConfig.unet` is a
`UnetConfig`): in JSON an object (`"unet": {"block_out_channels": [32, 64]}`), on the command line a dotted
key (`--set unet.block_out_channels=[32,64]`). Architecture fields the stage takes from its inputs (the latent
size from the VAE) are listed in the config's `derived_settings` and refused as settings."""

from __future__ import annotations

import dataclasses
import json
import math
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
    # "no" (fp32) or "bf16": accelerate's autocast around each micro-batch's loss, weights and optimiser state
    # kept fp32; "fp16" on a CUDA GPU only; "auto": bf16 where the hardware computes it natively, else fp32
    # (resolve_mixed_precision; the configs/*.cpu.json diffusion stages use it). Off by default: BENCHMARKS.md
    # "Compute precision" and "Attention kernels for training" have speed and loss parity.
    mixed_precision: str = "no"
    max_grad_norm: float = 1.0
    checkpoint_every: int = 500  # steps between checkpoints (and at the end)
    keep_checkpoints: int = 2  # older ones are deleted
    log_every: int = 10  # steps between rows of losses.csv
    sample_every: int = 500  # steps between sample grids (0: never)
    seed: int = 0
    # > 0: this invocation's wall-clock budget in seconds, counted from the command's start (loading the data and
    # building the caches are inside it; the final export is not). After a few timed steps, max_steps is cut (never
    # raised) to what fits at the measured speed, so a run on unknown hardware (a lent GPU) ends in time with a
    # finished, exported model; the learning-rate schedule decays to the cut step (training/loop.py)
    time_budget_s: float = 0.0
    # torch.compile the trained UNet's blocks (training/loop.compile_regions; inductor: C++ kernels on a CPU), for
    # the stages that allow it (Stage.compilable: the UNet stages). The compile costs a minute or more per machine
    # (inductor's cache makes later runs start in seconds), so it pays on long runs only (BENCHMARKS.md "Compiling
    # the UNet's blocks"). Off by default
    compile: bool = False


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


def _settings(config, prefix: str = "") -> dict[str, tuple[Any, str]]:
    """Every setting by its dotted name ("unet.block_out_channels"): (the object holding it, its field name)."""
    found = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            found.update(_settings(value, f"{prefix}{f.name}."))
        else:
            found[prefix + f.name] = (config, f.name)
    return found


def _flatten(values: dict, groups: set[str], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        name = prefix + key
        if name in groups:
            if not isinstance(value, dict):
                raise ValueError(f"{name} must be a JSON object of settings, e.g. \"{name}\": {{\"key\": value}}")
            flat.update(_flatten(value, groups, name + "."))
        else:
            flat[name] = value
    return flat


def _why_not(key: str, settable: dict, derived: dict[str, str]) -> str:
    """Why `key` is not a setting, in a few words."""
    if key in derived:
        return f"{key} is taken from {derived[key]}, not set"
    # a pre-nesting flat key ("block_out_channels") is named with its new place ("unet.block_out_channels")
    moved = [name for name in settable if name.endswith("." + key)]
    return f"unknown setting {key}" + (f" (now {' or '.join(moved)})" if moved else "")


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Default config of `cls`, updated from a JSON file and `key=value` strings; unknown keys are errors."""
    config = cls()
    derived: dict[str, str] = getattr(cls, "derived_settings", {})
    everything = _settings(config)
    settable = {k: v for k, v in everything.items() if k not in derived}
    groups = {name.rsplit(".", 1)[0] for name in everything if "." in name}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file not found: {path}")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"config file {path} is not valid JSON: {exc.msg} (line {exc.lineno})") from exc
        if not isinstance(values, dict):
            raise ValueError(f"config file {path} must hold a JSON object of settings")
        try:
            values = _flatten(values, groups)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        wrong = [_why_not(key, settable, derived) for key in values if key not in settable]
        if wrong:
            raise ValueError(f"{path}: {'; '.join(wrong)}")
        for key, value in values.items():
            owner, name = settable[key]
            setattr(owner, name, _from_json(value, getattr(owner, name), f"{path}: {key}"))
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or key not in settable:
            why = _why_not(key, settable, derived) + "; " if sep else ""
            raise ValueError(f"bad override {item!r}: {why}use key=value with key one of "
                             f"{', '.join(sorted(settable))}")
        owner, name = settable[key]
        try:
            setattr(owner, name, _coerce(value, getattr(owner, name)))
        except (ValueError, TypeError) as exc:  # int("abc"); tuple(5) for a list setting: say which override
            raise ValueError(f"bad override {item!r}: {exc}") from None
    if isinstance(config, TrainConfig):  # before a stage builds its caches: a bad value costs nothing
        import torch

        check_shared(config)
        check_mixed_precision(config.mixed_precision, torch.cuda.is_available())
    return config


# the shared settings' lowest values: below them a run fails only after its data and caches are loaded (a
# ZeroDivisionError at the first checkpoint or log row, AdamW's refusal of the rate, an OverflowError where the
# time budget cuts max_steps), or trains nothing (max_steps 0 exported an untrained model)
LOWEST = {"max_steps": 1, "batch_size": 1, "gradient_accumulation": 1, "checkpoint_every": 1, "keep_checkpoints": 1,
          "log_every": 1, "sample_every": 0, "warmup_steps": 0, "seed": 0, "weight_decay": 0.0,
          "max_grad_norm": 0.0, "time_budget_s": 0.0}


def check_shared(config: TrainConfig) -> None:
    """One-line ValueError for a shared setting out of its range, or not finite."""
    for name, lowest in LOWEST.items():
        value = getattr(config, name)
        if not math.isfinite(value) or value < lowest:
            raise ValueError(f"{name} must be a finite number of at least {lowest:g}, got {value!r}")
    if not math.isfinite(config.learning_rate) or config.learning_rate <= 0:
        raise ValueError(f"learning_rate must be a positive number, got {config.learning_rate!r}")


def _from_json(value: Any, current: Any, where: str) -> Any:
    """A --config value as the setting holds it, or a one-line ValueError: JSON's "false" (a string, so true) or
    "100" for a number would otherwise be stored as given."""
    if isinstance(current, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(current, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "whole number"
    elif isinstance(current, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "number"
        value = float(value) if ok else value
    elif isinstance(current, (list, tuple)):
        ok, kind = isinstance(value, list), "list"
        value = type(current)(value) if ok else value
    elif isinstance(current, str):
        ok, kind = isinstance(value, str), "string"
    else:  # a setting without a default type (None): as given
        ok, kind = True, ""
    if not ok:
        raise ValueError(f"{where} must be a {kind}, got {value!r}")
    return value


MIXED_PRECISIONS = ("no", "bf16", "fp16", "auto")


def resolve_mixed_precision(value: str, cuda: bool) -> str:
    """What accelerate is given: `value` itself, or for "auto" "bf16" where the device computes bfloat16 natively
    (a CUDA GPU that supports it, a CPU with AVX-512 BF16 or AMX), else "no". Emulated bf16 would be slower than
    fp32, so "auto" never picks it."""
    check_mixed_precision(value, cuda)
    if value != "auto":
        return value
    from dallebrain.pipelines.precision import native_bf16

    return "bf16" if native_bf16("cuda" if cuda else "cpu") else "no"


def check_mixed_precision(value: str, cuda: bool) -> None:
    """One-line ValueError for a mixed precision accelerate cannot honour here. fp16 on a CPU is refused because
    accelerate would accept it and silently train in fp32."""
    if value not in MIXED_PRECISIONS:
        raise ValueError(f"unknown mixed_precision {value!r}: choose from {', '.join(MIXED_PRECISIONS)}")
    if value == "fp16" and not cuda:
        raise ValueError("mixed_precision fp16 needs a CUDA GPU (on a CPU it would silently train in fp32): "
                         "use bf16")


def check_compile(config: TrainConfig, stage_name: str, compilable: bool, cuda: bool) -> None:
    """One-line ValueError when `compile` cannot be honoured: a stage not tested under torch.compile, or a CPU
    without the C++ compiler inductor builds its kernels with (it would fail at the first step, deep in a
    traceback)."""
    if not config.compile:
        return
    if not compilable:
        raise ValueError(f"compile=true is supported by the ldm and decoder stages, not {stage_name}")
    import shutil

    if not cuda and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        raise ValueError("compile=true needs a C++ compiler (g++) on this machine: torch.compile builds its CPU "
                         "kernels with it; install one or leave compile off")


def config_dict(config) -> dict:
    return dataclasses.asdict(config)
