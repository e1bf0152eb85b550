"""`dallebrain train ageing --data PREPARED_LONGITUDINAL --out DIR`: fit the ageing network (ageing/network.py) on
pairs of one person's sessions, both directions, every contrast and plane together.

Random crops (the network is convolutional; the age features are global) and left-right flips; one intensity
change (gain, gamma) applied to source and target alike, so the network learns the change with age and not an
intensity scale (generated slices are never exactly prepare's). Mean squared error on the images (see `_loss`)
after the follow-up is brought under the source's smooth intensity field (ageing/intensity.py); with
`--label-weight`, a warp model's displacement must also move the source's tissue labels onto the follow-up's
(`_label_loss`). bf16 autocast on CPU (AVX-512 BF16), fp32 master weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dallebrain.ageing.network import WEIGHTS_FILE, compose, warp
from dallebrain.training.common import data_provenance

VENTRICLE_BOOST = 3.0
SMOOTHNESS = 1.0  # weight of the displacement's gradient penalty within the label loss


@dataclass(frozen=True)
class AgeingTrainOptions:
    data: Path
    out: Path
    steps: int = 3000
    batch: int = 16
    crop: int = 64
    lr: float = 2e-3
    max_pairs: int = 30000  # pairs drawn from (their slices are held in memory once)
    seed: int = 0
    channels: tuple[int, ...] = (16, 32, 64, 128)
    bf16: bool = True
    loss: str = "l2"
    warp: bool = False
    downsample: int = 1
    overwrite: bool = False
    init_from: Path | None = None  # an ageing model folder to continue from (its architecture is kept)
    intensity: bool = True  # warp models: learn an intensity change besides the displacement
    linear_in_gap: bool = False  # the embedding sees the gap's sign only: change = gap x a field of the slice, age
    label_weight: float = 0.0  # warp models: weight of the tissue-label loss (the source's labels, warped)


def _batch(images, source_idx, target_idx, ages, options: AgeingTrainOptions, rng: np.random.Generator,
           labels=None, label_source=None, label_target=None, weights=None):
    """Random crops of pairs, flipped alike, under one random gain and gamma; with `labels`, the same crops of
    the pairs' tissue class maps ([N,H,W] uint8, rows `label_source` / `label_target`) as well."""
    import torch

    n, h, w = images.shape
    pick = rng.choice(len(source_idx), options.batch, p=weights) if weights is not None else rng.integers(
        0, len(source_idx), options.batch)
    top = rng.integers(0, h - options.crop + 1, options.batch)
    left = rng.integers(0, w - options.crop + 1, options.batch)
    window = [(slice(t, t + options.crop), slice(s, s + options.crop)) for t, s in zip(top, left, strict=True)]
    x = np.stack([images[source_idx[i]][rows, cols] for i, (rows, cols) in zip(pick, window, strict=True)])
    y = np.stack([images[target_idx[i]][rows, cols] for i, (rows, cols) in zip(pick, window, strict=True)])
    flip = rng.random(options.batch) < 0.5
    x[flip], y[flip] = x[flip, :, ::-1], y[flip, :, ::-1]
    gamma = np.exp(rng.uniform(-0.3, 0.3, (options.batch, 1, 1)))
    gain = rng.uniform(0.85, 1.1, (options.batch, 1, 1))
    x, y = (np.clip(gain * a ** gamma, 0, 1).astype(np.float32) for a in (x, y))
    src, tgt = ages[pick, 0], ages[pick, 1]
    batch = (torch.from_numpy(x)[:, None], torch.from_numpy(y)[:, None], torch.from_numpy(src), torch.from_numpy(tgt))
    if labels is None:
        return batch
    maps = []
    for rows_of in (label_source, label_target):
        m = np.stack([labels[rows_of[i]][rows, cols] for i, (rows, cols) in zip(pick, window, strict=True)])
        m[flip] = m[flip, :, ::-1]
        maps.append(torch.from_numpy(np.ascontiguousarray(m)).long())
    return (*batch, *maps)


