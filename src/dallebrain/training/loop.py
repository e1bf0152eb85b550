"""The loop every stage shares: accelerate, AdamW with warm-up + cosine, gradient accumulation, clipping,
atomic checkpoints with exact resume, losses.csv, sample grids, and the final save_pretrained export.

A stage supplies only what differs (its models, its loss, its samples, its export), see `Stage`.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path

import torch

from dallebrain.data.io import atomic_path, write_text_atomic
from dallebrain.models.attention import use_cpu_training_attention
from dallebrain.training.checkpoint import (
    holds_run,
    load_checkpoint,
    point_latest,
    require_run,
    resume_checkpoint,
    save_checkpoint,
)
from dallebrain.training.config import (
    TrainConfig,
    check_compile,
    config_dict,
    resolve_mixed_precision,
)


class Stage:
    """What a training stage provides to `fit`. Subclasses set `name` and override the methods."""

    name = "stage"
    images_per_step: int = 0  # for the images/second column of losses.csv
    compilable = False  # whether `compile=true` may torch.compile what setup() prepares (tested stages only)

    def setup(self, accelerator) -> None:
        """Move models to the device and wrap the trainable ones with accelerator.prepare."""
        raise NotImplementedError

    def modules(self) -> dict[str, torch.nn.Module]:
        """Everything a checkpoint must hold (trainable models, EMA copies, learned scalars)."""
        raise NotImplementedError

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        raise NotImplementedError

    def loss(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        """Losses of one micro-batch; key "loss" is optimised, the others are logged."""
        raise NotImplementedError

    def after_optimizer_step(self, step: int) -> None:
        """E.g. an EMA update."""

    def sample(self, step: int, path: Path) -> None:
        """Write a sample grid PNG (optional)."""

    def export(self, out_dir: Path) -> None:
        """Write the save_pretrained folder the next stage reads."""
        raise NotImplementedError


def unwrap(accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under accelerate's wrappers and torch.compile's: what checkpoints, EMA updates and
    exports read, so their tensor names are the same with `compile` on or off."""
    return accelerator.unwrap_model(model, keep_torch_compile=False)


def prepare_trained(accelerator, model: torch.nn.Module, compile: bool) -> torch.nn.Module:
    """accelerator.prepare, then torch.compile of the UNet's blocks when the config asks (compile_regions). Not
    through accelerate's dynamo_backend: that setting lives in a process-wide state fixed by the first Accelerator,
    so a second run in the same process would silently keep the first run's choice (measured: a compile=true run
    after an eager one trained eager). A diffusers model's attention trains with the faster kernel on a CPU
    (models/attention.py)."""
    model = accelerator.prepare(use_cpu_training_attention(model))
    if compile:
        compile_regions(unwrap(accelerator, model))
    return model


def compile_regions(unet: torch.nn.Module) -> torch.nn.Module:
    """torch.compile each block of a diffusers UNet (down blocks, mid block, up blocks) in place, each its own graph.
    Why not the whole UNet in one graph: under CPU bf16 autocast (torch 2.13's inductor) the whole graph's backward
    gives every tensor below the first downsampler a zero gradient, while each block compiled alone is right
    (gradients within 0.998 correlation of eager, none zero; BENCHMARKS.md "Compiling the UNet's blocks"). In place,
    so tensor names, checkpoints, EMA and exports are those of an eager run."""
    blocks = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
    for block in blocks:
        if block is not None:
            # static shapes: blocks of one class share their forward's code, and dynamo would otherwise turn the
            # second block's other channel count into a symbolic size, which inductor failed to compile for the
            # shipped UNet in fp32 ("cannot determine truth value of Relational"); a graph per block instead
            block.compile(dynamic=False)
    return unet


BUDGET_PROBE_STEPS = 20  # steps timed before a time budget cuts max_steps (the first is not counted: warm-up)


