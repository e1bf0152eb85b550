"""Structured attribute conditioning: the slice's plane, level, contrast, field strength, age, sex and volume
descriptors given to the UNet exactly, beside the text tokens.

Why beside the text: a 4 M-parameter UNet cross-attending to MiniLM tokens learned plane and contrast (they
change every pixel) but not age or level (a few tokens of a long caption whose effect is a few ventricle pixels):
same-seed images at 20 and 85 years differed by 0.006 on average. So each attribute becomes a fixed feature
vector (categories one-hot, numbers as Fourier features, Tancik et al. 2020, as SDXL conditions on sizes), which
the UNet's own `class_embedding` (diffusers `class_embed_type="projection"`: linear, SiLU, linear) maps into
the timestep embedding that every ResNet block receives, the route Pinaya et al.'s brain LDM and SDXL use for
global attributes. Every attribute has an "unstated" slot, so the network learns its own value for "not said";
training states each attribute with probability 1 - dropout, so a prompt silent on an attribute samples the
cohort's spread of it. Captions stay in the cross-attention for what these attributes do not capture.

The features are computed, not learned, so the UNet folder alone holds every learned weight and loads in stock
diffusers; `fold_unstated` bakes the all-unstated vector into the time embedding for clients that cannot pass
attributes (a stock StableDiffusionPipeline then gets exactly this model with every attribute unstated).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from dallebrain.vocab import MODALITIES, ORIENTATIONS, SEXES

DESCRIPTORS = ("small", "normal", "large")  # a volume relative to the cohort's norm for the age (captions.py)
DESCRIPTOR_Z = 1.0  # |z| beyond which captions write "small" / "large" (captions.volume_descriptor)

# name -> categories (one-hot) ...
CATEGORIES: dict[str, tuple[str, ...]] = {
    "orientation": ORIENTATIONS, "modality": MODALITIES, "sex": SEXES,
    "ventricles": DESCRIPTORS, "brain_volume": DESCRIPTORS,
}
# ... or name -> (low, high) of a number, mapped to [0, 1] before the Fourier features
NUMBERS: dict[str, tuple[float, float]] = {
    "age": (0.0, 100.0), "slice_mm": (-100.0, 100.0), "field_strength": (0.0, 4.0),
}
ATTRIBUTES = (*CATEGORIES, *NUMBERS)
FREQUENCIES = (1.0, 2.0, 4.0, 8.0, 16.0)  # periods down to 1/16 of the range: ~6 years, ~12 mm
# The "fine level" layout (UnetConfig.fine_level) appends sin/cos of the level at these frequencies (periods 6.25 and
# 3.1 mm over the 200 mm range) after every other slot, zero when the level is unstated. Why: with periods down to
# 12.5 mm the attributes alone place a slice 4.15 mm from its level, the caption's digits 1.32 mm (BENCHMARKS.md,
# "Caption guidance against the level's scatter"); an MLP fits a function no finer than its input's frequencies
# (Tancik et al. 2020) and anatomy changes over a few mm. Appended, not interleaved, so a UNet of the base layout
# is the fine one with zero weights on the new inputs (models/unet.load_initial_weights).
FINE_LEVEL_FREQUENCIES = (32.0, 64.0)


def _number_width() -> int:
    return 1 + 2 * len(FREQUENCIES)


def _width(name: str) -> int:
    """Slots of one attribute in the feature vector: its values (categories, or x and the Fourier features) and
    its "unstated" slot."""
    return (len(CATEGORIES[name]) if name in CATEGORIES else _number_width()) + 1


def feature_width(fine_level: bool = False) -> int:
    """Length of the feature vector (with the fine level's slots appended when `fine_level`)."""
    return sum(_width(name) for name in ATTRIBUTES) + (2 * len(FINE_LEVEL_FREQUENCIES) if fine_level else 0)


def _slots(name: str, fine_level: bool) -> list[int]:
    """Indices of one attribute's slots in the feature vector (the level's include the fine ones)."""
    start = sum(_width(n) for n in ATTRIBUTES[:ATTRIBUTES.index(name)])
    slots = list(range(start, start + _width(name)))
    if fine_level and name == "slice_mm":
        base = feature_width()
        slots += list(range(base, base + 2 * len(FINE_LEVEL_FREQUENCIES)))
    return slots


def descriptor_of(z: float | None) -> str | None:
    """The descriptor captions would write for a volume z-score (None: unknown)."""
    if z is None or not math.isfinite(z):
        return None
    return "small" if z < -DESCRIPTOR_Z else "large" if z > DESCRIPTOR_Z else "normal"


def _value(attributes: Mapping, name: str):
    value = attributes.get(name)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def attribute_features(attributes: Mapping, fine_level: bool = False) -> np.ndarray:
    """One slice's feature vector (float32, `feature_width(fine_level)`). `attributes` maps names of ATTRIBUTES to
    values; a missing or None value is "unstated". A category outside the vocabulary is a ValueError."""
    parts: list[np.ndarray] = []
    for name, options in CATEGORIES.items():
        slots = np.zeros(len(options) + 1, np.float32)
        value = _value(attributes, name)
        if value is None:
            slots[-1] = 1.0
        elif value in options:
            slots[options.index(value)] = 1.0
        else:
            raise ValueError(f"unknown {name} {value!r}: expected one of {', '.join(options)}")
        parts.append(slots)
    for name, (low, high) in NUMBERS.items():
        slots = np.zeros(_number_width() + 1, np.float32)
        value = _value(attributes, name)
        if value is None:
            slots[-1] = 1.0
        else:
            x = (float(value) - low) / (high - low)
            angles = 2 * math.pi * np.asarray(FREQUENCIES) * x
            slots[:-1] = np.concatenate([[x], np.sin(angles), np.cos(angles)])
        parts.append(slots)
    if fine_level:
        slots = np.zeros(2 * len(FINE_LEVEL_FREQUENCIES), np.float32)
        value = _value(attributes, "slice_mm")
        if value is not None:
            low, high = NUMBERS["slice_mm"]
            angles = 2 * math.pi * np.asarray(FINE_LEVEL_FREQUENCIES) * (float(value) - low) / (high - low)
            slots[:] = np.concatenate([np.sin(angles), np.cos(angles)])
        parts.append(slots)
    return np.concatenate(parts)


def features_batch(rows: list[Mapping], fine_level: bool = False) -> torch.Tensor:
    """(N, feature_width(fine_level)) float32 for N attribute mappings."""
    return torch.from_numpy(np.stack([attribute_features(r, fine_level) for r in rows]))


def unstated_features(n: int = 1, fine_level: bool = False) -> torch.Tensor:
    """Every attribute unstated: the unconditional input of guidance and of attribute dropout."""
    return features_batch([{}] * n, fine_level)


def unet_features(unet, rows: list[Mapping]) -> torch.Tensor:
    """`features_batch` in the layout `unet` was built with (fine level or not), on its device."""
    return features_batch(rows, fine_level_of(unet)).to(unet.device)


def drop_attributes(features: torch.Tensor, drop: np.ndarray) -> torch.Tensor:
    """features with attribute j of row i replaced by its "unstated" slots where drop[i, j] (drop: (N,
    len(ATTRIBUTES)) bool): per-attribute dropout in training, exactly what a prompt silent on it gives. The
    layout (fine level or not) is read from the width."""
    fine_level = features.shape[1] == feature_width(True)
    out = features.clone()
    unstated = unstated_features(1, fine_level)[0]
    for j, name in enumerate(ATTRIBUTES):
        rows = torch.from_numpy(np.asarray(drop[:, j], bool))
        slots = torch.tensor(_slots(name, fine_level))
        out[rows.nonzero()[:, :1], slots] = unstated[slots]
    return out


def training_dropout(features: torch.Tensor, rng: np.random.Generator, dropout: float,
                     dropped: np.ndarray) -> torch.Tensor:
    """A training batch's attribute features (N, F): each attribute left unstated with probability `dropout`
    (one draw of rng), every attribute where `dropped` (N,) bool says the whole condition (caption or image
    embedding) was dropped, so that row trains the unconditional model. Shared by the LDM and decoder stages."""
    unstated = rng.random((len(features), len(ATTRIBUTES))) < dropout
    unstated[np.asarray(dropped, bool)] = True
    return drop_attributes(features, unstated)


def table_attributes(table) -> list[dict]:
    """Each row's ground-truth attributes from a prepared `metadata.parquet` table (never re-parsed from its
    captions): plane, level, contrast, field, age, sex, and the volume descriptors from the z-scores."""
    import pandas as pd

    def col(name):
        return table[name].tolist() if name in table.columns else [None] * len(table)

    rows = []
    for o, mm, m, f, age, sex, vz, bz in zip(col("orientation"), col("slice_mm"), col("modality"),
                                             col("field_strength"), col("age"), col("sex"), col("ventricles_z"),
                                             col("brain_volume_z"), strict=True):
        rows.append({"orientation": o, "slice_mm": mm, "modality": m, "field_strength": f, "age": age,
                     "sex": sex if sex in SEXES else None, "ventricles": descriptor_of(vz),
                     "brain_volume": descriptor_of(bz)})
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in rows]


