"""The prepared data set as training batches: images in [0, 1] with one of their captions."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def batch_indices(n: int, batch_size: int, seed: int, step: int, rank: int = 0,
                  weights: np.ndarray | None = None) -> np.ndarray:
    """Rows of the batch for a step: a pure function of (seed, step, rank), so a resumed run sees exactly
    the batches it would have seen. `weights` (one per row, summing to 1) draws rows with those probabilities
    (with replacement) instead of uniformly."""
    rng = np.random.default_rng([seed, step, rank])
    if weights is not None:
        return rng.choice(n, size=batch_size, replace=True, p=weights)
    return rng.choice(n, size=batch_size, replace=n < batch_size)


def read_metadata(folder: str | Path, required=(), what: str | None = None):
    """metadata.parquet of a prepared data set, or a one-line ValueError saying why it cannot serve: no table, a
    table that is not readable parquet, or one without the `required` columns (a hand-made or truncated table
    otherwise fails deep inside a command with a KeyError). `what` names the folder in the message (an option
    such as "--real")."""
    import pandas as pd

    name = f"{what} {folder}" if what else str(folder)
    path = Path(folder) / "metadata.parquet"
    if not path.is_file():
        raise ValueError(f"{name}: not a prepared data set (no metadata.parquet)")
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises its own types (ArrowInvalid, OSError) for a damaged file
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{name}: metadata.parquet is not a readable table ({reason})") from None
    missing = [c for c in required if c not in table]
    if missing:
        raise ValueError(f"{name}: metadata.parquet lacks the column(s) {', '.join(missing)}")
    return table


class SliceDataset:
    """Rows of metadata.parquet (optionally one split / modality / orientation) with lazily cached pixels.

    Args:
        prepared_dir: folder made by `dallebrain data prepare`.
        split: "train", "val", "test" or None for all.
        modalities, orientations: keep only these (None: all).
        max_rows: keep at most this many rows (a seeded random subset), for quick runs.
        columns: more columns the caller reads (a training stage's captions), named in a one-line ValueError when
            the table lacks them, before any slice or model is loaded.
    """

    def __init__(self, prepared_dir: str | Path, split: str | None = "train", modalities=None,
                 orientations=None, max_rows: int | None = None, seed: int = 0, columns=()):
        self.root = Path(prepared_dir)
        required = ["image_path", *(["split"] if split is not None else []), *(["modality"] if modalities else []),
                    *(["orientation"] if orientations else []), *columns]
        table = read_metadata(self.root, required)
        if split is not None:
            table = table[table["split"] == split]
        if modalities:
            table = table[table["modality"].isin(list(modalities))]
        if orientations:
            table = table[table["orientation"].isin(list(orientations))]
        if max_rows is not None and len(table) > max_rows:
            table = table.sample(max_rows, random_state=seed)
        if table.empty:
            raise ValueError(f"no slices in {self.root} for split={split} modalities={modalities} "
                             f"orientations={orientations}")
        self.table = table.reset_index(drop=True)
        self._pixels: np.ndarray | None = None
        self._loaded = np.zeros(len(self.table), dtype=bool)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def image_size(self) -> int:
        return self.image(0).shape[-1]

    def image(self, i: int) -> np.ndarray:
        from dallebrain.data.slicing import PNG_MAX, load_png

        if self._pixels is not None and self._loaded[i]:
            return self._pixels[i].astype(np.float32) / PNG_MAX
        img = load_png(self.root / self.table.at[i, "image_path"])
        if self._pixels is None:
            self._pixels = np.zeros((len(self), *img.shape), dtype=np.uint16)
        self._pixels[i] = np.round(img * PNG_MAX)
        self._loaded[i] = True
        return img

    def captions(self, i: int) -> list[str]:
        return list(self.table.at[i, "captions"])

    def batch(self, indices, caption_seed: int | None = None):
        """(images (B, 1, H, W) float tensor in [0, 1], one caption per image: a random phrasing when
        caption_seed is given, else the canonical caption)."""
        import torch

        rng = np.random.default_rng(caption_seed) if caption_seed is not None else None
        images = np.stack([self.image(int(i)) for i in indices])[:, None]
        captions = []
        for i in indices:
            options = self.captions(int(i))
            captions.append(options[int(rng.integers(len(options)))] if rng is not None else options[0])
        return torch.from_numpy(images), captions