class _Budget:
    """time_budget_s: times this invocation's first steps, then cuts config.max_steps to what fits in what is left
    of the budget counted from `started` (time.perf_counter() when the invocation began, so the stage's start-up,
    its data and caches, is inside the budget; default: the loop's start)."""

    def __init__(self, config: TrainConfig, start: int, processes: int = 1, started: float | None = None):
        self.config, self.start, self.processes = config, start, processes
        self.probe_until = min(start + BUDGET_PROBE_STEPS, config.max_steps)
        self.t1 = time.perf_counter()
        self.t0 = self.t1 if started is None else started

    def after(self, done: int) -> bool:
        """Called after each step; True when it has just cut max_steps."""
        cfg = self.config
        if done == self.start + 1:
            self.t1 = time.perf_counter()
        if cfg.time_budget_s <= 0 or done != self.probe_until or done - self.start < 2:
            return False
        now = time.perf_counter()
        per_step = (now - self.t1) / (done - self.start - 1)
        fits = done + int(max(0.0, cfg.time_budget_s - (now - self.t0)) / max(per_step, 1e-9))
        if self.processes > 1:  # every process must stop at the same step: the main process's count holds
            from accelerate.utils import broadcast_object_list

            fits = broadcast_object_list([fits])[0]
        if fits >= cfg.max_steps:
            return False
        print(f"time budget {cfg.time_budget_s:g} s at {per_step:.3g} s/step: max_steps {cfg.max_steps} -> {fits}",
              file=sys.stderr, flush=True)
        cfg.max_steps = fits
        return True


