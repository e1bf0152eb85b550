"""`dallebrain anomaly`: pseudo-healthy reconstruction, anomaly map, slice score and mask for the user's slices.

The thresholds come from a normal model: the one `evaluate-anomaly` wrote (normal/ in its output), or one
fitted now on a prepared data set's healthy subjects (fit subjects for the statistics, validation subjects for
the thresholds), only at the positions of the slices given, and saved beside the outputs for the next run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from dallebrain.anomaly.maps import slice_score
from dallebrain.anomaly.methods import DIFFUSION_METHODS, METHODS, Batch, run_method
from dallebrain.anomaly.normal_model import POOL_MM, NormalModel

DEFAULT_METHOD = "diffusion"  # the multi-scale variant costs 2.4x for no gain (BENCHMARKS.md)
MAX_CALIBRATION = 400  # healthy slices a calibrated method learns its residuals on


@dataclass(frozen=True)
class DetectOptions:
    inputs: tuple[Path, ...]
    out: Path
    normal: Path | None = None  # a normal model folder; or
    data: Path | None = None  # a prepared data set to fit one on
    method: str = DEFAULT_METHOD
    model: Path | None = None
    prompt: str | None = None
    fpr: float = 0.01
    max_fit: int = 1500
    n_val: int = 32
    batch_size: int = 8
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: choose from {', '.join(METHODS)}")
        if (self.normal is None) == (self.data is None):
            raise ValueError("give the thresholds' source: --normal (a fitted normal model) or --data (a prepared "
                             "data set to fit one on), one of the two")
        if not self.inputs:
            raise ValueError("no input slice given")
        if not 0 < self.fpr < 0.5:
            raise ValueError(f"--fpr must lie in (0, 0.5), got {self.fpr}")


def diffusion_setting(normal: NormalModel, method: str):
    """The diffusion setting the thresholds were chosen with (a threshold belongs to its setting)."""
    recorded = normal.settings.get("diffusion", {}).get(method)
    if recorded is None:
        return DIFFUSION_METHODS[method]
    return replace(DIFFUSION_METHODS[method], **{k: tuple(v) if k == "levels" else v for k, v in recorded.items()})


def fit_from_data(pipe, options: DetectOptions, items: list) -> NormalModel:
    """A normal model for this method at the inputs' positions, from a prepared data set's healthy subjects."""
    import pandas as pd

    from dallebrain.anomaly.cases import load_cohort
    from dallebrain.anomaly.fitting import choose_thresholds, fit_normal_model, run_cases
    from dallebrain.anomaly.selection import at_positions, spread_over_positions

    cohort = load_cohort(options.data)
    t = cohort.table[cohort.table["lesion_type"] == "none"]
    wanted = pd.DataFrame([{"modality": i.attributes.modality, "orientation": i.attributes.orientation,
                            "slice_mm": i.attributes.slice_mm} for i in items])
    pool = POOL_MM
    fit_rows = spread_over_positions(at_positions(t[t["role"] == "fit"], wanted, pool).sample(frac=1.0,
                                                                                               random_state=0))
    fit_rows = fit_rows.head(options.max_fit)
    val_rows = at_positions(t[t["role"] == "val"], wanted, pool).sample(frac=1.0, random_state=0).head(options.n_val)
    if fit_rows.empty or val_rows.empty:
        raise ValueError(f"{options.data} has no healthy slices near the inputs' positions (contrast, plane, level)")
    setting = DIFFUSION_METHODS.get(options.method)
    settings = {"data": str(options.data), "fpr": options.fpr, "n_fit": len(fit_rows), "n_val": len(val_rows),
                "model_hash": pipe.model_hash, "diffusion": {options.method: asdict(setting)} if setting else {}}
    normal = fit_normal_model(pipe, (cohort.case(r) for _, r in fit_rows.iterrows()), pool, settings=settings)
    if setting is not None and setting.calibrated:
        from dallebrain.anomaly.fitting import fit_residuals

        fit_residuals(pipe, normal, setting, (cohort.case(r) for _, r in fit_rows.head(MAX_CALIBRATION).iterrows()),
                      options.batch_size)
    val = [cohort.case(r) for _, r in val_rows.iterrows()]
    maps, _ = run_cases(lambda b: run_method(options.method, pipe, b, normal, setting), val, options.batch_size)
    normal.thresholds[options.method] = choose_thresholds(maps, val, options.fpr)
    return normal


def detect(options: DetectOptions, pipe=None) -> list[dict]:
    """Run on every input and write its files; returns the JSON records. Inputs, their attributes, --out and the
    normal model are checked before any weight loads: a bad request costs nothing. `pipe`: an already loaded
    pipeline of options.model (the web page keeps one)."""
    from dallebrain.anomaly.outputs import check_outputs
    from dallebrain.anomaly.slices import read_slice
    from dallebrain.api import default_model, load_pipeline
    from dallebrain.pipelines.folder import model_grid

    model = options.model or default_model()
    grid = model_grid(model)
    items = [read_slice(p, grid, options.prompt) for p in options.inputs]
    check_outputs(options.out, [item.name for item in items], options.overwrite)
    if not options.normal and (options.out / "normal").exists() and not options.overwrite:
        # fitted from --data below and saved there: an earlier run's normal model (minutes of fitting) is kept
        raise FileExistsError(f"{options.out / 'normal'} exists (a normal model fitted before): give it as --normal, "
                              "choose another --out or pass --overwrite")
    normal = NormalModel.load(options.normal) if options.normal else None
    if normal is not None and options.method not in normal.thresholds:
        raise ValueError(f"the normal model in {options.normal} has no thresholds for method {options.method} "
                         f"(it has: {', '.join(normal.thresholds) or 'none'})")
    if normal is not None:
        for item in items:  # every input's position is covered (stats refuses in one line otherwise)
            normal.stats(item.attributes, "pixel")
    pipe = pipe or load_pipeline(model)
    if normal is None:
        normal = fit_from_data(pipe, options, items)
        normal.save(options.out / "normal")
    records = []
    for start in range(0, len(items), options.batch_size):
        records += _detect_batch(pipe, normal, options, items[start:start + options.batch_size], grid)
    return records


def _detect_batch(pipe, normal: NormalModel, options: DetectOptions, items: list, grid) -> list[dict]:
    from dallebrain._version import __version__
    from dallebrain.anomaly.fitting import threshold_for
    from dallebrain.anomaly.outputs import write_slice_outputs

    setting = diffusion_setting(normal, options.method) if options.method in DIFFUSION_METHODS else None
    batch = Batch(np.stack([i.image for i in items]), [i.attributes for i in items])
    out = run_method(options.method, pipe, batch, normal, setting)
    records = []
    for k, item in enumerate(items):
        threshold = threshold_for(normal.thresholds[options.method], item.attributes.modality)
        model_map = out.maps[k]
        native_map = np.maximum(item.to_native(model_map, grid), 0)
        native = {"image": item.to_native(item.image, grid), "map": native_map, "mask": native_map > threshold["pixel"],
                  "pseudo_healthy": None if out.reconstructions is None else item.to_native(out.reconstructions[k],
                                                                                             grid)}
        score = slice_score(model_map)
        pixel_mm2 = float(np.linalg.norm(np.cross(item.native_affine[:3, 0], item.native_affine[:3, 1])))
        record = {"input": str(item.path), "method": options.method, "attributes": asdict(item.attributes),
                  "healthy_prompt": item.attributes.healthy_prompt(), "slice_score": score,
                  "threshold": threshold, "anomalous": bool(score > threshold["slice"]),
                  "anomalous_pixels": int(native["mask"].sum()),
                  "anomalous_area_mm2": float(native["mask"].sum() * pixel_mm2),
                  "setting": asdict(setting) if setting else None, "normal_model": normal.settings,
                  "model_hash": pipe.model_hash, "dallebrain_version": __version__}
        write_slice_outputs(options.out, item, native, record)
        records.append(record)
    return records