def _one_hot(classes, n: int):
    """Class maps [N,H,W] -> [N,n,H,W] float; an ignored value (a lesion) is all zeros."""
    import torch

    return torch.nn.functional.one_hot(classes.clamp(max=n), n + 1)[..., :n].permute(0, 3, 1, 2).float()


def _label_loss(displacement, source_labels, target_labels):
    """The source's tissue maps moved by the predicted displacement against the follow-up's: mean squared
    difference over every class, plus one minus the soft Dice overlap of the lateral ventricles on the slices
    that show them. Why: the image loss alone moved the ventricle walls by about a seventh of the true change
    (7000 steps), since a wall that moves a pixel changes a thin rim of grey levels under noise; its class maps
    change by one there. The squared difference alone is a mean over every pixel of every slice, most of which
    never show a ventricle (1500 steps: 4 % of one held-out slice's change); Dice weighs each slice's ventricles
    by their own size, so a growth of a quarter costs as much on a small ventricle as on a large one."""
    from dallebrain.judges.network import CLASSES

    moved = warp(_one_hot(source_labels, len(CLASSES)), displacement)
    target = _one_hot(target_labels, len(CLASSES))
    loss = (moved - target).pow(2).mean()
    channel = CLASSES.index("ventricles")
    a, b = moved[:, channel].flatten(1), target[:, channel].flatten(1)
    shown = (a.sum(1) + b.sum(1)) > 0
    if shown.any():
        dice = 2 * (a * b).sum(1)[shown] / (a.sum(1) + b.sum(1))[shown]
        loss = loss + (1 - dice).mean()
    return loss + SMOOTHNESS * _bending(displacement)


def _bending(displacement):
    """Mean squared spatial gradient of the displacement (pixels per pixel), as VoxelMorph regularises: without
    it the Dice term bought ventricle growth with wiggles elsewhere (brain outline, sulci) and the predicted
    follow-ups lost SSIM (0.958 -> 0.916, 1500 steps)."""
    dy = displacement[:, :, 1:, :] - displacement[:, :, :-1, :]
    dx = displacement[:, :, :, 1:] - displacement[:, :, :, :-1]
    return dy.pow(2).mean() + dx.pow(2).mean()


def _load_labels(data: Path, pairs):
    """Tissue class maps of the pairs' slices ([M,H,W] uint8) and each pair's source and target rows in it; a
    one-line ValueError when the data set has no labels (only a simulated cohort has them)."""
    from PIL import Image

    from dallebrain.judges.network import CLASSES
    from dallebrain.judges.train import label_classes

    paths = [*pairs["source_label_path"], *pairs["target_label_path"]]
    if any(not isinstance(p, str) or not p for p in paths):
        raise ValueError(f"{data}: --label-weight needs tissue labels (label_path) on every slice; "
                         "prepare a simulated cohort, or train without it")
    index = {p: i for i, p in enumerate(dict.fromkeys(paths))}
    maps = []
    for path in index:
        with Image.open(Path(data) / path) as im:
            maps.append(label_classes(np.asarray(im)))
    maps = np.stack(maps)
    source, target = pairs["source_label_path"].map(index).to_numpy(), pairs["target_label_path"].map(index).to_numpy()
    # pairs whose slices show the lateral ventricles are drawn VENTRICLE_BOOST times as often: they carry most of
    # the change with age, and are about a fifth of all slices
    shown = (maps == CLASSES.index("ventricles")).any(axis=(1, 2))
    weights = np.where(shown[source] | shown[target], VENTRICLE_BOOST, 1.0)
    return maps, source, target, weights / weights.sum()


def _matched_targets(images, source_idx, target_idx):
    """Every pair's follow-up under its source's smooth intensity field (ageing/intensity.py), appended to the
    image array as rows of their own; returns (images, the targets' rows)."""
    from dallebrain.ageing.intensity import match_session_field

    matched = np.stack([match_session_field(images[s], images[t]) for s, t in zip(source_idx, target_idx,
                                                                                  strict=True)])
    return np.concatenate([images, matched]), len(images) + np.arange(len(matched))


def _previous(folder: Path) -> dict:
    """What a continued model was before: its own training record (steps add up across runs)."""
    import json

    return json.loads((Path(folder) / "config.json").read_text()).get("training", {})


