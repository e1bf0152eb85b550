"""Grey-level standardisation of generated slices: the model's brain intensities put on the cohort's scale.

Why: the shipped LDM renders each contrast with a systematic grey-level bias (measured on 768 samples of
train-split captions against their real slices: T1w's median brain intensity 0.66 against 0.72, its grey matter
too dark; PDw crowded at the top). The UNet's training cannot be redone on this CPU, but the bias is a fixed,
monotone function of intensity per contrast and plane, so it is corrected the way MRI pipelines put scans from
different scanners on one scale: piecewise-linear histogram standardisation (Nyul & Udupa 1999; TorchIO's
HistogramStandardization), landmarks at the 1st, 10th, ..., 90th and 99th percentiles of the brain intensities
plus the ends. Each map is fitted once, after training, from the model's own samples for train-split captions
against those captions' real slices (recipes/grey_level_map.py); nothing of the held-out slices is used, and no
slice is matched to another: one fixed curve per contrast and plane, the same for every image, so what differs
between slices (a large ventricle, an older brain) stays as the model drew it.

Only the brain changes: pixels at or below BRAIN_THRESHOLD (the background, the evaluation's brain cut) are
kept, and every map sends the threshold to itself, so a slice's brain outline and brain fraction do not move.
Stored in the model's dallebrain.json ("sampling" for the LDM route, "unclip" -> "sampling" for the unCLIP
route) as {"landmarks": [...], "maps": {contrast: {plane or "all": {"from": [...], "to": [...]}}}}; a prompt
that states its contrast and plane gets that plane's map, one that states only the contrast gets the
contrast's "all" map, one that states no contrast gets none (the sidecar says which).

Kept import-free of torch: a stock client applies it to its own output with `standardise_stock_images`."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# the evaluation's brain cut (its grey-level distances read the pixels above it): a map keeps everything at or below
from dallebrain.evaluation.metrics import BRAIN_THRESHOLD
from dallebrain.vocab import CONTRAST_LONG, ORIENTATIONS

LANDMARKS = (0.0, 0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99, 1.0)  # Nyul-Udupa deciles + ends
ALL_PLANES = "all"
INFO_KEY = "grey_level_map"
MIN_BRAIN_PIXELS = 1000  # per fitted map, on each side: fewer and the percentiles are noise


@dataclass(frozen=True)
class GreyLevelMap:
    """Per (contrast, plane or ALL_PLANES): the model's brain-intensity landmarks and the cohort's."""

    maps: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]

    def curve_for(self, contrast: str | None, plane: str | None) -> tuple[str, tuple[np.ndarray, np.ndarray]] | None:
        """(name, (from, to)) of the map a request gets, or None when its contrast has none."""
        by_plane = self.maps.get(contrast) if contrast else None
        if not by_plane:
            return None
        if plane in by_plane:
            return f"{contrast} {plane}", by_plane[plane]
        if ALL_PLANES in by_plane:
            return f"{contrast} (all planes)", by_plane[ALL_PLANES]
        return None

    def apply(self, images: np.ndarray, contrast: str | None, plane: str | None) -> tuple[np.ndarray, str | None]:
        """(slices with the brain standardised, the map's name) - or the slices unchanged and None."""
        found = self.curve_for(contrast, plane)
        if found is None:
            return images, None
        return remap(images, *found[1]), found[0]

    def to_info(self) -> dict:
        return {"landmarks": list(LANDMARKS),
                "maps": {c: {p: {"from": _rounded(f), "to": _rounded(t)} for p, (f, t) in by_plane.items()}
                         for c, by_plane in self.maps.items()}}


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 5) for v in values]