def _lr_lambda(config: TrainConfig):
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / max(1, config.warmup_steps)
        progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def _keep_log_until(path: Path, step: int) -> None:
    """Keep the header and the rows of steps up to `step` of losses.csv (a resumed run redoes the later ones and
    appends their rows). A last row cut short by a kill is dropped; the file is replaced atomically, so a kill
    here leaves the old log whole."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    complete = [line for line in lines if line.endswith("\n")]  # only the last line can lack its end
    rows = list(csv.reader(complete))
    kept = rows[:1]
    for number, row in enumerate(rows[1:], start=2):
        try:
            row_step = int(row[0]) if row else None
        except ValueError:
            raise ValueError(f"{path} line {number} is not a log row (step {row[0]!r}): fix or remove that "
                             "line, then resume") from None
        if row_step is not None and row_step <= step:
            kept.append(row)
    if len(kept) == len(rows) and len(complete) == len(lines):
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(kept)


class _LossLog:
    """losses.csv of a run: one row every `log_every` steps with the losses, learning rate and throughput of the
    steps since the last row; appended to (a resumed run keeps its earlier rows), flushed per row."""

    def __init__(self, path: Path, images_per_step: int):
        self.new = not path.exists() or path.stat().st_size == 0
        self.file = open(path, "a", newline="")  # noqa: SIM115 - closed by close()
        self.writer = None
        self.images_per_step = images_per_step
        self.window_t, self.window_steps, self.last = time.perf_counter(), 0, {}

    def write(self, step: int, totals: dict[str, float], lr: float) -> None:
        elapsed = time.perf_counter() - self.window_t
        row = {"step": step, **{k: round(v, 6) for k, v in totals.items()}, "lr": lr,
               "images_per_second": round(self.images_per_step * self.window_steps / max(elapsed, 1e-9), 2)}
        if self.writer is None:
            self.writer = csv.DictWriter(self.file, fieldnames=list(row))
            if self.new:
                self.writer.writeheader()
        self.writer.writerow(row)
        self.file.flush()
        self.window_t, self.window_steps, self.last = time.perf_counter(), 0, row

    def close(self) -> None:
        self.file.close()


def _clip_sets(params) -> list[list[torch.nn.Parameter]]:
    """The parameter sets whose gradient norm is clipped as one: every group marked "clip_apart" (a GAN's
    discriminator) by itself, all the others together."""
    apart = [list(g["params"]) for g in params if isinstance(g, dict) and g.get("clip_apart")]
    joint = [p for g in params if not (isinstance(g, dict) and g.get("clip_apart"))
             for p in (g["params"] if isinstance(g, dict) else [g])]
    return [s for s in [joint, *apart] if s]


def _optimiser_step(stage: Stage, config: TrainConfig, accelerator, optimizer, scheduler, clip_sets,
                    step: int) -> dict[str, float]:
    """One optimiser step over `gradient_accumulation` micro-batches; the mean of each loss term."""
    totals: dict[str, float] = {}
    for micro in range(config.gradient_accumulation):
        with accelerator.autocast():
            losses = stage.loss(step, micro)
        accelerator.backward(losses["loss"] / config.gradient_accumulation)
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + float(v.detach()) / config.gradient_accumulation
    if config.max_grad_norm > 0:
        for params in clip_sets:
            accelerator.clip_grad_norm_(params, config.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    stage.after_optimizer_step(step)
    if not math.isfinite(totals["loss"]):
        raise FloatingPointError(f"loss is {totals['loss']} at step {step + 1}: lower the learning rate")
    return totals


def _resume(stage: Stage, ckpt_root: Path, accelerator, modules, optimizer, scheduler) -> tuple[int, list[str]]:
    """Load the newest intact checkpoint into the modules, optimizer and scheduler; its step and the notes on
    what was skipped on the way."""
    checkpoint, notes = resume_checkpoint(ckpt_root, list(modules))
    trainer = load_checkpoint(checkpoint, modules, getattr(optimizer, "optimizer", optimizer), scheduler)
    if accelerator.is_main_process:
        print(f"resuming {stage.name} from {checkpoint}" + (f" ({'; '.join(notes)})" if notes else ""),
              file=sys.stderr, flush=True)
        point_latest(checkpoint)  # so a reader of the pointer (the recipe) sees what this run continues
    return trainer["step"], notes


def fit(stage: Stage, config: TrainConfig, out_dir: str | Path, resume: bool = False,
        progress: bool = True, stop_at: int | None = None, started: float | None = None) -> dict:
    """Train `stage` for config.max_steps optimiser steps into out_dir; returns a summary.

    stop_at ends this invocation after that step with a checkpoint and no export, as a preempted job on a
    time-limited cluster would; `resume=True` later continues exactly where it stopped. `started`
    (time.perf_counter() at the command's start, before data and caches were loaded) is where time_budget_s is
    counted from; None counts from here."""

    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm import tqdm

    out = Path(out_dir)
    check_run_folder(out, resume, config)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_root = out / "checkpoints"
    cuda = torch.cuda.is_available()
    # a config not from load_config: an unknown or unusable mixed_precision is refused here, before any model
    precision = resolve_mixed_precision(config.mixed_precision, cuda)
    check_compile(config, stage.name, stage.compilable, cuda)
    accelerator = Accelerator(mixed_precision=precision, cpu=not cuda)
    set_seed(config.seed)
    stage.setup(accelerator)
    params = stage.trainable_parameters()  # a list of parameters, or of AdamW parameter groups (dicts)
    # fused: one kernel over every tensor instead of torch's CPU default, ~10 ops per tensor from Python (38 -> 8 ms
    # a step on the shipped UNet's 330 tensors; benchmarks/bench_training.py --step-parts); the same AdamW update
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay, fused=True)
    clip_sets = _clip_sets(params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    # The scheduler is not handed to accelerate: its wrapper steps once per process, which would run the
    # schedule N times too fast on N GPUs; ours counts optimiser steps.
    optimizer = accelerator.prepare(optimizer)
    modules = {k: unwrap(accelerator, m) for k, m in stage.modules().items()}
    start, notes = _resume(stage, ckpt_root, accelerator, modules, optimizer, scheduler) if resume else (0, [])
    if start > config.max_steps:  # it would export the later weights as a run of max_steps
        raise ValueError(f"the run in {out} is at step {start}, beyond max_steps {config.max_steps}: give at least "
                         f"{start}")
    if accelerator.is_main_process:
        _keep_log_until(out / "losses.csv", start)
        write_text_atomic(out / "train_config.json", _run_record(config, precision))
    log = _LossLog(out / "losses.csv", stage.images_per_step * config.gradient_accumulation)
    bar = tqdm(total=config.max_steps, initial=start, desc=f"train {stage.name}", unit="step",
               disable=not (progress and accelerator.is_local_main_process))
    end = config.max_steps if stop_at is None else min(stop_at, config.max_steps)
    budget = _Budget(config, start, accelerator.num_processes, started)
    step = start
    try:
        while step < end:
            totals = _optimiser_step(stage, config, accelerator, optimizer, scheduler, clip_sets, step)
            step = done = step + 1
            if budget.after(done):  # max_steps cut: end there, export, and say so in train_config.json
                end, bar.total = min(end, config.max_steps), config.max_steps
                if accelerator.is_main_process:
                    write_text_atomic(out / "train_config.json", _run_record(config, precision))
            log.window_steps += 1
            if accelerator.is_main_process and (done % config.log_every == 0 or done == config.max_steps):
                log.write(done, totals, scheduler.get_last_lr()[0])
                bar.set_postfix(loss=f"{totals['loss']:.4f}")
            bar.update()
            if accelerator.is_main_process and config.sample_every and done % config.sample_every == 0:
                stage.sample(done, out / "samples" / f"step-{done:07d}.png")
            if done % config.checkpoint_every == 0 or done in (config.max_steps, end):
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    save_checkpoint(ckpt_root, done, modules, optimizer, scheduler, config.keep_checkpoints)
    finally:
        bar.close()
        log.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and end == config.max_steps:
        stage.export(out)
    return {"steps": end, "resumed_from": start, "resume_notes": notes, "last_log": log.last}


def check_run_folder(out: Path, resume: bool, config: TrainConfig) -> None:
    """What --out and --resume must be, checked before any data, cache or model (every stage's main calls it
    through args.stage_config, and fit again): a new run needs a folder without a run or a finished model in it
    (one whose checkpoints were deleted was silently retrained over); a resumed one, a run with its settings."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out exists and is not a folder: {out}")
    ckpt_root = out / "checkpoints"
    if not resume and holds_run(ckpt_root):
        raise ValueError(f"{out} already holds a training run: pass --resume to continue it, or choose "
                         "another --out")
    if not resume and out.is_dir() and any("checkpoints" not in p.relative_to(out).parts
                                           for p in out.rglob("*.safetensors")):
        raise ValueError(f"{out} already holds a trained model: choose another --out")
    if resume:
        require_run(ckpt_root)  # before the models are built: starting over would overwrite the run's log
        check_resume_settings(out / "train_config.json", config)