def _loss(pred, target, kind: str):
    """Mean squared error by default. The output convolution starts at zero, so at first only it gets a gradient
    and the rest of the network learns through it: under L1 the follow-up's noise makes that gradient's sign
    random pixel by pixel and the output stayed at zero (400 steps, 32 people: no change learned); under L2 the
    systematic change adds up over the pixels."""
    diff = pred - target
    return diff.abs().mean() if kind == "l1" else diff.pow(2).mean()


def _check_options(options: AgeingTrainOptions) -> None:
    """One-line refusals of settings that need no data."""
    if options.steps < 1 or options.batch < 1:
        raise ValueError("--steps and --batch must be at least 1")
    if options.downsample not in (1, 2, 4) or options.crop % (options.downsample * 8):
        raise ValueError(f"--downsample must be 1, 2 or 4 and divide --crop / 8, got {options.downsample}")
    if not 0 <= options.label_weight < math.inf:
        raise ValueError(f"--label-weight must be 0 or more, got {options.label_weight}")
    if not 0 < options.lr < math.inf:  # inf trained and saved a model of NaN weights
        raise ValueError(f"--lr must be a positive number, got {options.lr}")
    if (Path(options.out) / WEIGHTS_FILE).exists() and not options.overwrite:
        raise ValueError(f"{options.out} already holds an ageing model (--overwrite replaces it)")


def train(options: AgeingTrainOptions, progress: bool = True) -> dict:
    """Train and save OUT/model.safetensors (fp16) + OUT/config.json; returns the training record."""
    import torch
    from tqdm import tqdm

    from dallebrain.ageing.network import (
        AgeingNet,
        AgeingNetConfig,
        load_ageing_net,
        save_ageing_net,
        without_intensity,
    )
    from dallebrain.ageing.pairs import load_images, longitudinal_table, session_pairs

    _check_options(options)
    # refusals that need no data first: loading the pairs takes minutes on a full cohort
    previous = load_ageing_net(options.init_from).train() if options.init_from is not None else None
    warps = previous.config.warp if previous is not None else options.warp
    if options.label_weight > 0 and not warps:
        raise ValueError("--label-weight needs a warp model (--warp): labels are moved by its displacement")
    if not options.intensity and not warps:
        raise ValueError("--no-intensity needs a warp model (--warp): without one the intensity change is all")
    pairs = session_pairs(longitudinal_table(options.data), ("train",))
    if len(pairs) > options.max_pairs:
        pairs = pairs.sample(options.max_pairs, random_state=options.seed)
    images, index = load_images(options.data, [*pairs["source_image_path"], *pairs["target_image_path"]])
    if options.crop > min(images.shape[1:]) or options.crop < 16 or options.crop % 8:
        raise ValueError(f"--crop must be a multiple of 8 in 16..{min(images.shape[1:])}, got {options.crop}")
    source_idx = pairs["source_image_path"].map(index).to_numpy()
    images, target_idx = _matched_targets(images, source_idx, pairs["target_image_path"].map(index).to_numpy())
    ages = pairs[["source_age", "target_age"]].to_numpy(np.float32)
    labelled = _load_labels(options.data, pairs) if options.label_weight > 0 else (None, None, None, None)
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    if previous is not None:
        net = previous
        if not options.intensity:
            net = without_intensity(net)
        net.config.linear_in_gap = net.config.linear_in_gap or options.linear_in_gap  # same weights, sign input
        if net.config.image_size != images.shape[1]:
            raise ValueError(f"--init-from {options.init_from} was trained on {net.config.image_size}-pixel slices, "
                             f"the data are {images.shape[1]}")
    else:
        net = AgeingNet(AgeingNetConfig(options.channels, image_size=images.shape[1], warp=options.warp,
                                        downsample=options.downsample, intensity=options.intensity,
                                        linear_in_gap=options.linear_in_gap))
    optimiser = torch.optim.AdamW(net.parameters(), lr=options.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, options.lr, total_steps=options.steps, pct_start=0.1)
    start, losses = time.time(), []
    bar = tqdm(range(options.steps), desc="ageing train", disable=not progress)
    for step in bar:
        x, y, src, tgt, *maps = _batch(images, source_idx, target_idx, ages, options, rng, *labelled)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=options.bf16):
            displacement, change = net.fields(x, src, tgt)
        displacement = None if displacement is None else displacement.float()
        pred = compose(x, displacement, change.float())
        loss = image_loss = _loss(pred, y, options.loss)
        if maps:
            loss = loss + options.label_weight * _label_loss(displacement, *maps)
        if step % 50 == 0:
            bar.set_postfix(image=f"{image_loss.item():.5f}", total=f"{loss.item():.5f}")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    net.config.training = {
        **data_provenance(options.data),
        "pairs": len(pairs), "people": int(pairs["subject_id"].nunique()), "steps": options.steps,
        "batch": options.batch, "crop": options.crop, "lr": options.lr, "bf16": options.bf16,
        "loss": options.loss, "label_weight": options.label_weight, "smoothness": SMOOTHNESS,
        "ventricle_boost": VENTRICLE_BOOST,
        "years": [float(pairs["years"].min()), float(pairs["years"].max())],
        "final_loss": float(np.mean(losses[-50:])), "seconds": round(time.time() - start, 1),
        "continued_from": options.init_from and _previous(options.init_from)}
    save_ageing_net(net, Path(options.out))
    return net.config.training