def remap(images: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Brain pixels (> BRAIN_THRESHOLD) through the piecewise-linear curve source -> target, clipped to
    [BRAIN_THRESHOLD, 1]; the rest as they are. A new float32 array."""
    out = np.array(images, dtype=np.float32, copy=True)
    brain = out > BRAIN_THRESHOLD
    out[brain] = np.clip(np.interp(out[brain], source, target), BRAIN_THRESHOLD, 1.0)
    return out


def brain_landmarks(images: np.ndarray) -> np.ndarray:
    """The LANDMARKS percentiles of the brain intensities of a set of slices, the ends pinned to the threshold
    and 1 (so every intensity a slice can hold is on the curve)."""
    values = np.asarray(images, dtype=np.float32)
    values = values[values > BRAIN_THRESHOLD]
    if values.size < MIN_BRAIN_PIXELS:
        raise ValueError(f"{values.size} brain pixels: need at least {MIN_BRAIN_PIXELS} to fit a grey-level map")
    points = np.quantile(values, LANDMARKS)
    points[0], points[-1] = BRAIN_THRESHOLD, 1.0
    return np.maximum.accumulate(points)


def fit_grey_level_map(real: np.ndarray, synthetic: np.ndarray, contrasts, planes,
                       min_slices: int = 8) -> GreyLevelMap:
    """Maps from pairs of slice sets in the same order (synthetic slice i made from the caption of real slice i):
    per contrast one over all planes, and per (contrast, plane) with at least `min_slices` pairs."""
    real, synthetic = np.asarray(real), np.asarray(synthetic)
    contrasts, planes = np.asarray(contrasts), np.asarray(planes)
    if not (len(real) == len(synthetic) == len(contrasts) == len(planes)) or len(real) == 0:
        raise ValueError(f"fit_grey_level_map needs as many real as synthetic slices with a contrast and plane "
                         f"each, got {len(real)}, {len(synthetic)}, {len(contrasts)}, {len(planes)}")
    maps: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for contrast in dict.fromkeys(contrasts.tolist()):
        rows = contrasts == contrast
        maps[contrast] = {ALL_PLANES: (brain_landmarks(synthetic[rows]), brain_landmarks(real[rows]))}
        for plane in dict.fromkeys(planes[rows].tolist()):
            both = rows & (planes == plane)
            if both.sum() >= min_slices:
                maps[contrast][plane] = (brain_landmarks(synthetic[both]), brain_landmarks(real[both]))
    return GreyLevelMap(maps)


def grey_level_map_of(sampling: dict) -> GreyLevelMap | None:
    """The map a model's sampling settings record (sampling[INFO_KEY]), None when none; a one-line ValueError
    for a malformed one, read when the model loads."""
    table = sampling.get(INFO_KEY) if sampling else None
    if table is None:
        return None
    where = f"dallebrain.json sampling.{INFO_KEY}"
    if not isinstance(table, dict) or list(table.get("landmarks") or []) != list(LANDMARKS):
        raise ValueError(f"{where} must give the landmarks {list(LANDMARKS)} and its maps")
    raw = table.get("maps")
    if not isinstance(raw, dict) or not raw or not set(raw) <= set(CONTRAST_LONG):
        raise ValueError(f"{where}.maps must map contrasts ({', '.join(CONTRAST_LONG)}) to planes, got "
                         f"{str(raw)[:80]}")
    maps = {}
    for contrast, by_plane in raw.items():
        if not isinstance(by_plane, dict) or not by_plane or not set(by_plane) <= {ALL_PLANES, *ORIENTATIONS}:
            raise ValueError(f"{where}.maps.{contrast} must map planes ({', '.join(ORIENTATIONS)}) or "
                             f"{ALL_PLANES!r} to curves, got {str(by_plane)[:80]}")
        maps[contrast] = {plane: _curve(curve, f"{where}.maps.{contrast}.{plane}")
                          for plane, curve in by_plane.items()}
    return GreyLevelMap(maps)


def _curve(curve, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        source = np.asarray(curve["from"], dtype=np.float64)
        target = np.asarray(curve["to"], dtype=np.float64)
    except (TypeError, KeyError, ValueError):
        raise ValueError(f"{where} must be {{'from': [...], 'to': [...]}} of numbers") from None
    for values in (source, target):
        if values.shape != (len(LANDMARKS),) or not np.isfinite(values).all() or np.any(np.diff(values) < 0) \
                or values[0] < BRAIN_THRESHOLD - 1e-6 or values[-1] > 1.0 + 1e-6:
            raise ValueError(f"{where} must hold {len(LANDMARKS)} non-decreasing intensities in "
                             f"[{BRAIN_THRESHOLD}, 1] on each side")
    return source, target


def standardise_stock_images(images: np.ndarray, prompt: str, sampling: dict,
                             folder: str | Path | None = None) -> np.ndarray:
    """For a stock diffusers client of an exported folder: its (N, H, W) slices in [0, 1] standardised as ours
    are for `prompt` (`sampling`: the export's dallebrain.json "sampling"); unchanged without a map for it. With
    the export's `folder`, the decoder's halo is first trimmed where ours is (models/brain_outline.py)."""
    from dallebrain.data.prompts import parse_prompt
    from dallebrain.models.brain_outline import brain_outline_of, outline_contrasts_of

    images = np.asarray(images, dtype=np.float32)
    asked = parse_prompt(prompt)
    contrasts = outline_contrasts_of(sampling)
    head = brain_outline_of(folder, contrasts)
    if head is not None and asked.modality in contrasts:
        images = head.trim(images)
    table = grey_level_map_of(sampling)
    if table is None:
        return images
    return table.apply(images, asked.modality, asked.orientation)[0]


ROUTE_PARTS = {"ldm": ("unet", "scheduler", "vae"), "unclip": ("decoder", "prior", "clip", "vae")}  # what each reads


def routes_changed_by(parts) -> tuple[str, ...]:
    """The routes whose slices change when these model parts are replaced (the VAE: both)."""
    return tuple(route for route, reads in ROUTE_PARTS.items() if set(parts) & set(reads))


def route_sampling(info: dict, route: str) -> dict:
    """A route's sampling section of a dallebrain.json: "sampling" for the LDM, "unclip" -> "sampling" for the unCLIP
    route ({} where none)."""
    return (info.get("sampling") if route == "ldm" else (info.get("unclip") or {}).get("sampling")) or {}


def fit_records(info: dict) -> dict[str, dict]:
    """How each route's maps were fitted: dallebrain.json's top-level INFO_KEY, one record per route (the command,
    rows and seeds, and the partial refits after it). Older models kept one record for all the routes it names
    ("routes", else every route); that form is read as the same record for each of them."""
    recorded = info.get(INFO_KEY)
    if not isinstance(recorded, dict):
        return {}
    if recorded and set(recorded) <= set(ROUTE_PARTS):
        return {route: dict(record) for route, record in recorded.items() if isinstance(record, dict)}
    shared = {k: v for k, v in recorded.items() if k != "routes"}  # the one-record form
    return {route: copy.deepcopy(shared) for route in recorded.get("routes", ROUTE_PARTS)}


def write_fit_records(model: str | Path, records: dict[str, dict]) -> None:
    """Replace a model folder's fit records with `records` (per route; none: the key goes)."""
    from dallebrain.data.io import write_json_atomic

    path = Path(model) / "dallebrain.json"
    info = json.loads(path.read_text())
    info.pop(INFO_KEY, None)
    if records:
        info[INFO_KEY] = {route: records[route] for route in sorted(records)}
    write_json_atomic(path, info)


def drop_grey_level_maps(model: str | Path, routes=tuple(ROUTE_PARTS)) -> None:
    """Remove the grey-level maps of `routes` from a model folder whose weights for them were replaced: they were
    fitted on the old weights' samples (rerun recipes/grey_level_map.py on the new model), and their fit records
    with them. The LDM's level map (pipelines/level_map.py), measured on its samples too, goes with the LDM's
    grey-level maps (rerun recipes/level_map.py)."""
    from dallebrain.data.io import write_json_atomic
    from dallebrain.pipelines.level_map import INFO_KEY as LEVEL_MAP

    path = Path(model) / "dallebrain.json"
    if not path.is_file() or not routes:
        return
    info = json.loads(path.read_text())
    places = {"ldm": info.get("sampling"), "unclip": (info.get("unclip") or {}).get("sampling")}
    for route in routes:
        if isinstance(places.get(route), dict):
            places[route].pop(INFO_KEY, None)
            places[route].pop(LEVEL_MAP, None)
    records = {route: record for route, record in fit_records(info).items()
               if isinstance(places.get(route), dict) and INFO_KEY in places[route]}
    info.pop(INFO_KEY, None)
    if records:
        info[INFO_KEY] = records
    write_json_atomic(path, info)
