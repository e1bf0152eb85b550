"""Feature spaces for the evaluation.

1. The Brain-CLIP image tower of the model folder (`clip/`), when the folder has one. It was trained with the
   generator's data, so it is the model's own view of a slice.
2. The evaluation's own encoder, trained here on the real train split and independent of the generator: a
   small CNN supervised to predict contrast, orientation, slice level, age and sex (as Inception was trained
   on ImageNet labels); its penultimate layer is the feature, and its heads are the attribute predictors
   (attributes.py). It is cached in the report folder and reused when the data and settings are the same.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dallebrain.vocab import MODALITIES, ORIENTATIONS

ENCODER_FORMAT = "dallebrain-eval-encoder"
SEXES = ("F", "M")


@dataclass
class EncoderConfig:
    """The evaluation encoder and how it is trained; every field is saved with the cached encoder."""

    input_size: int = 64  # slices are area-averaged to this side first (the privacy search uses it too)
    widths: tuple[int, ...] = (16, 32, 64, 128)  # channels per stage; every stage halves the side (64 -> 4)
    feature_dim: int = 128  # size of the penultimate layer: the feature space of the realism metrics
    steps: int = 600  # optimiser steps on the real train split (about 0.05-0.1 s each on 2 CPU cores)
    batch_size: int = 32
    learning_rate: float = 2e-3
    max_shift: int = 3  # px of random translation per training image (augmentation)
    seed: int = 0

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        if self.input_size < 16 or self.input_size % 2 ** len(self.widths):
            raise ValueError(f"EncoderConfig.input_size must be >= 16 and divisible by {2 ** len(self.widths)}, "
                             f"got {self.input_size}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("EncoderConfig.steps and batch_size must be at least 1")


# --- images ------------------------------------------------------------------------------------------------------


def to_size(images, size: int) -> np.ndarray:
    """(N, H, W) slices at side `size`: area averaging when H is a multiple of size, else linear resampling."""
    images = np.asarray(images, dtype=np.float32)
    side = images.shape[-1]
    if side == size:
        return images
    if side % size == 0:
        f = side // size
        return images.reshape(len(images), size, f, size, f).mean(axis=(2, 4))
    from skimage.transform import resize

    return np.stack([resize(im, (size, size), order=1, anti_aliasing=True, preserve_range=True)
                     for im in images]).astype(np.float32)


def load_slices(root: str | Path, image_paths, size: int | None = None, progress: bool = False,
                desc: str = "loading slices") -> np.ndarray:
    """Prepared slices (PNG paths relative to `root`) as (N, S, S) float32 in [0, 1], resized to `size` on the
    fly (so a large train split never sits in memory at full resolution)."""
    from tqdm.auto import tqdm

    from dallebrain.data.slicing import load_png

    root = Path(root)
    paths = list(image_paths)
    out = None
    for i, rel in enumerate(tqdm(paths, desc=desc, disable=not progress, leave=False)):
        image = load_png(root / rel)
        if size is not None:
            image = to_size(image[None], size)[0]
        if out is None:
            out = np.zeros((len(paths), *image.shape), dtype=np.float32)
        out[i] = image
    return out if out is not None else np.zeros((0, size or 0, size or 0), dtype=np.float32)


def data_fingerprint(root: str | Path) -> str:
    """sha256 of metadata.parquet: the cached encoder is only reused for the very same data set."""
    return hashlib.sha256((Path(root) / "metadata.parquet").read_bytes()).hexdigest()[:16]


# --- targets -------------------------------------------------------------------------------------------------------


def level_for_prediction(orientation: str | None, slice_mm: float | None) -> float:
    """The level an attribute predictor is asked for: the MNI coordinate, but |x| for sagittal slices, whose
    side a single slice barely shows (the hemispheres are near mirror images)."""
    if slice_mm is None or orientation is None or (isinstance(slice_mm, float) and math.isnan(slice_mm)):
        return float("nan")
    return abs(float(slice_mm)) if orientation == "sagittal" else float(slice_mm)


@dataclass
class Targets:
    """Attribute targets of N slices; -1 / NaN where unknown."""

    contrast: np.ndarray
    orientation: np.ndarray
    level_mm: np.ndarray
    age: np.ndarray
    sex: np.ndarray

    @classmethod
    def from_fields(cls, modality, orientation, slice_mm, age, sex) -> Targets:
        def index(values, options):
            return np.array([options.index(v) if v in options else -1 for v in values], dtype=np.int64)

        return cls(index(modality, MODALITIES), index(orientation, ORIENTATIONS),
                   np.array([level_for_prediction(o, s) for o, s in zip(orientation, slice_mm, strict=True)]),
                   np.array([np.nan if a is None else float(a) for a in age], dtype=np.float64),
                   index(sex, SEXES))

    @classmethod
    def from_table(cls, table) -> Targets:
        def col(name):
            return [None if v is None or (isinstance(v, float) and math.isnan(v)) else v
                    for v in (table[name] if name in table else [None] * len(table))]

        return cls.from_fields(col("modality"), col("orientation"), col("slice_mm"), col("age"), col("sex"))

    @classmethod
    def from_prompts(cls, prompts: list[str]) -> Targets:
        """What each prompt asked for (parse_prompt); NaN / -1 where it is silent."""
        from dallebrain.data.prompts import parse_prompt

        parsed = [parse_prompt(p) for p in prompts]
        return cls.from_fields([p.modality for p in parsed], [p.orientation for p in parsed],
                               [p.slice_mm for p in parsed], [p.age for p in parsed], [p.sex for p in parsed])

    def subset(self, idx) -> Targets:
        return Targets(*(getattr(self, f.name)[idx] for f in dataclasses.fields(self)))


# --- the encoder ---------------------------------------------------------------------------------------------------


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(math.gcd(8, c_out), c_out), nn.SiLU(),
                         nn.Conv2d(c_out, c_out, 3, 1, 1), nn.GroupNorm(math.gcd(8, c_out), c_out), nn.SiLU())


class AttributeEncoder(nn.Module):
    """CNN -> global average pool -> feature (penultimate layer) -> one linear head per attribute."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        stages, c_in = [], 1
        for width in config.widths:
            stages.append(_block(c_in, width, 2))
            c_in = width
        self.body = nn.Sequential(*stages)
        self.neck = nn.Sequential(nn.Linear(c_in, config.feature_dim), nn.SiLU())
        self.heads = nn.ModuleDict({"contrast": nn.Linear(config.feature_dim, len(MODALITIES)),
                                    "orientation": nn.Linear(config.feature_dim, len(ORIENTATIONS)),
                                    "level": nn.Linear(config.feature_dim, 1),
                                    "age": nn.Linear(config.feature_dim, 1),
                                    "sex": nn.Linear(config.feature_dim, len(SEXES))})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.neck(self.body(images * 2 - 1).mean(dim=(-2, -1)))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(images)
        return {name: head(h) for name, head in self.heads.items()}