def main(argv: list[str] | None = None) -> None:
    from dallebrain.cli._common import OneLineParser

    parser = OneLineParser(prog="dallebrain train ageing",
                           description="Train the ageing network on a prepared longitudinal data set (its own "
                                       "options: no --config, --set or --resume; a run is minutes).")
    parser.add_argument("--data", type=Path, required=True, help="prepared longitudinal data set")
    parser.add_argument("--out", type=Path, required=True, help="folder for model.safetensors + config.json")
    defaults = AgeingTrainOptions(Path(), Path())
    for name in ("steps", "batch", "crop", "max_pairs", "seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--channels", default=",".join(map(str, defaults.channels)),
                        help="UNet widths per level, e.g. 16,32,64,128")
    parser.add_argument("--fp32", action="store_true", help="train in fp32 (default: bf16 autocast)")
    parser.add_argument("--warp", action="store_true",
                        help="predict a displacement + intensity change (default: an intensity change only)")
    parser.add_argument("--linear-in-gap", action="store_true",
                        help="the change is exactly the gap times a field (the embedding sees the gap's sign): "
                             "gaps beyond those trained on extrapolate linearly instead of folding back")
    parser.add_argument("--no-intensity", action="store_true",
                        help="warp models: a displacement only, no intensity change (it cost SSIM: README)")
    parser.add_argument("--downsample", type=int, default=1,
                        help="the UNet sees slices pooled by this factor (its smooth output is upsampled back)")
    parser.add_argument("--loss", choices=("l2", "l1"), default=defaults.loss)
    parser.add_argument("--label-weight", type=float, default=defaults.label_weight,
                        help="warp models: also fit the source's tissue labels, moved by the displacement, to the "
                             "follow-up's (needs label PNGs: a prepared simulated cohort); 0 = images only")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="continue from this ageing model's weights (its architecture; a fresh schedule)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        channels = tuple(int(c) for c in args.channels.split(","))
    except ValueError:
        raise ValueError(f"--channels must be comma-separated integers, got {args.channels!r}") from None
    if any(c < 8 or c % 8 for c in channels):
        raise ValueError(f"--channels must be multiples of 8 (GroupNorm of 8 groups), got {args.channels}")
    record = train(AgeingTrainOptions(args.data, args.out, args.steps, args.batch, args.crop, args.lr, args.max_pairs,
                                      args.seed, channels, bf16=not args.fp32, loss=args.loss, warp=args.warp,
                                      downsample=args.downsample, label_weight=args.label_weight,
                                      intensity=not args.no_intensity, linear_in_gap=args.linear_in_gap,
                                      overwrite=args.overwrite, init_from=args.init_from))
    print(f"ageing model in {args.out}: {record['steps']} steps on {record['pairs']} pairs of "
          f"{record['people']} people, final loss {record['final_loss']:.5f} ({record['seconds']:.0f} s)")
