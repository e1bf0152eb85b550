"""Offline-by-default environment: nothing in this package may reach the network at run time."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """Project cache (derived atlases, nilearn data dir); override with DALLEBRAIN_CACHE."""
    return Path(os.environ.get("DALLEBRAIN_CACHE", Path.home() / ".cache" / "dallebrain"))


def configure_offline() -> None:
    """Point hub clients at offline mode and nilearn at a local folder, unless the user already chose."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    # transformers 5 draws a "Loading weights" bar for the text tower's ~100 tensors (loaded in milliseconds):
    # noise on every `dallebrain generate`. Hub bars only; our own progress bars are plain tqdm.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("NILEARN_DATA", str(cache_dir() / "nilearn_data"))
