"""`dallebrain evaluate-anomaly`: every method side by side on one lesion cohort, scored against exact masks.

Healthy fit subjects make the normal model, healthy validation subjects the thresholds (a stated false-positive
rate), and test subjects (with lesions, and healthy ones) the scores: pixel-level Dice at the validation
threshold and at its best, AUPRC, AUROC; slice-level AUROC; per lesion type and per lesion size; false
positives on healthy slices. Writes metrics.json, summary.md, report.html and the fitted normal model (normal/),
which `dallebrain anomaly --normal` reuses.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from dallebrain.anomaly.cases import Case, load_cohort, size_bin
from dallebrain.anomaly.fitting import choose_thresholds, fit_normal_model, run_cases, threshold_for
from dallebrain.anomaly.maps import brain_mask, slice_score
from dallebrain.anomaly.methods import DIFFUSION_METHODS, METHODS, run_method
from dallebrain.anomaly.metrics import healthy_false_positives, pixel_metrics, slice_auroc
from dallebrain.anomaly.normal_model import POOL_MM
from dallebrain.anomaly.selection import SelectionSizes, select
from dallebrain.data.captions import MODALITIES, ORIENTATIONS
from dallebrain.data.lesions import LESION_TYPES

EXAMPLES_PER_TYPE = 2


@dataclass(frozen=True)
class BenchmarkOptions:
    data: Path
    out: Path
    model: Path | None = None  # pipeline folder (default: the shipped model)
    methods: tuple[str, ...] = METHODS
    lesion_source: str = "auto"  # simulator masks when the data set has them, else pasted lesions
    lesion_types: tuple[str, ...] = LESION_TYPES
    sizes: SelectionSizes = field(default_factory=SelectionSizes)
    fpr: float = 0.01  # stated false-positive rate of healthy brain pixels the thresholds are chosen at
    modalities: tuple[str, ...] | None = None
    orientations: tuple[str, ...] | None = None
    steps: int = 10  # diffusion methods: DDIM steps back from the noised level
    guidance: float = 1.0
    batch_size: int = 8
    pool_mm: float = POOL_MM
    max_calibration: int = 400  # calibrated diffusion methods: healthy fit slices their residuals are learnt on
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown method(s) {unknown or self.methods}: choose from {', '.join(METHODS)}")
        if not 0 < self.fpr < 0.5:
            raise ValueError(f"false-positive rate must lie in (0, 0.5), got {self.fpr}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        for given, known in ((self.modalities, MODALITIES), (self.orientations, ORIENTATIONS)):
            unknown = [x for x in given or () if x not in known]
            if unknown:
                raise ValueError(f"unknown {unknown}: choose from {', '.join(known)}")

    def diffusion_setting(self, method: str):
        return replace(DIFFUSION_METHODS[method], steps=self.steps, guidance=self.guidance, seed=self.seed)


@dataclass
class MethodRun:
    """A method's maps on the test slices (healthy first, then lesion) and its thresholds."""

    thresholds: dict
    maps: np.ndarray
    reconstructions: np.ndarray | None
    seconds: float


def _per_case(thresholds: dict, cases: list[Case], kind: str) -> np.ndarray:
    return np.array([threshold_for(thresholds, c.attributes.modality)[kind] for c in cases])


def _group_metrics(maps: np.ndarray, cases: list[Case], thresholds: dict, healthy_scores: list[float]) -> dict:
    masks = np.stack([c.mask > 0 for c in cases])
    brains = np.stack([brain_mask(c.image) | (c.mask > 0) for c in cases])
    out = pixel_metrics(maps, masks, brains, _per_case(thresholds, cases, "pixel"))
    scores = [slice_score(m) for m in maps]
    out["slice_auroc"] = slice_auroc(scores, healthy_scores)
    out["slices_detected"] = float(np.mean(np.array(scores) > _per_case(thresholds, cases, "slice")))
    out["n_slices"] = len(cases)
    return out


def score_method(run: MethodRun, healthy: list[Case], lesions: list[Case], spacing_mm: float) -> dict:
    """Every score of one method: overall, per lesion type, per lesion size, healthy false positives."""
    healthy_maps, lesion_maps = run.maps[: len(healthy)], run.maps[len(healthy):]
    healthy_scores = [slice_score(m) for m in healthy_maps]
    brains = np.stack([brain_mask(c.image) for c in healthy])
    result = {"overall": _group_metrics(lesion_maps, lesions, run.thresholds, healthy_scores),
              "healthy": healthy_false_positives(healthy_maps, brains, _per_case(run.thresholds, healthy, "pixel")),
              "thresholds": run.thresholds, "seconds": run.seconds, "by_type": {}, "by_size": {}, "by_contrast": {}}
    result["healthy"]["slices_over_slice_threshold"] = float(np.mean(
        np.array(healthy_scores) > _per_case(run.thresholds, healthy, "slice")))
    for key, label_of in (("by_type", lambda c: c.lesion_type),
                          ("by_size", lambda c: size_bin(c.lesion_area_mm2(spacing_mm))),
                          ("by_contrast", lambda c: c.attributes.modality)):
        for label in sorted({label_of(c) for c in lesions}):
            idx = [i for i, c in enumerate(lesions) if label_of(c) == label]
            negatives = healthy_scores if key != "by_contrast" else \
                [sc for sc, c in zip(healthy_scores, healthy, strict=True) if c.attributes.modality == label]
            result[key][label] = _group_metrics(lesion_maps[idx], [lesions[i] for i in idx], run.thresholds,
                                                negatives or healthy_scores)
    return result


