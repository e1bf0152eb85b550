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
from functools import lru_cache
from pathlib import Path

import numpy as np

from dallebrain.data import leftovers
from dallebrain.data.grid import VolumeGrid, prepared_grid
from dallebrain.data.io import atomic_path, write_json_atomic, write_text_atomic
from dallebrain.data.registration import MAX_VOXELS
from dallebrain.data.sources.base import SubjectRecord
from dallebrain.vocab import ORIENTATIONS

SOURCES = ("simulated", "bids", "ixi", "oasis1", "hcp")
_MODULES = {"oasis1": "oasis"}
SOURCE_MEASURES = ("etiv", "nwbv", "asf", "cdr", "mmse", "age_range")  # kept as source_<name> columns
# Per-scan fields a source may give in `extra`, kept as columns: a longitudinal session, lesion findings.
SCAN_FIELDS = ("session_id", "years_from_baseline", "healthy", "lesion_type", "findings")
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
    max_voxels: int = MAX_VOXELS  # larger images are refused from their header (registration.load_volume)

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


# Real data: N4 and registration run on copies block-averaged to WORK_MM, never at full resolution; the
# template is averaged the same way. ITK's pyramid then shrinks both 2x: a 4 mm level, then a 2 mm level.
WORK_MM = 2.0
N4_FIT_MM = 5.0  # N4 fits its field on ~40-60k voxels of a head: most of the correction, a tenth of the time
N4_ITERATIONS = (50, 50, 30)
N4_CONVERGENCE = 5e-3
# 10k samples / 60 iterations halve the registration time of 20k / 100 for ~0.2 mm more landmark error
# (0.8 -> 1.0 mm measured on the 3 mm fixture): the 500-IXI-volumes-in-30-minutes budget needs it.
REGISTRATION = {"shrink_factors": (2, 1), "smoothing_mm": (2.0, 1.0), "max_samples": 10_000, "iterations": 60,
                "min_step": 0.01}
VOLUME_GRID_SIZE = 96  # tissue volumes are measured on the 2 mm MNI grid, whatever the slice size
MIN_TEMPLATE_R = 0.4  # a registered T1 correlates far better than this with the template inside the brain
MIN_BRAIN_COVERAGE = 0.85  # part of the template brain the image's field of view must cover
SCALE_RANGE = (0.6, 1.6)  # axis scales of native <- MNI that a human head can need


@lru_cache(maxsize=1)
def _template_work():
    import nibabel as nib

    from dallebrain.data import registration
    from dallebrain.data.templates import template_path

    return registration.block_average(nib.load(template_path("t1")), WORK_MM)


def _log_bias(work, skull_stripped: bool) -> np.ndarray:
    from dallebrain.data import registration

    spacing = float(np.linalg.norm(work.affine[:3, :3], axis=0).min())
    mask = np.asarray(work.dataobj) > 0 if skull_stripped else None
    return registration.n4_log_bias(work, mask, max(1, round(N4_FIT_MM / spacing)), N4_ITERATIONS,
                                    N4_CONVERGENCE)


def estimate_to_mni(reference, start: np.ndarray | None = None) -> np.ndarray:
    """native <- MNI world transform of a subject: affine registration (rigid, then 12 degrees of freedom;
    Mattes MI) of its bias-corrected, block-averaged reference image to the template at 4 then 2 mm.

    Starts from `start`, else from aligned centres of mass: also for atlas-space images (OASIS T88), whose
    Analyze headers do not say where the atlas origin is."""
    from dallebrain.data import registration

    to_mni = registration.register_affine(reference, _template_work(), initial=start, **REGISTRATION)
    scales = np.linalg.svd(to_mni[:3, :3], compute_uv=False)
    if scales.min() < SCALE_RANGE[0] or scales.max() > SCALE_RANGE[1]:
        raise ValueError(f"registration to MNI failed: axis scales {', '.join(f'{x:.2f}' for x in scales)} "
                         "are not those of a head")
    return to_mni