# what a resumed run may change: its length (never below the step it resumes from), its time budget, how it logs,
# checkpoints and compiles, its precision (another machine), and how it is sampled and scored (the stages' val_*,
# eval_* and sample_* settings). Any other change would not apply (the optimizer's rates come from the checkpoint)
# or would not fit the checkpoint's modules, while train_config.json said it did
RESUME_MAY_CHANGE = frozenset({"max_steps", "time_budget_s", "checkpoint_every", "keep_checkpoints", "log_every",
                               "compile", "mixed_precision", "mixed_precision_resolved"})
RESUME_MAY_CHANGE_PREFIXES = ("val_", "eval_", "sample_")


def check_resume_settings(record: Path, config: TrainConfig) -> None:
    """One-line ValueError naming the settings a --resume changes from the run's train_config.json (settings
    the record lacks, added since it was written, are not compared)."""
    try:
        recorded = json.loads(record.read_text())
    except (OSError, ValueError):
        return  # no record (a run from before it was kept) or a damaged one: nothing to compare against
    now = json.loads(json.dumps(config_dict(config)))  # tuples as the lists the record holds
    changed = sorted(k for k in now if isinstance(recorded, dict) and k in recorded and k not in RESUME_MAY_CHANGE
                     and not k.startswith(RESUME_MAY_CHANGE_PREFIXES) and recorded[k] != now[k])
    if changed:
        raise ValueError(f"--resume with other settings than the run in {record.parent} was started with "
                         f"({', '.join(changed)}): resume with its own (train_config.json) or choose another --out")


def _run_record(config: TrainConfig, precision: str) -> str:
    """train_config.json: the settings (max_steps as a time budget left it), and what mixed_precision "auto"
    became on this machine (a rerun elsewhere may resolve it otherwise)."""
    return json.dumps({**config_dict(config), "mixed_precision_resolved": precision}, indent=2)


def save_image_grid(images: torch.Tensor, path: Path, columns: int = 4) -> None:
    """(N, 1, H, W) images in [0, 1] as one grey PNG grid, written atomically."""
    import numpy as np
    from PIL import Image

    arr = images.detach().float().clamp(0, 1).cpu().numpy()[:, 0]
    n, h, w = arr.shape
    rows = math.ceil(n / columns)
    grid = np.zeros((rows * h, columns * w), dtype=np.float32)
    for i, img in enumerate(arr):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    with atomic_path(path) as tmp:
        Image.fromarray((grid * 255).round().astype(np.uint8)).save(tmp, format="PNG")
