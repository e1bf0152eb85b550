"""The real side of an evaluation: held-out slices and their captions (the prompts), the train slices matched to
them (the floor), the whole train split at the encoder's size (privacy search, age reference, the encoder's
training set) and real slices of different subjects at a prompt's position (the diversity reference)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dallebrain.evaluation import features as Fe
from dallebrain.evaluation.options import TABLE_COLUMNS, EvaluationOptions

TRAIN_BATCH = 256  # train slices read at once: the split is kept only at the encoder's (small) size
# The train split's features, kept in the cache folder (train_split/) so that a rerun skips reading and embedding
# every train slice (about 4 of a 256-slice run's 9 minutes on 54,448 slices here). Bump when what is stored changes.
TRAIN_CACHE_FORMAT = 1
TRAIN_CACHE = "train_split"


def sample_heldout(table, split: str, n: int, seed: int, warnings: list[str]):
    """n random rows of the held-out split (all of them, with a warning, when it has fewer), in table order."""
    rows = table[table["split"] == split]
    if len(rows) < 2:
        raise ValueError(f"the {split} split has {len(rows)} slice(s): need at least 2")
    if n > len(rows):
        warnings.append(f"n={n} but the {split} split has {len(rows)} slices: using all {len(rows)}")
        n = len(rows)
    return rows.iloc[np.sort(np.random.default_rng(seed).choice(len(rows), n, replace=False))].reset_index(drop=True)


def match_train(train, heldout, seed: int) -> np.ndarray:
    """Per held-out row, a train row of the same contrast and orientation at the nearest level (random subject)."""
    rng = np.random.default_rng(seed + 1)
    out = []
    for row in heldout.itertuples(index=False):
        pool = train[(train["modality"] == row.modality) & (train["orientation"] == row.orientation)]
        if pool.empty:
            pool = train
        gap = (pool["slice_mm"] - row.slice_mm).abs()
        best = pool.index[(gap - gap.min()).abs() < 1e-6].to_numpy()
        out.append(int(rng.choice(best)))
    return np.array(out)


def same_attribute_rows(table, row, k: int, seed: int) -> list[int]:
    """Up to k rows of different subjects at the row's contrast, orientation and level (any split)."""
    same = table[(table["modality"] == row["modality"]) & (table["orientation"] == row["orientation"])
                 & ((table["slice_mm"] - row["slice_mm"]).abs() < 1e-6)]
    same = same.drop_duplicates("subject_id")
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.permutation(same.index.to_numpy())[:k]]


@dataclass
class RealSlices:
    """The real slices an evaluation measures against."""

    table: object  # metadata.parquet (pandas DataFrame)
    train: object  # its train rows
    heldout: object  # the sampled held-out rows
    real: np.ndarray  # (n, S, S) held-out slices
    floor: np.ndarray  # (n, S, S) train slices matched to them
    train_work: np.ndarray  # (len(train), w, w) float16: the train split at the encoder's input size
    train_clip: np.ndarray | None  # Brain-CLIP embeddings of the train split, when the model has clip/
    clip: object | None  # the model folder's Brain-CLIP

    @property
    def prompts(self) -> list[str]:
        return self.heldout["caption"].tolist()

    @property
    def modality(self) -> list[str]:
        return self.heldout["modality"].tolist()

    @property
    def size(self) -> int:
        return int(self.real.shape[-1])


def load_real_slices(options: EvaluationOptions, warnings: list[str]) -> RealSlices:
    """Read what the evaluation needs of the prepared data set; one-line ValueError when it cannot serve."""
    from tqdm.auto import tqdm

    from dallebrain.data.dataset import read_metadata

    data, progress = options.data, options.progress
    table = read_metadata(data, TABLE_COLUMNS, "--data")
    train = table[table["split"] == "train"].reset_index(drop=True)
    if len(train) < 2:
        raise ValueError(f"the train split of {data} has {len(train)} slice(s): need at least 2")
    heldout = sample_heldout(table, options.split, options.n, options.seed, warnings)
    floor_rows = match_train(train, heldout, options.seed)
    real = Fe.load_slices(data, heldout["image_path"], progress=progress, desc=f"loading {options.split} slices")
    floor = Fe.load_slices(data, train.loc[floor_rows, "image_path"], progress=progress, desc="loading floor slices")
    work = options.encoder.input_size
    clip = Fe.load_brain_clip(options.model)
    cache = options.cache_folder / TRAIN_CACHE
    key = train_split_key(data, len(train), work, options.model if clip is not None else None)
    cached = load_train_split(cache, key, len(train), work, clip is not None)
    if cached is not None:
        warnings.append(f"reused the cached train-split features in {cache}")
        return RealSlices(table, train, heldout, real, floor, *cached, clip)
    train_work = np.zeros((len(train), work, work), dtype=np.float16)
    train_clip = []
    starts = range(0, len(train), TRAIN_BATCH)
    for start in tqdm(starts, desc="loading the train split", disable=not progress, leave=False):
        images = Fe.load_slices(data, train["image_path"].iloc[start:start + TRAIN_BATCH])
        train_work[start:start + len(images)] = Fe.to_size(images, work)
        if clip is not None:  # embedded while the full-size slices are in memory, so they are read once
            train_clip.append(Fe.clip_image_features(clip, images))
    train_clip = np.concatenate(train_clip) if clip is not None else None
    save_train_split(cache, key, train_work, train_clip, warnings)
    return RealSlices(table, train, heldout, real, floor, train_work, train_clip, clip)


