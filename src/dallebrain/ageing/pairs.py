"""Pairs of one person's sessions from a prepared longitudinal data set (`data simulate --timepoints`, then
`data prepare`): the same contrast, plane and slice position at two ages. Every session of a person is in the
same split (prepare splits people, not scans), so held-out pairs are of people the network never saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# one slice position of one person in one contrast: the sessions of a key differ by ageing (and noise, pose)
KEY = ["subject_id", "modality", "orientation", "slice_index"]
CARRIED = ["slice_mm", "sex"]
COLUMNS = [*KEY, *CARRIED, "session_id", "age", "image_path", "label_path", "split"]  # what pairs are made of


def longitudinal_table(data: str | Path):
    """metadata.parquet of a prepared longitudinal data set, or a one-line ValueError saying why it is not one."""
    from dallebrain.data.dataset import read_metadata

    table = read_metadata(data)
    if "session_id" not in table or table["session_id"].isna().all():
        raise ValueError(f"{data}: not longitudinal (no session_id): simulate with --timepoints, then prepare")
    missing = [c for c in COLUMNS if c not in table]
    if missing:
        raise ValueError(f"{data}: metadata.parquet lacks the column(s) {', '.join(missing)}")
    table = table[table["session_id"].notna()]
    sessions = table.groupby("subject_id")["session_id"].nunique()
    if (sessions < 2).all():
        raise ValueError(f"{data}: every person has one session; ageing pairs need two or more")
    return table.reset_index(drop=True)


def session_pairs(table, splits: tuple[str, ...], from_first: bool = False):
    """Rows of (source, target) slices of one person at one position and contrast, sessions apart. With
    `from_first` only the first session -> each later one (the evaluation's question); otherwise every ordered
    pair, younger -> older and older -> younger (training: the network ages and rejuvenates)."""
    rows = table[table["split"].isin(splits)]
    if rows.empty:
        raise ValueError(f"no slices in split {'/'.join(splits)}")
    cols = [*KEY, *CARRIED, "session_id", "age", "image_path", "label_path"]
    left = rows[cols].rename(columns={c: f"source_{c}" for c in ["session_id", "age", "image_path", "label_path"]})
    right = rows[[*KEY, "session_id", "age", "image_path", "label_path"]].rename(
        columns={c: f"target_{c}" for c in ["session_id", "age", "image_path", "label_path"]})
    pairs = left.merge(right, on=KEY)
    pairs = pairs[pairs["source_session_id"] != pairs["target_session_id"]]
    if from_first:
        first = rows.groupby("subject_id")["session_id"].min()
        pairs = pairs[(pairs["source_session_id"] == pairs["subject_id"].map(first))
                      & (pairs["target_session_id"] > pairs["source_session_id"])]
    if pairs.empty:
        raise ValueError(f"no two sessions of one person at one slice position in split {'/'.join(splits)}")
    pairs = pairs.assign(years=pairs["target_age"] - pairs["source_age"])
    return pairs.sort_values([*KEY, "source_session_id", "target_session_id"]).reset_index(drop=True)


def load_images(data: str | Path, paths) -> tuple[np.ndarray, dict[str, int]]:
    """The distinct slices among `paths` as one float32 array [N, H, W] and path -> row index."""
    from dallebrain.data.slicing import load_png

    unique = list(dict.fromkeys(paths))
    index = {p: i for i, p in enumerate(unique)}
    return np.stack([load_png(Path(data) / p) for p in unique]), index