@dataclass
class TrainedEncoder:
    """The encoder with the target scalings it was trained with."""

    model: AttributeEncoder
    scaling: dict[str, float]  # level/age mean and SD of the train split
    record: dict = field(default_factory=dict)

    @property
    def config(self) -> EncoderConfig:
        return self.model.config

    @torch.no_grad()
    def run(self, images, batch_size: int = 128) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(features (N, feature_dim), decoded predictions) of (N, H, W) slices in [0, 1] of any size."""
        images = to_size(images, self.config.input_size)
        self.model.eval()
        feats, outs = [], {k: [] for k in self.model.heads}
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))[:, None]
            h = self.model.features(x)
            feats.append(h.numpy())
            for name, head in self.model.heads.items():
                outs[name].append(head(h).numpy())
        raw = {k: np.concatenate(v) for k, v in outs.items()}
        s = self.scaling
        predictions = {"contrast": np.array(MODALITIES)[raw["contrast"].argmax(1)],
                       "orientation": np.array(ORIENTATIONS)[raw["orientation"].argmax(1)],
                       "level_mm": raw["level"][:, 0] * s["level_sd"] + s["level_mean"],
                       "age": raw["age"][:, 0] * s["age_sd"] + s["age_mean"],
                       "sex": np.array(SEXES)[raw["sex"].argmax(1)]}
        return np.concatenate(feats), predictions

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        from dallebrain.data.io import atomic_path, write_text_atomic

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "model.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(tmp))
        record = {"format": ENCODER_FORMAT, "config": dataclasses.asdict(self.config), "scaling": self.scaling,
                  **self.record}
        write_text_atomic(folder / "config.json", json.dumps(record, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> TrainedEncoder:
        from safetensors.torch import load_file

        folder = Path(folder)
        record = json.loads((folder / "config.json").read_text())
        if record.get("format") != ENCODER_FORMAT:
            raise ValueError(f"{folder} does not hold an evaluation encoder")
        model = AttributeEncoder(EncoderConfig(**record.pop("config")))
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        scaling = record.pop("scaling")
        record.pop("format")
        return cls(model.eval(), scaling, record)


def _standardise(values: np.ndarray) -> tuple[float, float]:
    ok = values[np.isfinite(values)]
    if ok.size == 0:
        return 0.0, 1.0
    sd = float(ok.std())
    return float(ok.mean()), sd if sd > 1e-6 else 1.0


def train_encoder(images, targets: Targets, config: EncoderConfig | None = None,
                  progress: bool = False) -> TrainedEncoder:
    """Train the attribute encoder on real slices (N, H, W) with their targets; unknown targets (-1 / NaN)
    are left out of their loss term."""
    from tqdm.auto import trange

    from dallebrain.data.dataset import batch_indices

    config = config or EncoderConfig()
    images = to_size(images, config.input_size)
    torch.manual_seed(config.seed)
    model = AttributeEncoder(config)
    level_mean, level_sd = _standardise(targets.level_mm)
    age_mean, age_sd = _standardise(targets.age)
    scaling = {"level_mean": level_mean, "level_sd": level_sd, "age_mean": age_mean, "age_sd": age_sd}
    t = {"contrast": torch.from_numpy(targets.contrast), "orientation": torch.from_numpy(targets.orientation),
         "sex": torch.from_numpy(targets.sex),
         "level": torch.from_numpy((targets.level_mm - level_mean) / level_sd).float(),
         "age": torch.from_numpy((targets.age - age_mean) / age_sd).float()}
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / config.steps)))
    pixels = torch.from_numpy(np.ascontiguousarray(images))
    model.train()
    losses = []
    for step in trange(config.steps, desc="training the evaluation encoder", disable=not progress, leave=False):
        rows = torch.from_numpy(batch_indices(len(images), config.batch_size, config.seed, step))
        x = pixels[rows][:, None]
        if config.max_shift:
            g = torch.Generator().manual_seed(config.seed * 100_003 + step)
            dy, dx = (int(v) for v in torch.randint(-config.max_shift, config.max_shift + 1, (2,), generator=g))
            x = torch.roll(x, (dy, dx), dims=(-2, -1))  # the border is background, so wrapping is harmless
        out = model(x)
        loss = torch.zeros(())
        for name in ("contrast", "orientation", "sex"):
            y = t[name][rows]
            if (y >= 0).any():
                loss = loss + F.cross_entropy(out[name][y >= 0], y[y >= 0])
        for name in ("level", "age"):
            y = t[name][rows]
            ok = torch.isfinite(y)
            if ok.any():
                loss = loss + F.smooth_l1_loss(out[name][ok, 0], y[ok])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
    record = {"final_loss": float(np.mean(losses[-20:])), "train_slices": len(images)}
    return TrainedEncoder(model.eval(), scaling, record)


def load_or_train_encoder(cache: str | Path, images, targets: Targets, config: EncoderConfig, key: str,
                          progress: bool = False) -> tuple[TrainedEncoder, bool]:
    """(encoder, reused?): the one cached in `cache` when it was trained with the same key (data fingerprint
    and settings), else a new one, saved there."""
    cache = Path(cache)
    if (cache / "config.json").is_file() and (cache / "model.safetensors").is_file():
        try:
            encoder = TrainedEncoder.load(cache)
            if encoder.record.get("key") == key:
                return encoder, True
        except Exception:  # any damage (a SafetensorError, a state dict of other shapes) is retrained, not fatal
            pass  # an unreadable cache is simply retrained
    encoder = train_encoder(images, targets, config, progress)
    encoder.record["key"] = key
    encoder.save(cache)
    return encoder, False


def encoder_key(fingerprint: str, config: EncoderConfig, train_rows: int) -> str:
    payload = json.dumps({"data": fingerprint, "config": dataclasses.asdict(config), "rows": train_rows},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# --- Brain-CLIP -------------------------------------------------------------------------------------------------


def load_brain_clip(model_folder: str | Path):
    """The folder's Brain-CLIP (clip/) or None when it has none."""
    from dallebrain.models.clip import BrainCLIP

    clip_dir = Path(model_folder) / "clip"
    if not (clip_dir / "model.safetensors").is_file():
        return None
    return BrainCLIP.from_pretrained(clip_dir).eval()


@torch.no_grad()
def clip_image_features(clip, images, batch_size: int = 64) -> np.ndarray:
    """L2-normalised Brain-CLIP image embeddings (N, D) of (N, H, W) slices in [0, 1]."""
    images = np.asarray(images, dtype=np.float32)
    out = [clip.encode_image(torch.from_numpy(images[i:i + batch_size])[:, None]).float().cpu().numpy()
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, clip.config.embed_dim), dtype=np.float32)


@torch.no_grad()
def clip_text_features(clip, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised Brain-CLIP text embeddings (N, D), each distinct text encoded once."""
    unique = list(dict.fromkeys(texts))
    embeds = np.concatenate([clip.encode_text(unique[i:i + batch_size]).float().cpu().numpy()
                             for i in range(0, len(unique), batch_size)])
    where = {t: i for i, t in enumerate(unique)}
    return embeds[[where[t] for t in texts]]