@dataclass
class Placement:
    """A subject in MNI space: what slicing and the metadata need."""

    to_mni: np.ndarray  # native <- MNI world transform
    volumes: dict[str, np.ndarray]  # modality -> volume on the prepared grid (bias corrected)
    brain: np.ndarray  # brain mask on the prepared grid
    labels: np.ndarray  # atlas structure labels on the prepared grid
    tissue: dict  # icv_ml, gm_ml, wm_ml, csf_ml, lateral_ventricles_ml, nwbv (native mL) + volume_method


def place_in_mni(record: SubjectRecord, grid: VolumeGrid, max_voxels: int = MAX_VOXELS) -> Placement:
    """Read a subject's images and put them on `grid` in MNI space, with brain mask, labels and volumes.

    Simulated subjects use their known transform and volumes. Real ones: N4 (unless the source corrected
    the bias), affine registration of the T1w (else the first image) to MNI152 (identity for HCP
    MNINonLinear), the other images placed by their own world coordinates (same session). Brain mask: the
    template intracranial mask intersected with signal, or the source's own zero background when it is
    skull stripped."""
    import nibabel as nib

    from dallebrain.data import registration
    from dallebrain.data.templates import atlas_labels, resample_to_grid

    images = {m: registration.load_volume(p, max_voxels) for m, p in record.images.items()}
    if record.to_mni is not None:  # ground truth (simulated): nothing to estimate
        to_mni = np.asarray(record.to_mni, dtype=float)
        seg, atlas = nib.load(record.tissue_seg), nib.load(record.extra["atlas_seg"])
        brain = resample_to_grid(np.asarray(seg.dataobj), seg.affine, grid, 0, to_mni) > 0
        labels = resample_to_grid(np.asarray(atlas.dataobj), atlas.affine, grid, 0, to_mni).astype(np.int16)
        volumes = {m: resample_to_grid(np.asarray(img.dataobj, dtype=np.float32), img.affine, grid, 1, to_mni)
                   for m, img in images.items()}
        tissue = {k: record.extra.get(k) for k in SUBJECT_COLUMNS[4:]}
        return Placement(to_mni, volumes, brain, labels, tissue)

    reference = "T1w" if "T1w" in images else next(iter(images))
    skull_stripped = bool(record.extra.get("skull_stripped"))
    works = {m: registration.block_average(img, WORK_MM) for m, img in images.items()}
    log_bias = {m: None if record.extra.get("bias_corrected") else _log_bias(w, skull_stripped)
                for m, w in works.items()}
    if record.in_mni and record.extra.get("atlas") == "MNI152":
        to_mni = np.eye(4)
    else:
        work = works[reference]
        lb = log_bias[reference]
        corrected = work if lb is None else nib.Nifti1Image(np.asarray(work.dataobj) / np.exp(lb), work.affine)
        to_mni = estimate_to_mni(corrected)

    def on(target: VolumeGrid, modality: str) -> np.ndarray:
        img = images[modality]
        volume = resample_to_grid(np.asarray(img.dataobj), img.affine, target, 1, to_mni)
        if log_bias[modality] is not None:
            volume /= np.exp(resample_to_grid(log_bias[modality], works[modality].affine, target, 1, to_mni))
        return volume

    volume_grid = prepared_grid(VOLUME_GRID_SIZE)
    reference_v = on(volume_grid, reference)
    brain_v = _brain_mask(reference_v, volume_grid, skull_stripped, check=True,
                          t1_reference=reference == "T1w")
    tissue = _tissue_volumes(record, images[reference], reference_v, brain_v, volume_grid, to_mni, max_voxels)
    volumes = {m: on(grid, m) for m in images}
    brain = _brain_mask(volumes[reference], grid, skull_stripped)
    return Placement(to_mni, volumes, brain, atlas_labels(grid), tissue)