def run_one_method(name: str, options: BenchmarkOptions, pipe, normal, val: list[Case], test: list[Case],
                   setting=None, fit_cases=None) -> MethodRun:
    """A method's thresholds on the validation slices and its maps on the test slices (`setting` overrides a
    diffusion method's; a calibrated one first learns its healthy residuals on `fit_cases`, a callable giving
    the fit slices)."""
    if setting is None and name in DIFFUSION_METHODS:
        setting = options.diffusion_setting(name)

    def run(batch):
        return run_method(name, pipe, batch, normal, setting)

    start = time.time()
    if setting is not None and setting.calibrated:
        from itertools import islice

        from dallebrain.anomaly.fitting import fit_residuals

        if fit_cases is None:
            raise ValueError(f"method {name} is calibrated on healthy fit slices: none were given")
        fit_residuals(pipe, normal, setting, islice(fit_cases(), options.max_calibration), options.batch_size)
    val_maps, _ = run_cases(run, val, options.batch_size)
    thresholds = choose_thresholds(val_maps, val, options.fpr)
    maps, recons = run_cases(run, test, options.batch_size)
    return MethodRun(thresholds, maps, recons, time.time() - start)


def setup(options: BenchmarkOptions, subjects: list[str] | None = None):
    """(cohort, chosen slices, pipeline, normal model without thresholds): everything before the methods run."""
    from dallebrain.api import default_model, load_pipeline

    cohort = load_cohort(options.data, options.lesion_source, options.lesion_types, options.seed, subjects)
    t = cohort.table
    keep = np.ones(len(t), bool)
    if options.modalities:
        keep &= t["modality"].isin(options.modalities).to_numpy()
    if options.orientations:
        keep &= t["orientation"].isin(options.orientations).to_numpy()
    cohort.table = t[keep]
    chosen = select(cohort, options.sizes, options.lesion_types, options.pool_mm, options.seed)
    pipe = load_pipeline(options.model or default_model())
    size = int(pipe.unet.config.sample_size) * 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    if size != cohort.grid.shape[0]:
        raise ValueError(f"the model makes {size} px slices, the data set has {cohort.grid.shape[0]} px slices")
    fit_cases = (cohort.case(r) for _, r in chosen.fit.iterrows())
    normal = fit_normal_model(pipe, fit_cases, options.pool_mm, settings=_settings(options, cohort, chosen, pipe))
    return cohort, chosen, pipe, normal


def run_benchmark(options: BenchmarkOptions, progress: bool = True) -> dict:
    """Run every method, write the report files and the normal model; returns metrics.json's content."""
    from tqdm.auto import tqdm

    from dallebrain.anomaly.report import write_benchmark_report

    start = time.time()
    cohort, chosen, pipe, normal = setup(options)
    fitted_s = time.time() - start
    test = chosen.healthy + chosen.lesions
    runs, metrics = {}, {"methods": {}}
    for name in tqdm(options.methods, desc="methods", disable=not progress):
        runs[name] = run_one_method(name, options, pipe, normal, chosen.val, test,
                                    fit_cases=lambda: (cohort.case(r) for _, r in chosen.fit.iterrows()))
        normal.thresholds[name] = runs[name].thresholds
        metrics["methods"][name] = score_method(runs[name], chosen.healthy, chosen.lesions, cohort.grid.spacing_mm)
    normal.save(Path(options.out) / "normal")
    metrics["settings"] = normal.settings
    metrics["timing"] = {"fit_s": fitted_s, "total_s": time.time() - start}
    write_benchmark_report(Path(options.out), metrics, chosen, runs)
    return metrics


def _settings(options: BenchmarkOptions, cohort, chosen, pipe) -> dict:
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}
    settings["diffusion"] = {m: asdict(options.diffusion_setting(m)) for m in options.methods
                             if m in DIFFUSION_METHODS}
    settings |= {"lesion_source_used": cohort.source, "model_hash": pipe.model_hash,
                 "n_fit": len(chosen.fit), "n_val": len(chosen.val), "n_healthy_test": len(chosen.healthy),
                 "n_lesion_test": len(chosen.lesions),
                 "subjects": {role: int(cohort.table.loc[cohort.table["role"] == role, "subject_id"].nunique())
                              for role in ("fit", "val", "test")},
                 "lesion_slices_per_type": {k: sum(c.lesion_type == k for c in chosen.lesions)
                                            for k in options.lesion_types}}
    return settings