def prompt_attributes(prompt: str) -> dict:
    """The attributes a prompt states, read by the prompt parser (the inverse of the captions)."""
    from dallebrain.data.prompts import parse_prompt

    fields = parse_prompt(prompt)
    return {name: getattr(fields, name, None) for name in ATTRIBUTES}


def attribute_anchor_of(info: dict) -> dict[str | None, tuple[str, ...]]:
    """The attributes a model's dallebrain.json keeps stated on the unconditional side of attribute guidance
    ("sampling" -> "attribute_guidance_anchor"): a list for every contrast (["modality"]: key None) or a table by
    contrast ({"FLAIR": ["modality"]}); {} when it names none. Why: guided against "everything unstated", the
    attribute scale amplifies the contrast too (v2.1, 32 held-out T1w captions: brain median 0.67 at attribute
    guidance 6, 0.71 at 2, real 0.74); guided against "this contrast, the rest unstated" it amplifies age, sex,
    level and the volumes only (BENCHMARKS.md, "Why guided T1-weighted slices are dark"). A one-line ValueError
    for a name that is not an attribute or a key that is not a contrast."""
    anchor = (info.get("sampling") or {}).get("attribute_guidance_anchor")
    if anchor is None:
        return {}
    table = anchor if isinstance(anchor, dict) else {None: anchor}
    ok = all((key is None or key in MODALITIES) and isinstance(names, list)
             and all(isinstance(a, str) and a in ATTRIBUTES for a in names) for key, names in table.items())
    if not ok:
        raise ValueError(f"dallebrain.json sampling.attribute_guidance_anchor must list attributes of "
                         f"{', '.join(ATTRIBUTES)}, for every contrast or by contrast ({', '.join(MODALITIES)}), "
                         f"got {str(anchor)[:80]}")
    return {key: tuple(names) for key, names in table.items()}