def _brain_mask(reference: np.ndarray, grid: VolumeGrid, skull_stripped: bool, check: bool = False,
                t1_reference: bool = False) -> np.ndarray:
    """Template intracranial mask & signal of the registered reference (holes filled: dark ventricles stay
    in); for a skull-stripped source, its own non-zero voxels. `check` refuses a failed registration or a
    field of view that misses the brain."""
    from scipy import ndimage

    from dallebrain.data.templates import tissue_priors

    priors = tissue_priors(grid)
    intracranial = priors.intracranial > 0.5
    inside = reference[intracranial]
    top = float(np.percentile(inside, 98)) if inside.size else 0.0
    if top <= 0:
        raise ValueError("no signal where the brain should be after registration to MNI")
    if skull_stripped:
        brain = ndimage.binary_fill_holes(reference > 1e-3 * top)
    else:
        brain = intracranial & ndimage.binary_fill_holes(reference > 0.1 * top)
    if check:
        coverage = float((inside > 0).mean())
        if coverage < MIN_BRAIN_COVERAGE:
            raise ValueError(f"field of view covers only {coverage:.0%} of the brain after registration to MNI")
        if t1_reference:
            r = float(np.corrcoef(inside, priors.t1[intracranial])[0, 1])
            if not r >= MIN_TEMPLATE_R:
                raise ValueError(f"registration to MNI failed: T1 vs template correlation {r:.2f} "
                                 f"< {MIN_TEMPLATE_R}")
    return brain


def _tissue_volumes(record: SubjectRecord, reference_img, reference_v: np.ndarray, brain_v: np.ndarray,
                    grid: VolumeGrid, to_mni: np.ndarray, max_voxels: int = MAX_VOXELS) -> dict:
    """Native tissue volumes: the source's segmentation when it has one, else a GMM on the reference."""
    from scipy import ndimage

    from dallebrain.data import registration, volumes
    from dallebrain.data.templates import (
        LATERAL_VENTRICLE_LABELS,
        atlas_labels,
        label_ids,
        resample_to_grid,
        tissue_priors,
    )

    native_per_mni = float(abs(np.linalg.det(to_mni[:3, :3])))
    grid_ml = grid.spacing_mm ** 3 / 1000.0
    # One voxel of margin: enlarged (older) ventricles reach past the young atlas's labels; around them
    # is white matter, whose CSF membership is nil.
    ventricles = ndimage.binary_dilation(np.isin(atlas_labels(grid), label_ids(*LATERAL_VENTRICLE_LABELS)))
    result = None
    if record.source == "oasis1" and record.tissue_seg is not None:
        seg = registration.load_volume(record.tissue_seg, max_voxels)
        seg_data = np.rint(np.asarray(seg.dataobj)).astype(np.int16)
        t1 = np.asarray(reference_img.dataobj)
        if seg_data.shape != t1.shape or not np.allclose(seg.affine, reference_img.affine, atol=1e-3):
            raise ValueError(f"{Path(record.tissue_seg).name}: not on the grid of the T1 image")
        classes = volumes.fsl_seg_classes(seg_data, t1)
        csf = resample_to_grid((seg_data == classes["csf"]).astype(np.float32), seg.affine, grid, 1, to_mni)
        asf = record.extra.get("asf")
        # T88 images are scaled to the atlas: ASF (the atlas scaling factor) brings volumes back to native.
        native_per_image = 1.0 / asf if asf else 1.0
        vents = float(csf[ventricles].sum()) * grid_ml * native_per_mni * native_per_image
        result = volumes.from_fsl_seg(seg_data, t1, seg.affine, vents, native_per_image)
    elif record.source == "hcp" and (record.extra.get("native_seg") or record.tissue_seg):
        path = record.extra.get("native_seg") or (None if record.in_mni else record.tissue_seg)
        if path is None:  # only the MNINonLinear labels: non-linearly warped, their volumes are not native
            return {k: None for k in SUBJECT_COLUMNS[4:]} | {"volume_method": None}
        aseg = registration.load_volume(path, max_voxels)
        brain_path = record.extra.get("native_brain")
        brain = None
        if brain_path:
            brain_img = registration.load_volume(brain_path, max_voxels)
            if brain_img.shape == aseg.shape:
                brain = np.asarray(brain_img.dataobj) > 0
        result = volumes.from_freesurfer(np.rint(np.asarray(aseg.dataobj)), aseg.affine, brain)
    if result is None:
        priors = tissue_priors(grid)
        result = volumes.from_intensity(reference_v, brain_v, priors.gm, priors.wm, priors.csf, ventricles,
                                        grid_ml, native_per_mni)
    columns = result.columns()
    columns["volume_method"] = columns.pop("method")
    return columns


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
    table = pd.DataFrame(rows)
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
