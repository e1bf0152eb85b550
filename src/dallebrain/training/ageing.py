"""`dallebrain train ageing --data PREPARED_LONGITUDINAL --out DIR`: fit the ageing network (ageing/network.py) on
pairs of one person's sessions, both directions, every contrast and plane together.

Random crops (the network is convolutional; the age features are global) and left-right flips; one intensity
change (gain, gamma) applied to source and target alike, so the network learns the change with age and not an
intensity scale (generated slices are never exactly prepare's). L1 loss: the follow-up's noise cannot be
predicted from the baseline, and L1 blurs less than L2 over it. bf16 autocast on CPU (AVX-512 BF16): about
1.4x per step at this size, fp32 master weights.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dallebrain.ageing.network import WEIGHTS_FILE


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


def _batch(images, source_idx, target_idx, ages, options: AgeingTrainOptions, rng: np.random.Generator):
    import torch

    n, h, w = images.shape
    pick = rng.integers(0, len(source_idx), options.batch)
    top = rng.integers(0, h - options.crop + 1, options.batch)
    left = rng.integers(0, w - options.crop + 1, options.batch)
    crops = [(images[source_idx[i], t:t + options.crop, s:s + options.crop],
              images[target_idx[i], t:t + options.crop, s:s + options.crop]) for i, t, s in zip(pick, top, left,
                                                                                                 strict=True)]
    x, y = (np.stack(c) for c in zip(*crops, strict=True))
    flip = rng.random(options.batch) < 0.5
    x[flip], y[flip] = x[flip, :, ::-1], y[flip, :, ::-1]
    gamma = np.exp(rng.uniform(-0.3, 0.3, (options.batch, 1, 1)))
    gain = rng.uniform(0.85, 1.1, (options.batch, 1, 1))
    x, y = (np.clip(gain * a ** gamma, 0, 1).astype(np.float32) for a in (x, y))
    src, tgt = ages[pick, 0], ages[pick, 1]
    return (torch.from_numpy(x)[:, None], torch.from_numpy(y)[:, None], torch.from_numpy(src), torch.from_numpy(tgt))


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


def train(options: AgeingTrainOptions, progress: bool = True) -> dict:
    """Train and save OUT/model.safetensors (fp16) + OUT/config.json; returns the training record."""
    import torch
    from tqdm import tqdm

    from dallebrain.ageing.network import AgeingNet, AgeingNetConfig, load_ageing_net, save_ageing_net
    from dallebrain.ageing.pairs import load_images, longitudinal_table, session_pairs

    if options.steps < 1 or options.batch < 1:
        raise ValueError("--steps and --batch must be at least 1")
    if options.downsample not in (1, 2, 4) or options.crop % (options.downsample * 8):
        raise ValueError(f"--downsample must be 1, 2 or 4 and divide --crop / 8, got {options.downsample}")
    if (Path(options.out) / WEIGHTS_FILE).exists() and not options.overwrite:
        raise ValueError(f"{options.out} already holds an ageing model (--overwrite replaces it)")
    pairs = session_pairs(longitudinal_table(options.data), ("train",))
    if len(pairs) > options.max_pairs:
        pairs = pairs.sample(options.max_pairs, random_state=options.seed)
    images, index = load_images(options.data, [*pairs["source_image_path"], *pairs["target_image_path"]])
    if options.crop > min(images.shape[1:]) or options.crop < 16 or options.crop % 8:
        raise ValueError(f"--crop must be a multiple of 8 in 16..{min(images.shape[1:])}, got {options.crop}")
    source_idx = pairs["source_image_path"].map(index).to_numpy()
    images, target_idx = _matched_targets(images, source_idx, pairs["target_image_path"].map(index).to_numpy())
    ages = pairs[["source_age", "target_age"]].to_numpy(np.float32)
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    if options.init_from is not None:
        net = load_ageing_net(options.init_from).train()
        if net.config.image_size != images.shape[1]:
            raise ValueError(f"--init-from {options.init_from} was trained on {net.config.image_size}-pixel slices, "
                             f"the data are {images.shape[1]}")
    else:
        net = AgeingNet(AgeingNetConfig(options.channels, image_size=images.shape[1], warp=options.warp,
                                        downsample=options.downsample))
    optimiser = torch.optim.AdamW(net.parameters(), lr=options.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, options.lr, total_steps=options.steps, pct_start=0.1)
    start, losses = time.time(), []
    for _ in tqdm(range(options.steps), desc="ageing train", disable=not progress):
        x, y, src, tgt = _batch(images, source_idx, target_idx, ages, options, rng)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=options.bf16):
            pred = net(x, src, tgt)
        loss = _loss(pred.float(), y, options.loss)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    table = Path(options.data) / "metadata.parquet"
    net.config.training = {
        "data": Path(options.data).resolve().name, "metadata_sha256": hashlib.sha256(table.read_bytes()).hexdigest(),
        "pairs": len(pairs), "people": int(pairs["subject_id"].nunique()), "steps": options.steps,
        "batch": options.batch, "crop": options.crop, "lr": options.lr, "bf16": options.bf16,
        "years": [float(pairs["years"].min()), float(pairs["years"].max())],
        "final_loss": float(np.mean(losses[-50:])), "seconds": round(time.time() - start, 1),
        "continued_from": options.init_from and _previous(options.init_from)}
    save_ageing_net(net, Path(options.out))
    return net.config.training


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dallebrain train ageing",
                                     description="Train the ageing network on a prepared longitudinal data set.")
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
    parser.add_argument("--downsample", type=int, default=1,
                        help="the UNet sees slices pooled by this factor (its smooth output is upsampled back)")
    parser.add_argument("--loss", choices=("l2", "l1"), default=defaults.loss)
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
                                      downsample=args.downsample,
                                      overwrite=args.overwrite, init_from=args.init_from))
    print(f"ageing model in {args.out}: {record['steps']} steps on {record['pairs']} pairs of "
          f"{record['people']} people, final loss {record['final_loss']:.5f} ({record['seconds']:.0f} s)")