def anchored_unconditional(prompts: list[str], negative_prompt: str,
                           anchor: dict[str | None, tuple[str, ...]]) -> list[dict]:
    """The unconditional attributes of each prompt's attribute guidance: what the negative prompt states, and
    where it is silent, the prompt's own value of each attribute its contrast anchors (`attribute_anchor_of`;
    the rest unstated)."""
    negative = prompt_attributes(negative_prompt)
    rows = []
    for prompt in prompts:
        stated = prompt_attributes(prompt)
        kept = anchor.get(stated["modality"], anchor.get(None, ()))
        rows.append({name: negative[name] if negative[name] is not None else
                     (stated[name] if name in kept else None) for name in ATTRIBUTES})
    return rows


def uses_attributes(unet) -> bool:
    """Whether a UNet takes attribute features (its class embedding is our projection of them, in either
    layout)."""
    config = unet.config
    return (getattr(config, "class_embed_type", None) == "projection"
            and getattr(config, "projection_class_embeddings_input_dim", None) in (feature_width(),
                                                                                   feature_width(True)))


def fine_level_of(unet) -> bool:
    """Whether a UNet takes the fine level layout (its projection's input width says so)."""
    return uses_attributes(unet) and unet.config.projection_class_embeddings_input_dim == feature_width(True)


def fold_unstated(unet) -> None:
    """Bake "every attribute unstated" into the UNet so it runs without class labels (stock clients): the
    class embedding of the unstated vector is a constant added to the time embedding, so adding it to the time
    embedding's last bias and removing the class embedding gives exactly the same outputs."""
    if not uses_attributes(unet):
        raise ValueError("this UNet takes no attribute features: nothing to fold")
    with torch.no_grad():
        constant = unet.class_embedding(unstated_features(1, fine_level_of(unet)).to(unet.dtype))[0]
        unet.time_embedding.linear_2.bias += constant
    unet.class_embedding = None
    unet.register_to_config(class_embed_type=None, projection_class_embeddings_input_dim=None)
