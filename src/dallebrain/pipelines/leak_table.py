"""Where sampling starts, per prompt: the mean training latent of slices like the one asked for.

pipelines/signal_leak.py explains why sampling starts from the noised mean of the training latents, not from
pure noise: at the first sampling step a training input still holds sqrt(alpha_bar) ~ 0.1 of its own latents,
and the UNet learned to read them. One per-channel mean for every prompt left FLAIR's age steering broken (the
mean of all contrasts carried a dark centre FLAIR kept at every age) and the slice level 8 mm off, because what
leaks in training is the latent of *that* slice: its plane, contrast, level, and its subject's age and sex.

A leak table holds, for each group of training slices of one plane, contrast and level band (12 mm), the
per-pixel mean latent and, fitted by least squares within the group, how it changes with age (per decade) and
with sex: the conditional mean E[latent | plane, contrast, level, age, sex] as a linear model per group. A
prompt's start is that mean at what it states; what it leaves unstated takes the training distribution's
marginal (an unstated age: the group's own mean age; an unstated level: every band of the plane, weighted by
its slices). Each group averages many subjects (at least MIN_SUBJECTS): no subject's latent is stored.

Stored as `signal_leak.safetensors` in a model folder (fp16, as every committed weight; slice counts as int64;
the group keys in the file's metadata). `dallebrain train ldm` writes it from its latent cache."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: pipelines/export.py reads FILENAME without it
    import torch

FILENAME = "signal_leak.safetensors"
BAND_MM = 12.0  # level band of a group: the level judge's real error is ~1 mm, a slab of anatomy changes in ~10
MIN_SUBJECTS = 8  # a group's maps average at least this many subjects, or it is left out
MAX_GROUPS = 4096
FORMAT = "dallebrain leak table 1"


class LeakTableError(ValueError):
    """A leak table file that cannot be used (unreadable, wrong shape, non-finite values)."""


def band_of(slice_mm: float, band_mm: float = BAND_MM) -> int:
    return int(math.floor(slice_mm / band_mm))


@dataclass
class LeakTable:
    """Per group (orientation, modality, band): mean (G, C, H, W) at the group's mean age and male share,
    age_slope (G, C, H, W) per decade, male_shift (G, C, H, W) men minus women; counts (G,) slices."""

    keys: list[tuple[str, str, int]]
    mean: torch.Tensor
    age_slope: torch.Tensor
    male_shift: torch.Tensor
    mean_age: torch.Tensor  # (G,) years
    male_share: torch.Tensor  # (G,) in [0, 1]
    counts: torch.Tensor  # (G,) slices
    band_mm: float = BAND_MM

    def start_mean(self, fields) -> torch.Tensor:
        """(C, H, W) float32 start mean for parsed prompt fields (`data.prompts.PromptFields`). A plane and
        contrast the table does not hold (a model trained without FLAIR asked for FLAIR) take every group."""
        import torch

        o, m = fields.orientation, fields.modality
        chosen = [i for i, (ko, km, _) in enumerate(self.keys) if (o is None or ko == o) and (m is None or km == m)]
        if not chosen:
            chosen, o = list(range(len(self.keys))), None
        if o is not None and fields.slice_mm is not None:  # the stated level's band, or the nearest one held
            bands = np.array([self.keys[i][2] for i in chosen])
            want = band_of(fields.slice_mm, self.band_mm)
            chosen = [i for i, b in zip(chosen, bands, strict=True) if abs(b - want) == np.abs(bands - want).min()]
        index = torch.tensor(chosen)
        weight = self.counts[index].float()
        weight = weight / weight.sum()
        maps = self.mean[index].float()
        if fields.age is not None:
            decades = (fields.age - self.mean_age[index]) / 10
            maps = maps + self.age_slope[index].float() * decades[:, None, None, None]
        if fields.sex is not None:
            male = 1.0 if fields.sex == "M" else 0.0
            maps = maps + self.male_shift[index].float() * (male - self.male_share[index])[:, None, None, None]
        return (maps * weight[:, None, None, None]).sum(0)

    def save(self, path: str | Path) -> None:
        """Written to a temporary file, then renamed: a killed run leaves the old table or none."""
        import torch
        from safetensors.torch import save_file

        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tensors = {"mean": self.mean.half().contiguous(), "age_slope": self.age_slope.half().contiguous(),
                   "male_shift": self.male_shift.half().contiguous(), "mean_age": self.mean_age.half(),
                   "male_share": self.male_share.half(), "counts": self.counts.to(torch.int64)}
        meta = {"format": FORMAT, "keys": json.dumps([list(k) for k in self.keys]), "band_mm": str(self.band_mm)}
        save_file(tensors, str(tmp), metadata=meta)
        tmp.chmod(0o644)  # safetensors writes owner-only; a shipped or shared table must be readable by all
        tmp.replace(path)


def load_leak_table(path: str | Path, channels: int, side: int) -> LeakTable:
    """The table in `path`, checked against the model's latent shape; LeakTableError (one line) otherwise."""
    import torch
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is no dict)
        keys = [(str(o), str(m), int(b)) for o, m, b in json.loads(meta["keys"])]
        band_mm = float(meta["band_mm"])
    except Exception as exc:  # safetensors, json and the unpacking each raise their own kinds
        raise LeakTableError(f"leak table {path} is not readable: {str(exc).splitlines()[0][:120]}") from None
    if meta.get("format") != FORMAT:
        raise LeakTableError(f"leak table {path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    g = len(keys)
    shapes = {"mean": (g, channels, side, side), "age_slope": (g, channels, side, side),
              "male_shift": (g, channels, side, side), "mean_age": (g,), "male_share": (g,), "counts": (g,)}
    for name, shape in shapes.items():
        if name not in tensors or tuple(tensors[name].shape) != shape:
            got = tuple(tensors[name].shape) if name in tensors else "missing"
            raise LeakTableError(f"leak table {path}: '{name}' must have shape {shape} for this model, got {got}")
        if not torch.isfinite(tensors[name].float()).all():
            raise LeakTableError(f"leak table {path}: '{name}' holds non-finite values")
    if not 0 < g <= MAX_GROUPS or not 0 < band_mm <= 1000 or (tensors["counts"] < 1).any():
        raise LeakTableError(f"leak table {path}: {g} groups of band {band_mm} mm is not a table this reads")
    f32 = {name: tensors[name].float() for name in shapes}  # a release stores the maps in fp16
    return LeakTable(keys, f32["mean"], f32["age_slope"], f32["male_shift"], f32["mean_age"], f32["male_share"],
                     tensors["counts"], band_mm)


def fit_leak_table(latents, table, band_mm: float = BAND_MM, min_subjects: int | None = None) -> LeakTable:
    """The table of (N, C, H, W) training latents (tensor or array, any float dtype) whose rows are described by
    `table` (a DataFrame with orientation, modality, slice_mm, age, sex, subject_id): per group, least squares of
    the latents on [1, age in decades, male], both centred on the group's own means, in float64. A row without
    an age or sex (a cohort without demographics) sits at the centre: it informs the mean, not the slopes."""
    import torch

    min_subjects = MIN_SUBJECTS if min_subjects is None else min_subjects
    keys, means, slopes, shifts, ages, shares, counts = [], [], [], [], [], [], []
    bands = np.floor(table.slice_mm.to_numpy(float) / band_mm).astype(int)
    groups = table.assign(_band=bands).groupby(["orientation", "modality", "_band"], sort=True).indices
    for (orientation, modality, band), rows in groups.items():
        part = table.iloc[rows]
        if part.subject_id.nunique() < min_subjects:
            continue
        z = torch.as_tensor(np.asarray(latents[rows], dtype=np.float32)).double()
        age = part.age.to_numpy(float)
        sex = part.sex.astype(object).to_numpy()
        known = np.isin(sex, ["M", "F"])
        male = (sex == "M").astype(float)
        mean_age = float(np.nanmean(age)) if np.isfinite(age).any() else 0.0
        share = float(male[known].mean()) if known.any() else 0.5
        x = torch.as_tensor(np.stack([np.where(np.isfinite(age), (age - mean_age) / 10, 0.0),
                                      np.where(known, male - share, 0.0)], 1))  # centred: the mean is the intercept
        flat = z.reshape(len(z), -1)
        mean = flat.mean(0)
        gram = x.T @ x + 1e-6 * len(x) * torch.eye(2)  # a group of one sex or one age: that slope ~ 0, not NaN
        coef = torch.linalg.solve(gram, x.T @ (flat - mean))
        keys.append((str(orientation), str(modality), int(band)))
        shape = z.shape[1:]
        means.append(mean.reshape(shape))
        slopes.append(coef[0].reshape(shape))
        shifts.append(coef[1].reshape(shape))
        ages.append(mean_age)
        shares.append(share)
        counts.append(len(rows))
    if not keys:
        raise ValueError(f"no group of training slices holds {min_subjects} subjects: no leak table")
    stack = lambda xs: torch.stack(xs).float()  # noqa: E731
    return LeakTable(keys, stack(means), stack(slopes), stack(shifts), torch.tensor(ages), torch.tensor(shares),
                     torch.tensor(counts), band_mm)


def leak_table_of(folder: str | Path | None, channels: int, side: int) -> LeakTable | None:
    """A model folder's leak table, or None where it has none (or for an in-memory pipeline)."""
    if folder is None or not (Path(folder) / FILENAME).is_file():
        return None
    return load_leak_table(Path(folder) / FILENAME, channels, side)


def stock_start_latents(folder: str | Path, prompt: str, scheduler, noise: torch.Tensor) -> torch.Tensor:
    """`latents=` for a stock diffusers StableDiffusionPipeline on an exported folder (`dallebrain export`), so it
    starts where ours does: the prompt's row of the folder's table, noised to the first timestep. Call
    `scheduler.set_timesteps(steps)` first (the pipeline does it again, to the same steps). A stock pipeline
    multiplies given latents by `init_noise_sigma` (1 for the exported DPM-Solver++), so that is divided out."""
    from dallebrain.data.prompts import parse_prompt
    from dallebrain.pipelines.signal_leak import start_latents

    if getattr(scheduler, "num_inference_steps", None) is None:  # its timesteps are still the training ones
        raise ValueError("call scheduler.set_timesteps(steps) before stock_start_latents")
    channels, side = noise.shape[1], noise.shape[-1]
    table = load_leak_table(Path(folder) / FILENAME, channels, side)
    mean = table.start_mean(parse_prompt(prompt))[None]
    return start_latents(scheduler, noise, mean) / scheduler.init_noise_sigma