def train_split_key(data: Path, rows: int, work: int, model: Path | None) -> str:
    """What the cached train-split features depend on: the data set (its metadata.parquet, and prepare.json, whose
    settings can change the slices without changing the table), the rows, the work size and, when the model has a
    Brain-CLIP, that Brain-CLIP's weights and config (None: no embeddings)."""
    settings = Path(data) / "prepare.json"
    prepared = hashlib.sha256(settings.read_bytes()).hexdigest()[:16] if settings.is_file() else None
    clip = None
    if model is not None:
        digest = hashlib.sha256()
        for name in ("config.json", "model.safetensors"):
            digest.update((Path(model) / "clip" / name).read_bytes())
        clip = digest.hexdigest()[:16]
    payload = {"format": TRAIN_CACHE_FORMAT, "data": Fe.data_fingerprint(data), "prepared": prepared, "rows": rows,
               "work": work, "clip": clip}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def load_train_split(folder: Path, key: str, rows: int, work: int,
                     with_clip: bool) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(train_work, train_clip) from a cache folder written with the same key (which says whether it holds
    Brain-CLIP embeddings: with_clip), else None (absent, stale or unreadable: the split is simply read again)."""
    try:
        if json.loads((folder / "key.json").read_text()).get("key") != key:
            return None
        train_work = np.load(folder / "work.npy")
        train_clip = np.load(folder / "clip.npy") if with_clip else None
    except (OSError, ValueError, EOFError, AttributeError):  # unreadable or hand-edited: the split is read again
        return None
    if train_work.shape != (rows, work, work) or train_work.dtype != np.float16:
        return None
    if train_clip is not None and (train_clip.ndim != 2 or len(train_clip) != rows):
        return None
    return train_work, train_clip


def save_train_split(folder: Path, key: str, train_work: np.ndarray, train_clip: np.ndarray | None,
                     warnings: list[str]) -> None:
    """Keep the train-split features for the next run (the whole folder replaced at once, so a run killed while
    writing leaves the old cache or none); a cache that cannot be written costs a warning, not the evaluation."""
    from dallebrain.data.io import atomic_dir

    try:
        with atomic_dir(folder) as tmp:
            np.save(tmp / "work.npy", train_work)
            if train_clip is not None:
                np.save(tmp / "clip.npy", train_clip)
            (tmp / "key.json").write_text(json.dumps({"key": key}) + "\n")
    except OSError as exc:
        warnings.append(f"could not cache the train-split features in {folder}: {exc}")


def plan_diversity(reference: RealSlices, options: EvaluationOptions) -> list[dict]:
    """Prompts sampled several times each for the MS-SSIM diversity: per prompt, its real reference (slices of
    different subjects at its position) and the seeds of its samples, which continue after the n synthetic
    slices' seeds; "synthetic" is filled per route by the sampling."""
    k, n, seed = options.diversity_samples, len(reference.heldout), options.seed
    if k < 2:
        return []
    rng = np.random.default_rng(seed + 2)
    distinct = list(dict.fromkeys(reference.prompts))
    chosen = [distinct[i] for i in sorted(rng.choice(len(distinct), min(options.diversity_prompts, len(distinct)),
                                                     replace=False))]
    table, heldout = reference.table, reference.heldout
    plan = []
    for d, prompt in enumerate(chosen):
        rows = same_attribute_rows(table, heldout[heldout["caption"] == prompt].iloc[0], k, seed + d)
        plan.append({"prompt": prompt, "real": Fe.load_slices(options.data, table.loc[rows, "image_path"]),
                     "real_subjects": int(len(rows)), "synthetic": {},
                     "seeds": [seed + n + d * k + j for j in range(k)]})
    return plan
