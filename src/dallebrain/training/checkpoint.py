"""Checkpoints without pickle: module weights and optimizer tensors in safetensors, the rest in JSON.

A checkpoint folder is written under a temporary name and renamed when complete, and the `latest`
pointer is replaced atomically, so a kill -9 at any moment leaves the previous checkpoint usable. A disk
that fills, a copy cut short or a hand edit can still damage one, so resuming verifies each candidate
(every file present, safetensors headers and lengths, trainer.json) and takes the newest intact one;
rotation deletes a checkpoint only once enough intact newer ones exist.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from dallebrain.data.io import atomic_dir, write_text_atomic

_STEP_FOLDER = re.compile(r"step-(\d+)")
_TRAINER_KEYS = ("step", "optimizer", "scheduler", "python_random", "numpy_random")


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(root: Path, step: int, modules: dict[str, torch.nn.Module], optimizer, scheduler,
                    keep: int = 2, extra: dict | None = None) -> Path:
    """Write checkpoints/step-XXXXXXX and point `latest` at it; keep the newest `keep` intact ones."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    with atomic_dir(final) as tmp:  # a kill leaves the old checkpoint of this step or the new one, never half
        for name, module in modules.items():
            save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
                      tmp / f"{name}.safetensors")
        tensors, meta = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, tmp / "optimizer.safetensors")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
        save_file(rng, tmp / "rng.safetensors")
        np_state = np.random.get_state()
        trainer = {"step": step, "optimizer": meta, "scheduler": scheduler.state_dict(),
                   "python_random": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
                   "numpy_random": [np_state[0], np_state[1].tolist(), *np_state[2:]], "extra": extra or {}}
        (tmp / "trainer.json").write_text(json.dumps(trainer))
    point_latest(final)
    _rotate(root, step, keep, list(modules))
    for stale in [*root.glob(".tmp-*"), *root.glob(".old-*")]:  # left by a kill inside an earlier atomic_dir
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint folder in root, newest first."""
    found = []
    for path in Path(root).glob("step-*"):
        match = _STEP_FOLDER.fullmatch(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint folder in root, intact or not (None: it holds none); `resume_checkpoint` chooses
    the one to load."""
    found = _checkpoints(root)
    return found[0][1] if found else None


def holds_run(root: Path) -> bool:
    """Whether root holds a training run's checkpoints (a checkpoint folder or the `latest` pointer), intact or not."""
    return latest_checkpoint(root) is not None or (Path(root) / "latest").exists()


def require_run(root: Path) -> None:
    """ValueError unless root holds a training run to resume."""
    if not holds_run(root):
        raise ValueError(f"--resume: {root} holds no checkpoint to continue from; run without --resume to start "
                         "a new run")


def point_latest(checkpoint: Path) -> None:
    """Make the `latest` pointer beside `checkpoint` name it (atomically: a reader sees the old or the new name)."""
    write_text_atomic(Path(checkpoint).parent / "latest", Path(checkpoint).name + "\n")


def checkpoint_damage(path: Path, module_names: list[str]) -> str | None:
    """Why the checkpoint folder `path` cannot be resumed from (a file missing or damaged), or None if intact.

    Reads only the safetensors headers (the library checks that they cover each file's length exactly) and
    trainer.json, so it takes milliseconds however large the weights are."""
    path = Path(path)
    for name in [*module_names, "optimizer", "rng"]:
        file = path / f"{name}.safetensors"
        if not file.is_file():
            return f"{file.name} is missing"
        try:
            with safe_open(file, "pt") as f:
                names = set(f.keys())
        except (SafetensorError, OSError) as exc:
            return f"{file.name} is damaged ({exc})"
        if name == "rng" and "torch" not in names:
            return f"{file.name} lacks the torch RNG state"
    file = path / "trainer.json"
    if not file.is_file():
        return f"{file.name} is missing"
    try:
        trainer = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"{file.name} is not valid JSON ({exc})"
    except OSError as exc:
        return f"{file.name} cannot be read ({exc.strerror})"
    missing = [key for key in _TRAINER_KEYS if not isinstance(trainer, dict) or key not in trainer]
    if missing:
        return f"{file.name} lacks {', '.join(missing)}"
    match = _STEP_FOLDER.fullmatch(path.name)
    if match and trainer["step"] != int(match.group(1)):
        return f"{file.name} is of step {trainer['step']}, not {int(match.group(1))}"
    return None


def resume_checkpoint(root: Path, module_names: list[str]) -> tuple[Path, list[str]]:
    """The newest intact checkpoint in root, and notes on what was passed over on the way (damaged newer
    checkpoints, a missing or stale `latest` pointer). ValueError when there is none to resume from: starting
    over instead would overwrite the run's log and, through rotation, its checkpoints."""
    root = Path(root)
    pointer = root / "latest"
    named = pointer.read_text(errors="replace").strip() if pointer.is_file() else None
    require_run(root)
    notes = []
    if named is None:
        notes.append(f"{pointer.name} is missing")
    elif not _STEP_FOLDER.fullmatch(named) or not (root / named).is_dir():
        notes.append(f"{pointer.name} names {named!r}, which is not a checkpoint folder")
    for _, path in _checkpoints(root):
        damage = checkpoint_damage(path, module_names)
        if damage is None:
            if named != path.name and not notes:  # killed between the folder's rename and the pointer's
                notes.append(f"{pointer.name} names {named!r}, an older checkpoint")
            return path, notes
        notes.append(f"skipped {path.name}: {damage}")
    raise ValueError(f"--resume found no intact checkpoint in {root} ({'; '.join(notes)}): delete that folder to "
                     "start over, or choose another --out")


def _rotate(root: Path, step: int, keep: int, module_names: list[str]) -> None:
    """Delete a checkpoint older than `step` only once `keep` intact ones at or after it (up to `step`) exist,
    so damaged ones never count towards those kept. Never one newer than `step`: a resume passed those over as
    damaged, and the run overwrites each as it reaches its step."""
    intact = 1  # the one just written
    for older, path in _checkpoints(root):
        if older >= step:
            continue
        if intact >= max(1, keep):
            shutil.rmtree(path, ignore_errors=True)
        elif checkpoint_damage(path, module_names) is None:
            intact += 1


def load_checkpoint(path: Path, modules: dict[str, torch.nn.Module], optimizer, scheduler) -> dict:
    """Restore modules, optimizer, scheduler and RNG states; returns the trainer record (its step)."""
    path = Path(path)
    damage = checkpoint_damage(path, list(modules))
    if damage is not None:
        raise ValueError(f"checkpoint {path} cannot be resumed from: {damage}")
    for name, module in modules.items():
        module.load_state_dict(load_file(path / f"{name}.safetensors"))
    trainer = json.loads((path / "trainer.json").read_text())
    optimizer.load_state_dict(_unflatten_optimizer(load_file(path / "optimizer.safetensors"),
                                                   trainer["optimizer"]))
    scheduler.load_state_dict(trainer["scheduler"])
    rng = load_file(path / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available() and "cuda0" in rng:
        torch.cuda.set_rng_state_all([rng[f"cuda{i}"] for i in range(torch.cuda.device_count()) if f"cuda{i}" in rng])
    py = trainer["python_random"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npr = trainer["numpy_random"]
    np.random.set_state((npr[0], np.array(npr[1], dtype=np.uint32), *npr[2:]))
    return trainer
