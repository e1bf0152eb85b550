"""`dallebrain judge train`: fit the tissue segmenter on a prepared data set's (slice, tissue label) pairs of the
train split, every contrast and plane together, so one network judges any slice."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dallebrain.judges.network import IGNORE, LABEL_TO_CLASS, WEIGHTS_FILE
from dallebrain.training.common import data_provenance


@dataclass(frozen=True)
class TrainOptions:
    data: Path
    out: Path
    steps: int = 900
    batch: int = 16
    crop: int = 64  # random crops: 4x cheaper than whole slices; the network is fully convolutional
    lr: float = 3e-3
    max_slices: int = 6000  # pairs held in memory, drawn evenly at random from the train split
    seed: int = 0
    channels: tuple[int, ...] = (16, 32, 64, 96)
    overwrite: bool = False


def label_classes(label_png: np.ndarray) -> np.ndarray:
    """Label PNG values -> class indices (IGNORE for a lesion or an unknown value)."""
    table = np.full(256, IGNORE, dtype=np.uint8)
    for value, cls in LABEL_TO_CLASS.items():
        table[value] = cls
    return table[label_png]


def check_run_options(out: Path, max_slices: int | None, overwrite: bool, product: str, what: str) -> None:
    """What `judge train` and `judge fit-age` refuse before reading a slice: --max-slices under 1, an --out that is
    a file (it would fail only when the result is saved), or one holding a judge already (without --overwrite)."""
    if max_slices is not None and max_slices < 1:
        raise ValueError(f"--max-slices must be at least 1, got {max_slices}")
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"--out exists and is not a folder: {out}")
    if (Path(out) / product).exists() and not overwrite:
        raise ValueError(f"{out} already holds {what} (--overwrite replaces it)")


def labelled_rows(data: Path, splits: tuple[str, ...], max_rows: int | None = None, seed: int = 0):
    """Rows of metadata.parquet with a tissue label in `splits` (a random `max_rows` of them)."""
    from dallebrain.data.dataset import read_metadata

    table = read_metadata(data, ("split", "image_path"))
    if "label_path" not in table or table["label_path"].isna().all():
        raise ValueError(f"{data}: no tissue labels (label_path): prepare a simulated cohort with this version")
    rows = table[table["label_path"].notna() & table["split"].isin(splits)]
    if rows.empty:
        raise ValueError(f"{data}: no labelled slices in split {'/'.join(splits)}")
    if max_rows is not None and len(rows) > max_rows:
        rows = rows.sample(max_rows, random_state=seed)
    return rows.reset_index(drop=True)


def load_pairs(data: Path, rows) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 [N, H, W], class maps uint8 [N, H, W]) of the given rows."""
    from PIL import Image

    from dallebrain.data.slicing import load_png

    images, labels = [], []
    for row in rows.itertuples():
        images.append(load_png(Path(data) / row.image_path))
        with Image.open(Path(data) / row.label_path) as im:
            labels.append(label_classes(np.asarray(im)))
    return np.stack(images), np.stack(labels)


def _batch(images, labels, options: TrainOptions, rng: np.random.Generator):
    """Random crops, left-right flips and intensity changes (scale, gamma, noise): generated slices are never
    exactly prepare's, the judge must not hang on one intensity scale."""
    import torch

    n, h, w = images.shape
    idx = rng.integers(0, n, options.batch)
    top = rng.integers(0, h - options.crop + 1, options.batch)
    left = rng.integers(0, w - options.crop + 1, options.batch)
    x = np.stack([images[i, t:t + options.crop, s:s + options.crop] for i, t, s in zip(idx, top, left, strict=True)])
    y = np.stack([labels[i, t:t + options.crop, s:s + options.crop] for i, t, s in zip(idx, top, left, strict=True)])
    flip = rng.random(options.batch) < 0.5
    x[flip], y[flip] = x[flip, :, ::-1], y[flip, :, ::-1]
    gamma = np.exp(rng.uniform(-0.35, 0.35, (options.batch, 1, 1)))
    scale = rng.uniform(0.85, 1.15, (options.batch, 1, 1))
    x = np.clip(scale * x ** gamma + rng.normal(0, 0.01, x.shape) * (x > 0), 0, 1).astype(np.float32)
    x = add_background_haze(x, y == 0, rng)
    return torch.from_numpy(x)[:, None], torch.from_numpy(y.astype(np.int64))


