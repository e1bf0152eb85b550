"""What a killed `prepare` leaves in its output folder, and its removal on the next run.

A kill -9 can leave temporary files of `data.io.atomic_path` (a half-written slice or table), and the slices
of a subject it was cutting: the rerun prepares that subject again, and where the new slices differ (fewer
or other levels) the old ones are referenced by no metadata row. Only prepare's own outputs are touched:
files named as prepare names them, in the folders where it writes them.
"""

from __future__ import annotations

import re
from pathlib import Path

from dallebrain.vocab import MODALITIES, ORIENTATIONS

# data.io.atomic_path's temporary names: ".tmp-" + 8 hex digits + "-" + the final name.
TEMP_FILE = re.compile(r"\.tmp-[0-9a-f]{8}-.+")
# data.slicing.cut_slices's names: <subject>_<modality>_<orientation>_<level, e.g. +012.0>mm.png
SLICE_FILE = re.compile(rf".+_({'|'.join(MODALITIES)})_({'|'.join(ORIENTATIONS)})_[+-]\d+\.\dmm\.png")


def remove_temp_files(out_dir: Path) -> list[Path]:
    """Delete the temporary files a killed run left in a prepared folder; returns them.

    Call it only when no other `prepare` writes into the same folder (its files in flight look the same)."""
    out_dir = Path(out_dir)
    folders = [out_dir, out_dir / "subjects", *_slice_folders(out_dir)]
    removed = []
    for folder in folders:
        for path in folder.glob(".tmp-*") if folder.is_dir() else ():
            if TEMP_FILE.fullmatch(path.name) and path.is_file() and not path.is_symlink():
                path.unlink()
                removed.append(path)
    return removed


def remove_unreferenced_slices(out_dir: Path, referenced: set[str]) -> list[Path]:
    """Delete slice PNGs under `out_dir`/slices that no metadata row names; returns them.

    `referenced`: paths relative to `out_dir` (as in the metadata). A subject folder left empty goes too."""
    out_dir = Path(out_dir)
    removed = []
    for folder in _slice_folders(out_dir):
        for path in folder.glob("*.png"):
            relative = path.relative_to(out_dir).as_posix()
            if SLICE_FILE.fullmatch(path.name) and relative not in referenced and path.is_file():
                path.unlink()
                removed.append(path)
        if not any(folder.iterdir()):
            folder.rmdir()
    return removed


def referenced_files(table) -> set[str]:
    """Every text cell of a metadata table that names a PNG: whatever the column (slice, mask, ...)."""
    names = set()
    for column in table.columns:
        if not str(table[column].dtype).startswith(("object", "str")):
            continue
        # Not .unique(): list cells (the visible structures) are unhashable.
        names.update(v for v in table[column] if isinstance(v, str) and v.endswith(".png"))
    return names


def _slice_folders(out_dir: Path) -> list[Path]:
    slices = out_dir / "slices"
    return sorted(p for p in slices.iterdir() if p.is_dir() and not p.is_symlink()) if slices.is_dir() else []
