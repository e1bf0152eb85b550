"""`dallebrain data prepare`: cohort folder -> prepared slice data set (PNG slices + metadata.parquet).

Per subject (in parallel, resumable): read, place in MNI space (the known transform of a simulated subject,
or N4 + affine registration for real data), brain mask, normalise within the brain, cut slices, note the
visible structures. Then, for the whole cohort: split by subject, age norms, captions, dataset card.
Everything is written through temporary files, so a killed run leaves only whole files and a rerun
skips the subjects already done.
"""

from __future__ import annotations

import json
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dallebrain.data.grid import ORIENTATIONS, VolumeGrid, prepared_grid
from dallebrain.data.io import atomic_path, write_json_atomic, write_text_atomic
from dallebrain.data.sources.base import SubjectRecord

SOURCES = ("simulated", "bids", "ixi", "oasis1", "hcp")
_MODULES = {"oasis1": "oasis"}
SUBJECT_COLUMNS = ("age", "sex", "field_strength", "site", "icv_ml", "gm_ml", "wm_ml", "csf_ml",
                   "lateral_ventricles_ml", "nwbv")


@dataclass(frozen=True)
class PrepareOptions:
    """Settings of one `prepare` run (recorded in the dataset card)."""

    source: str
    input_dir: Path
    out_dir: Path
    demographics: Path | None = None
    size: int = 128  # slice size in pixels over a 192 mm field of view (128 -> 1.5 mm pixels)
    slice_step_mm: float = 3.0  # distance between kept slices along each axis
    min_brain_fraction: float = 0.1  # keep slices whose brain covers at least this part of the image
    orientations: tuple[str, ...] = ORIENTATIONS
    seed: int = 0  # split and caption phrasing
    captions_per_slice: int = 5
    workers: int = 1

    @property
    def grid(self) -> VolumeGrid:
        return prepared_grid(self.size)


@dataclass
class PrepareResult:
    n_subjects: int
    n_slices: int
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def find_subjects(source: str, input_dir: Path, demographics: Path | None = None) -> list[SubjectRecord]:
    """Dispatch to the source's reader (each module has find_subjects(input_dir, demographics))."""
    import importlib

    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: choose from {', '.join(SOURCES)}")
    module = importlib.import_module(f"dallebrain.data.sources.{_MODULES.get(source, source)}")
    return module.find_subjects(Path(input_dir), demographics)


def _subject_file(out_dir: Path, record: SubjectRecord) -> Path:
    return out_dir / "subjects" / f"{record.source}-{record.subject_id}.parquet"


def _template_t1():
    import nibabel as nib

    from dallebrain.data.templates import template_path

    return nib.load(template_path("t1"))


def estimate_to_mni(images: dict, in_mni: bool) -> np.ndarray:
    """native <- MNI world transform of a subject by affine registration of its T1w (else its first
    image) to the MNI152 template, after N4 bias correction; identity when the source is already in MNI."""
    from dallebrain.data import registration

    if in_mni:
        return np.eye(4)
    reference = images.get("T1w") or next(iter(images.values()))
    corrected = registration.n4_bias_correct(reference)
    return registration.register_affine(corrected, _template_t1())


def place_in_mni(record: SubjectRecord, grid: VolumeGrid):
    """Yield (modality, MNI-grid volume, brain mask, structure labels) for each image of a subject."""
    import nibabel as nib

    from dallebrain.data import registration
    from dallebrain.data.templates import atlas_labels, resample_to_grid, tissue_priors

    images = {m: registration.load_volume(p) for m, p in record.images.items()}
    if record.to_mni is not None:  # ground truth (simulated): nothing to estimate
        to_mni = np.asarray(record.to_mni, dtype=float)
        seg, atlas = nib.load(record.tissue_seg), nib.load(record.extra["atlas_seg"])
        brain = resample_to_grid(np.asarray(seg.dataobj), seg.affine, grid, 0, to_mni) > 0
        labels = resample_to_grid(np.asarray(atlas.dataobj), atlas.affine, grid, 0, to_mni).astype(np.int16)
    else:
        to_mni = estimate_to_mni(images, record.in_mni)
        brain = tissue_priors(grid).intracranial > 0.5  # atlas-based skull strip after registration
        labels = atlas_labels(grid)
    for modality, img in images.items():
        volume = resample_to_grid(np.asarray(img.dataobj, dtype=np.float32), img.affine, grid, 1, to_mni)
        yield modality, volume, brain & (volume > 0), labels


