"""Checkpoints without pickle: module weights and optimizer tensors in safetensors, the rest in JSON.

A checkpoint folder is written under a temporary name and renamed when complete, and the `latest`
pointer is replaced atomically, so a kill -9 at any moment leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from dallebrain.data.io import write_text_atomic


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
    """Write checkpoints/step-XXXXXXX and point `latest` at it; keep the newest `keep`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
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
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    write_text_atomic(root / "latest", final.name + "\n")
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    pointer = Path(root) / "latest"
    if not pointer.exists():
        return None
    path = Path(root) / pointer.read_text().strip()
    return path if (path / "trainer.json").exists() else None


def load_checkpoint(path: Path, modules: dict[str, torch.nn.Module], optimizer, scheduler) -> dict:
    """Restore modules, optimizer, scheduler and RNG states; returns the trainer record (its step)."""
    path = Path(path)
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
