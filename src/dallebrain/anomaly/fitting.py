"""Fitting the normal model: healthy slices' pixels and VAE latents per position, then each method's thresholds
on held-out healthy validation slices at a stated false-positive rate."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from dallebrain.anomaly.cases import Case
from dallebrain.anomaly.maps import brain_mask, slice_score
from dallebrain.anomaly.methods import Batch, MethodOutput
from dallebrain.anomaly.metrics import threshold_at_fpr
from dallebrain.anomaly.normal_model import NormalModel, NormalModelBuilder


def batches(cases: list[Case], size: int) -> Iterable[list[Case]]:
    for start in range(0, len(cases), size):
        yield cases[start:start + size]


def as_batch(cases: list[Case]) -> Batch:
    return Batch(np.stack([c.image for c in cases]).astype(np.float32), [c.attributes for c in cases])


def fit_normal_model(pipe, cases: Iterable[Case], pool_mm: float, batch_size: int = 16,
                     settings: dict | None = None) -> NormalModel:
    """Per-position statistics of healthy slices (cases may be a generator: memory holds one batch)."""
    builder = NormalModelBuilder(pool_mm)
    chunk: list[Case] = []

    def flush() -> None:
        if chunk:
            batch = as_batch(chunk)
            latents = batch.latents(pipe).float().cpu().numpy()
            for case, latent in zip(chunk, latents, strict=True):
                builder.add(case.attributes, {"pixel": case.image, "latent": latent})
            chunk.clear()

    for case in cases:
        chunk.append(case)
        if len(chunk) >= batch_size:
            flush()
    flush()
    return builder.build(settings)


def run_cases(run: Callable[[Batch], MethodOutput], cases: list[Case], batch_size: int
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """(maps, reconstructions or None) of a method over cases, batch by batch."""
    maps, recons = [], []
    for chunk in batches(cases, batch_size):
        out = run(as_batch(chunk))
        maps.append(out.maps.astype(np.float32))
        if out.reconstructions is not None:
            recons.append(out.reconstructions.astype(np.float32))
    return np.concatenate(maps), (np.concatenate(recons) if recons else None)


def choose_thresholds(maps: np.ndarray, cases: list[Case], fpr: float) -> dict[str, dict[str, float]]:
    """Per contrast: the pixel threshold that `fpr` of healthy brain pixels exceed, and the slice-score threshold
    that `fpr` of healthy slices exceed (with few slices: their highest score). A contrast's own thresholds,
    since residuals differ between contrasts; "all" pools them for contrasts validation did not see."""
    by_contrast: dict[str, list[int]] = {}
    for i, case in enumerate(cases):
        by_contrast.setdefault(case.attributes.modality, []).append(i)
    by_contrast["all"] = list(range(len(cases)))
    out = {}
    for contrast, rows in by_contrast.items():
        pixels = np.concatenate([maps[i][brain_mask(cases[i].image)] for i in rows])
        scores = [slice_score(maps[i]) for i in rows]
        out[contrast] = {"pixel": threshold_at_fpr(pixels, fpr), "slice": threshold_at_fpr(scores, fpr),
                         "n_slices": len(rows)}
    return out


def threshold_for(thresholds: dict[str, dict[str, float]], modality: str) -> dict[str, float]:
    return thresholds.get(modality, thresholds["all"])


def fit_residuals(pipe, normal: NormalModel, setting, cases: Iterable[Case], batch_size: int = 8) -> NormalModel:
    """A calibrated diffusion setting's healthy residuals (input minus pseudo-healthy, per level) per position,
    added to the normal model: what the model gets wrong on healthy brains there is then not an anomaly."""
    from dallebrain.anomaly.methods import reconstruct

    builder = NormalModelBuilder(normal.pool_mm)
    chunk: list[Case] = []
    for case in [*cases, None]:
        if case is not None:
            chunk.append(case)
        if chunk and (case is None or len(chunk) >= batch_size):
            batch = as_batch(chunk)
            levels = reconstruct(pipe, batch, setting)
            for i, c in enumerate(chunk):
                builder.add(c.attributes, {setting.residual_name(level): batch.images[i] - healed[i]
                                           for level, (_, healed) in zip(setting.levels, levels, strict=True)})
            chunk = []
    return builder.build(into=normal)