def prepare_subject(record: SubjectRecord, options: PrepareOptions) -> Path:
    """Slices and slice rows of one subject; the subject's parquet file is written last (the done-marker)."""
    import pandas as pd

    from dallebrain.data.slicing import cut_slices, normalise_in_brain

    if record.problems:
        raise ValueError("; ".join(record.problems))
    if not record.images:
        raise ValueError("no image found")
    grid = options.grid
    rel_dir = f"slices/{record.source}-{record.subject_id}"
    rows = []
    for modality, volume, brain, labels in place_in_mni(record, grid):
        if brain.sum() < 1000:
            raise ValueError("brain mask nearly empty after placement in MNI space")
        normalised = normalise_in_brain(volume, brain)
        rows += [asdict(r) for r in cut_slices(
            normalised, brain, labels, grid, modality, options.out_dir / rel_dir, rel_dir,
            f"{record.source}-{record.subject_id}", options.slice_step_mm, options.min_brain_fraction,
            options.orientations)]
    table = pd.DataFrame(rows)
    table.insert(0, "subject_id", f"{record.source}-{record.subject_id}")
    table.insert(1, "source", record.source)
    values = {"age": record.age, "sex": record.sex, "field_strength": record.field_strength,
              "site": record.site, **{k: record.extra.get(k) for k in SUBJECT_COLUMNS[4:]}}
    for key in SUBJECT_COLUMNS:
        table[key] = values.get(key)
    table["structures"] = table["structures"].map(list)
    path = _subject_file(options.out_dir, record)
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
    return path


def _run_one(args: tuple[SubjectRecord, PrepareOptions]) -> dict:
    record, options = args
    try:
        prepare_subject(record, options)
        return {"subject_id": record.subject_id, "ok": True}
    except Exception as exc:  # one bad subject must not stop the cohort: it goes to the failures table
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return {"subject_id": record.subject_id, "ok": False, "reason": reason,
                "trace": traceback.format_exc(limit=3)}


def prepare(options: PrepareOptions, progress: bool = True) -> PrepareResult:
    """Run (or finish) a prepare; returns counts and the failures (also in failures.csv)."""
    import pandas as pd
    from tqdm import tqdm

    from dallebrain.data.card import write_dataset_card
    from dallebrain.data.cohort import add_cohort_fields

    start = time.time()
    records = find_subjects(options.source, options.input_dir, options.demographics)
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    todo = [r for r in records if not _subject_file(out, r).exists()]
    failures = []
    bar = tqdm(total=len(records), initial=len(records) - len(todo), desc="prepare", unit="subject",
               disable=not progress)
    jobs = [(r, options) for r in todo]
    if options.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=options.workers) as pool:
            results = pool.map(_run_one, jobs)
            for res in results:
                failures += [] if res["ok"] else [res]
                bar.update()
    else:
        for job in jobs:
            res = _run_one(job)
            failures += [] if res["ok"] else [res]
            bar.update()
    bar.close()

    failed = {f["subject_id"] for f in failures}
    parts = [pd.read_parquet(_subject_file(out, r)) for r in records
             if r.subject_id not in failed and _subject_file(out, r).exists()]
    failure_table = pd.DataFrame(failures, columns=["subject_id", "reason"])
    write_text_atomic(out / "failures.csv", failure_table.to_csv(index=False))
    if not parts:
        raise RuntimeError(f"no subject could be prepared ({len(failures)} failed): see {out / 'failures.csv'}")
    slices = add_cohort_fields(pd.concat(parts, ignore_index=True), options.seed, options.captions_per_slice)
    with atomic_path(out / "metadata.parquet") as tmp:
        slices.to_parquet(tmp, index=False)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}
    settings["grid"] = {"shape": options.grid.shape, "spacing_mm": options.grid.spacing_mm,
                        "origin_mm": options.grid.origin_mm}
    write_json_atomic(out / "prepare.json", settings)
    write_dataset_card(out, slices, failure_table, options)
    return PrepareResult(len(parts), len(slices), failures, time.time() - start)


def read_settings(prepared_dir: str | Path) -> dict:
    """The settings a prepared data set was made with (its grid among them)."""
    return json.loads((Path(prepared_dir) / "prepare.json").read_text())
