"""How much an evaluation's distances move with the synthetic draw: with `evaluate --draws K`, each route's slices
are drawn K times (draw j's slice i with seed + j * DRAW_SEED_STRIDE + i, the real held-out slices fixed) and every
distance is given over the K draws, draw 0 being the report's.

Why: two `evaluate --n 256` runs of the shipped model that differ only in `--seed` moved the evaluation encoder's
Frechet distance 0.528 -> 0.458 and FLAIR's GLCM distance 15.1 -> 8.4 (BENCHMARKS.md, "How much evaluate's
numbers move with the seed"), as much as most model changes compared there. Why draws and not a resampling of
one draw: both were measured and both misread the 128-feature Frechet distance at 256 slices. A bootstrap repeats
slices, which shrinks the covariance and inflates the distance (point 0.58, "95 %" interval 0.69-1.79, not even
covering the point); the jackknife's error (0.29) was six times the spread seen between seeds (Efron-Stein: it
overstates a statistic with large second-order terms, as a Frechet distance with 128 features from 256 slices
has). A new draw is what a rerun is."""

from __future__ import annotations

import html

import numpy as np

from dallebrain.evaluation import metrics as M
from dallebrain.evaluation.formatting import fmt
from dallebrain.evaluation.options import DRAW_SEED_STRIDE


def distances_of(real_encoder: np.ndarray, fake_encoder: np.ndarray, real_glcm: np.ndarray, fake_glcm: np.ndarray,
                 modality: list[str], real_clip: np.ndarray | None = None,
                 fake_clip: np.ndarray | None = None, real_images: np.ndarray | None = None,
                 fake_images: np.ndarray | None = None) -> dict[str, float]:
    """{distance name: value} of one synthetic draw against the real held-out slices, computed as the report's
    columns compute them: the evaluation encoder's and Brain-CLIP's Frechet distances, the GLCM distance over
    all slices and per contrast, and with the slices themselves the grey-level histogram distances over all slices
    (small numbers whose draw-to-draw spread decides whether two models differ: BENCHMARKS.md, "Guidance distilled
    into the UNet")."""
    from dallebrain.evaluation.columns import MIN_TEXTURE_ROWS  # imported here: columns pulls in torch

    modality = np.asarray(modality)
    out = {"encoder_frechet": M.frechet_distance(real_encoder, fake_encoder)}
    if real_clip is not None and fake_clip is not None:
        out["brain_clip_frechet"] = M.frechet_distance(real_clip, fake_clip)
    out["glcm_frechet"] = M.standardised_frechet(real_glcm, fake_glcm)
    for m in dict.fromkeys(modality.tolist()):
        rows = modality == m
        if rows.sum() >= MIN_TEXTURE_ROWS:  # fewer slices of a contrast: no distance of its own, as there
            out[f"glcm_frechet_{m}"] = M.standardised_frechet(real_glcm[rows], fake_glcm[rows])
    if real_images is not None and fake_images is not None:
        grey = M.histogram_distances(real_images, fake_images)
        out["grey_wasserstein1"], out["grey_jensen_shannon"] = grey["wasserstein1"], grey["jensen_shannon"]
    return out


def spread(per_draw: list[dict[str, float]]) -> dict[str, dict]:
    """{distance name: {"draws": [value per draw], "min", "max", "mean"}} over the draws (draw 0 first)."""
    out = {}
    for key in per_draw[0]:
        values = [float(d[key]) for d in per_draw if key in d]
        out[key] = {"draws": values, "min": min(values), "max": max(values), "mean": float(np.mean(values))}
    return out


LABELS = {"encoder_frechet": "Frechet distance, evaluation encoder",
          "brain_clip_frechet": "Frechet distance, Brain-CLIP", "glcm_frechet": "GLCM Frechet distance, all slices",
          "grey_wasserstein1": "grey levels Wasserstein-1, all slices",
          "grey_jensen_shannon": "grey levels Jensen-Shannon, all slices"}
NOTE = ("Each distance as draw 0's value (the report's), then its range over the draws (`--draws`; draw j's slice i "
        f"with seed + j * {DRAW_SEED_STRIDE:,} + i, the real held-out slices fixed): how far the number moves with "
        "the synthetic draw alone. A difference between two models inside both ranges is not evidence.")
ONE_DRAW_NOTE = ("One synthetic draw per route: a rerun with another --seed moves these distances (the shipped model: "
                 "evaluation-encoder Frechet 0.528 vs 0.458, per-contrast GLCM up to 1.8x); --draws 2 or more "
                 "gives each its range.")


def label(key: str) -> str:
    return LABELS.get(key) or f"GLCM Frechet distance, {key.removeprefix('glcm_frechet_')}"


def spread_table(metrics: dict) -> tuple[list[str], list[list[str]]] | None:
    """(header, rows): per distance, each route's draw-0 value and range over draws; None with one draw."""
    columns = {name: c for name, c in metrics["columns"].items() if c.get("spread")}
    if not columns:
        return None
    keys = list(dict.fromkeys(k for c in columns.values() for k in c["spread"]))
    header = ["distance", *[f"{name}: draw 0 [range over {len(next(iter(c['spread'].values()))['draws'])} draws]"
                            for name, c in columns.items()]]
    rows = []
    for key in keys:
        cells = []
        for column in columns.values():
            entry = column["spread"].get(key)
            cells.append("n/a" if entry is None else
                         f"{fmt(entry['draws'][0])} [{fmt(entry['min'])}, {fmt(entry['max'])}]")
        rows.append([label(key), *cells])
    return header, rows


def summary_lines(metrics: dict) -> list[str]:
    table = spread_table(metrics)
    if table is None:
        return ["", ONE_DRAW_NOTE]
    header, rows = table
    return ["", "## How much the distances move with the synthetic draw", "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(r) + " |" for r in rows], "", NOTE]


def html_section(metrics: dict, table_html) -> str:
    table = spread_table(metrics)
    if table is None:
        return f"<p class='note'>{html.escape(ONE_DRAW_NOTE)}</p>"
    return "\n".join(["<h2>How much the distances move with the synthetic draw</h2>", table_html(*table, left=1),
                      f"<p class='note'>{html.escape(NOTE)}</p>"])
