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
    os.environ.setdefault("NILEARN_DATA", str(cache_dir() / "nilearn_data"))
