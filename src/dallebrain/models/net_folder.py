"""One small network as a folder: fp16 safetensors weights + a JSON config (the judges and the ageing network).

Written through temporary files (a killed save leaves the old files whole); read back as float32 for inference.
Only safetensors are read: pickle files can run code when loaded. A missing, foreign or damaged folder is a
one-line ValueError naming what the folder should have been.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"


def save_net_folder(net: torch.nn.Module, config: dict, folder: str | Path) -> None:
    """net's weights in fp16 and its config (a JSON-ready dict) into `folder`."""
    from safetensors.torch import save_file

    from dallebrain.data.io import atomic_path, write_json_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    write_json_atomic(folder / CONFIG_FILE, config)


def load_net_folder(folder: str | Path, build: Callable[[dict], torch.nn.Module], what: str) -> torch.nn.Module:
    """build(config dict) with the folder's weights loaded, in eval mode; `what` names the network in errors
    ("tissue judge", "ageing model")."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    weights, config_path = folder / WEIGHTS_FILE, folder / CONFIG_FILE
    if not weights.is_file() or not config_path.is_file():
        article = "an" if what[:1] in "aeiou" else "a"
        raise ValueError(f"{folder}: not {article} {what} folder (needs {WEIGHTS_FILE} and {CONFIG_FILE})")
    try:
        net = build(json.loads(config_path.read_text()))
        net.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()})
    except (KeyError, TypeError, ValueError, RuntimeError, SafetensorError, OSError) as exc:
        raise ValueError(f"{folder}: unreadable {what} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    return net.eval()
