"""Checks and reads of a pipeline folder: safetensors only, every component present, one-line errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
LDM_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


class ModelFolderError(ValueError):
    """A model folder that cannot be used (missing, incomplete, or holding pickle weights)."""


def check_model_folder(folder: str | Path, components: tuple[str, ...] = LDM_COMPONENTS) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"model folder not found: {folder}")
    pickles = [p for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise ModelFolderError(f"refusing pickle weights ({pickles[0].relative_to(folder)}): "
                               "safetensors only")
    for name in components:
        sub = folder / name
        if not sub.is_dir() or not any(sub.iterdir()):
            raise ModelFolderError(f"incomplete model folder {folder}: '{name}/' is missing")
        if name in ("unet", "vae", "text_encoder", "prior", "decoder", "clip") and not any(
                p.suffix == ".safetensors" for p in sub.iterdir()):
            raise ModelFolderError(f"incomplete model folder {folder}: no safetensors weights in '{name}/'")
    return folder


def folder_hash(folder: str | Path) -> str:
    """sha256 over the folder's weight and config files (names and bytes): the model hash in sidecars."""
    folder = Path(folder)
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".safetensors", ".json", ".txt") and "checkpoints" not in path.parts:
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def read_info(folder: str | Path) -> dict:
    """dallebrain.json: what the pipeline was trained on (image size, grid, data card summary)."""
    path = Path(folder) / "dallebrain.json"
    return json.loads(path.read_text()) if path.exists() else {}
