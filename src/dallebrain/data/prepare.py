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

from dallebrain.data import leftovers
from dallebrain.data.grid import VolumeGrid, prepared_grid
from dallebrain.data.io import atomic_path, write_json_atomic, write_text_atomic
from dallebrain.data.placement import TISSUE_COLUMNS, place_in_mni
from dallebrain.data.sources import SOURCES, reader  # noqa: F401 - SOURCES: the CLI's choices
from dallebrain.data.sources.base import SubjectRecord
from dallebrain.data.volume_io import MAX_VOXELS
from dallebrain.vocab import ORIENTATIONS

SOURCE_MEASURES = ("etiv", "nwbv", "asf", "cdr", "mmse", "age_range")  # kept as source_<name> columns
# Per-scan fields a source may give in `extra`, kept as columns: a longitudinal session, lesion findings.
SCAN_FIELDS = ("session_id", "years_from_baseline", "healthy", "lesion_type", "findings")
SUBJECT_COLUMNS = ("age", "sex", "field_strength", "site", *TISSUE_COLUMNS)


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
    max_voxels: int = MAX_VOXELS  # larger images are refused from their header (volume_io.load_volume)

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
    return reader(source).find_subjects(Path(input_dir), demographics)


def _subject_file(out_dir: Path, record: SubjectRecord) -> Path:
    return out_dir / "subjects" / f"{record.source}-{record.subject_id}.parquet"


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
    placement = place_in_mni(record, grid, options.max_voxels)
    rows = []
    for modality, volume in placement.volumes.items():
        brain = placement.brain & (volume > 0)
        if brain.sum() < 1000:
            raise ValueError(f"{modality}: brain mask nearly empty after placement in MNI space")
        normalised = normalise_in_brain(volume, brain)
        rows += [asdict(r) for r in cut_slices(
            normalised, brain, placement.labels, grid, modality, options.out_dir / rel_dir, rel_dir,
            f"{record.source}-{record.subject_id}", options.slice_step_mm, options.min_brain_fraction,
            options.orientations)]
    if not rows:
        raise ValueError("no slice shows enough brain")
    if record.extra.get("lesion_mask"):  # simulated lesions: the mask sliced beside the images
        from dallebrain.data.slicing import add_lesion_slices

        add_lesion_slices(rows, record.extra["lesion_mask"], placement.to_mni, grid, options.out_dir / rel_dir,
                          rel_dir, f"{record.source}-{record.subject_id}")
    if record.to_mni is not None and record.tissue_seg:  # ground-truth tissue labels (simulated) beside the images
        from dallebrain.data.slicing import add_label_slices

        add_label_slices(rows, record.tissue_seg, placement.labels, placement.to_mni, grid,
                         options.out_dir / rel_dir, rel_dir, f"{record.source}-{record.subject_id}")
    table = pd.DataFrame(rows)
    if "label_path" not in table:  # a cohort without a tissue segmentation in MNI-known space
        table["label_path"] = None
    # The person, not the scan: every session of a subject shares the id the split is made on.
    table.insert(0, "subject_id", f"{record.source}-{record.extra.get('participant', record.subject_id)}")
    table.insert(1, "source", record.source)
    values = {"age": record.age, "sex": record.sex, "field_strength": record.field_strength,
              "site": record.site, **placement.tissue}
    for key in SUBJECT_COLUMNS:
        table[key] = values.get(key)
    if "volume_method" in placement.tissue:
        table["volume_method"] = placement.tissue["volume_method"]
    for key, value in record.extra.items():  # the source's own measures, kept beside ours (e.g. OASIS eTIV)
        if key in SOURCE_MEASURES:
            table[f"source_{key}"] = value
    for key in SCAN_FIELDS:
        if key in record.extra:
            table[key] = record.extra[key]
    table["to_mni"] = json.dumps(placement.to_mni.round(5).tolist())  # native <- MNI, for provenance
    table["structures"] = table["structures"].map(list)
    path = _subject_file(options.out_dir, record)
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
    return path


def _run_one(args: tuple[SubjectRecord, PrepareOptions]) -> dict:
    record, options = args
    _share_cores(options.workers)
    try:
        prepare_subject(record, options)
        return {"subject_id": record.subject_id, "ok": True}
    except Exception as exc:  # one bad subject must not stop the cohort: it goes to the failures table
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return {"subject_id": record.subject_id, "ok": False, "reason": reason,
                "trace": traceback.format_exc(limit=3)}


def _share_cores(workers: int) -> None:
    """ITK threads per process: the cores divided among the workers (oversubscription only costs)."""
    import os

    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, (os.cpu_count() or 1) // max(1, workers)))


def _run_in_pool(jobs: list, workers: int, on_result) -> None:
    """Run jobs in `workers` processes. A worker that dies (out of memory, a crash inside a C library) breaks
    the pool: the unfinished jobs then run again one process each, so the death is pinned on its subject."""
    from concurrent.futures import as_completed
    from concurrent.futures.process import BrokenProcessPool

    unfinished = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_run_one, job): job for job in jobs}
        for future in as_completed(futures):
            try:
                on_result(future.result())
            except BrokenProcessPool:
                unfinished.append(futures[future])
    for job in unfinished:
        with ProcessPoolExecutor(max_workers=1) as pool:
            try:
                on_result(pool.submit(_run_one, job).result())
            except BrokenProcessPool:
                on_result({"subject_id": job[0].subject_id, "ok": False,
                           "reason": "worker process died (out of memory or a crash while reading the images)"})


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
    leftovers.remove_temp_files(out)  # a killed run's half-written files
    todo = [r for r in records if not _subject_file(out, r).exists()]
    failures = []
    bar = tqdm(total=len(records), initial=len(records) - len(todo), desc="prepare", unit="subject",
               disable=not progress)

    def on_result(res: dict) -> None:
        if not res["ok"]:
            failures.append(res)
        bar.update()

    jobs = [(r, options) for r in todo]
    if options.workers > 1 and len(jobs) > 1:
        _run_in_pool(jobs, options.workers, on_result)
    else:
        for job in jobs:
            on_result(_run_one(job))
    bar.close()
    order = {r.subject_id: i for i, r in enumerate(records)}
    failures.sort(key=lambda f: order.get(f["subject_id"], len(order)))

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
    # After the metadata: a kill before this line leaves the old slices for the next run to judge.
    leftovers.remove_unreferenced_slices(out, leftovers.referenced_files(slices))
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}
    settings["grid"] = {"shape": options.grid.shape, "spacing_mm": options.grid.spacing_mm,
                        "origin_mm": options.grid.origin_mm}
    write_json_atomic(out / "prepare.json", settings)
    write_dataset_card(out, slices, failure_table, options)
    return PrepareResult(len(parts), len(slices), failures, time.time() - start)


def read_settings(prepared_dir: str | Path) -> dict:
    """The settings a prepared data set was made with (its grid among them)."""
    return json.loads((Path(prepared_dir) / "prepare.json").read_text())