HAZE_SHARE = 0.5  # crops given a hazy background
HAZE_MAX = 0.2  # brightest haze level: generated T2 slices measured up to ~0.17 outside the head, T1 ~0.19


def add_background_haze(x: np.ndarray, background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth grey haze with speckle over the background of about half the crops. Prepared slices are exactly
    0 outside the brain, but a generated slice's background is a haze (measured: up to ~0.2); a judge trained on
    clean zeros read that haze as CSF, so 'brain area' and every tissue fraction of generated T2 slices were
    wrong (95 % of the image called brain)."""
    from scipy import ndimage

    out = x.copy()
    for i in np.flatnonzero(rng.random(len(x)) < HAZE_SHARE):
        field = ndimage.gaussian_filter(rng.normal(0, 1, x.shape[1:]), rng.uniform(2, 8))
        field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
        level = rng.uniform(0.02, HAZE_MAX)
        haze = level * (0.5 + 0.5 * field) + rng.normal(0, 0.2 * level, field.shape)
        out[i] = np.where(background[i], np.clip(haze, 0, 1), x[i])
    return out.astype(np.float32)


def _loss(logits, target):
    """Cross-entropy plus soft Dice over the tissue classes: the ventricles are a few % of the pixels, and
    cross-entropy alone lets the network neglect them."""
    import torch
    from torch.nn import functional

    ce = functional.cross_entropy(logits, target, ignore_index=IGNORE)
    valid = (target != IGNORE)[:, None]
    prob = torch.softmax(logits, dim=1) * valid
    onehot = functional.one_hot(target.clamp(max=logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2) * valid
    inter, total = (prob * onehot).sum((0, 2, 3)), (prob + onehot).sum((0, 2, 3))
    dice = (2 * inter[1:] + 1) / (total[1:] + 1)
    return ce + (1 - dice).mean()


def train(options: TrainOptions, progress: bool = True) -> dict:
    """Train and save (OUT/model.safetensors fp16 + OUT/config.json); returns the training record."""
    import torch
    from tqdm import tqdm

    from dallebrain.judges.network import TissueNet, TissueNetConfig, save_tissue_net

    if options.steps < 1 or options.batch < 1:
        raise ValueError("--steps and --batch must be at least 1")
    check_run_options(options.out, options.max_slices, options.overwrite, WEIGHTS_FILE, "a tissue judge")
    if options.crop < 16 or options.crop % 8:  # its upper bound, the slices' size, is known once they are read
        raise ValueError(f"--crop must be a multiple of 8 from 16, got {options.crop}")
    rows = labelled_rows(options.data, ("train",), options.max_slices, options.seed)
    images, labels = load_pairs(options.data, rows)
    if options.crop > min(images.shape[1:]) or options.crop < 16 or options.crop % 8:
        raise ValueError(f"--crop must be a multiple of 8 in 16..{min(images.shape[1:])}, got {options.crop}")
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    net = TissueNet(TissueNetConfig(options.channels, image_size=images.shape[1]))
    optimiser = torch.optim.AdamW(net.parameters(), lr=options.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, options.lr, total_steps=options.steps, pct_start=0.1)
    start, losses = time.time(), []
    for _ in tqdm(range(options.steps), desc="judge train", disable=not progress):
        x, y = _batch(images, labels, options, rng)
        loss = _loss(net(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    net.config.training = {
        **data_provenance(options.data), "slices": len(rows), "steps": options.steps, "batch": options.batch,
        "crop": options.crop,
        "final_loss": float(np.mean(losses[-50:])), "seconds": round(time.time() - start, 1)}
    save_tissue_net(net, Path(options.out))
    return net.config.training
