"""The built-in simulated cohort: BIDS-like MRI of individual, aged brains, offline.

Each subject: an age (18-90) and sex, an anatomy (`anatomy`), a field strength and per-subject sequence
parameters, contrasts from the MR signal equations (`mr_physics`), a smooth bias field of random strength and
Rician noise. Images are skull-stripped (like the template they come from) and written in the subject's
native space, whose axes are MNI's; the exact native <- MNI transform is kept in the subject's simulation
record so registration can be checked against the truth and `prepare` can use it.

Options add longitudinal sessions (`longitudinal`: the same person at several ages, `sub-X/ses-Y/anat`) and
lesions (`lesion_plans`: masks as BIDS derivatives in `derivatives/lesions`). Lesion and session draws come
from random streams of their own, so a subject that gets no lesion is the subject of the healthy cohort.
"""

from __future__ import annotations

import json
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from dallebrain.data.anatomy import AgeingModel, age_template, anatomy_targets, draw_traits, place_in_native
from dallebrain.data.io import write_json_atomic, write_text_atomic
from dallebrain.data.lesion_plans import LESION_COLUMNS, add_lesions, draw_lesion_plan
from dallebrain.data.simulate_scan import (  # noqa: F401 - re-exported: the simulation's public names
    AGE_RANGE,
    LESION_DERIVATIVES,
    LESION_STREAM,
    RECORD_SUFFIX,
    SIMULATION_GRID,
    SimulationOptions,
    parse_contrasts,
    scan_record,
    subject_id,
    synthesize,
    write_lesion_mask,
    write_scan,
)
from dallebrain.data.templates import ATLAS_LICENCE, TEMPLATE_LICENCE


def _draws(index: int, options: SimulationOptions, model: AgeingModel):
    """The subject's draws, in the cohort's order: age, sex, field strength, traits; then its lesion plan
    from a stream of its own."""
    rng = np.random.default_rng([options.seed, index])  # per subject: independent of workers and resumes
    age = float(np.round(rng.uniform(*AGE_RANGE), 1))
    sex = "F" if rng.random() < 0.5 else "M"
    field_strength = 1.5 if rng.random() < 0.5 else 3.0
    traits = draw_traits(options.grid, sex, rng, model)
    plan = None
    if options.lesions:
        lesion_rng = np.random.default_rng([options.seed, index, LESION_STREAM])
        plan = draw_lesion_plan(options.lesions, options.lesion_fraction, age, lesion_rng, options.grid)
    return rng, age, sex, field_strength, traits, plan


def simulate_subject(index: int, out_dir: Path, options: SimulationOptions,
                     model: AgeingModel = AgeingModel()) -> dict:
    """Simulate one subject into out_dir/sub-XXXX (written in a temporary folder, then renamed)."""
    from dallebrain.data.simulate_sessions import simulate_sessions

    sid = subject_id(index)
    final = out_dir / f"sub-{sid}"
    record_path = final / f"sub-{sid}{RECORD_SUFFIX}"
    if record_path.exists():
        return _check_design(json.loads(record_path.read_text()), options)
    rng, age, sex, field_strength, traits, plan = _draws(index, options, model)
    ml_per_voxel = options.grid.spacing_mm ** 3 / 1000 * traits.scale ** 3
    tmp = out_dir / f".tmp-sub-{sid}-{uuid.uuid4().hex[:8]}"
    head = {"participant_id": f"sub-{sid}", "age": age, "sex": sex}
    if options.timepoints:
        record = simulate_sessions(tmp, out_dir, sid, head, rng, field_strength, traits, plan, options, model)
    else:
        anat = tmp / "anat"
        anat.mkdir(parents=True)
        aged = add_lesions(age_template(options.grid, age, traits, model), plan, options.grid, ml_per_voxel, age)
        anatomy = place_in_native(options.grid, aged, traits, traits.to_mni())
        scanner = write_scan(anat, f"sub-{sid}", anatomy, field_strength, options.contrasts, rng, options.grid)
        record = head | scan_record(anatomy, anatomy_targets(options.grid, aged, traits), scanner)
        if options.lesions:
            record["lesions"] = write_lesion_mask(out_dir, f"sub-{sid}", anatomy, options.grid, plan)
    record |= {"seed": options.seed, "index": index}
    (tmp / f"sub-{sid}{RECORD_SUFFIX}").write_text(json.dumps(record, indent=2, default=float))
    if final.exists():  # an earlier run died after writing images but before its record: redo it
        shutil.rmtree(final)
    tmp.rename(final)
    return record


def _check_design(record: dict, options: SimulationOptions) -> dict:
    """A finished subject from an earlier run must have been made with the same design as this run's."""
    sessions, lesions = "sessions" in record, "lesions" in record or "session_lesions" in record
    if sessions != bool(options.timepoints) or lesions != bool(options.lesions):
        raise ValueError(f"{record['participant_id']} was simulated {'with' if sessions else 'without'} sessions and "
                         f"{'with' if lesions else 'without'} lesions, unlike this run: use another --out")
    return record


def _check_same_cohort(out_dir: Path, options: SimulationOptions) -> None:
    """Refuse to finish a cohort folder with other design options than it was started with."""
    path = out_dir / "dataset_description.json"
    if not path.exists():
        return
    done = json.loads(path.read_text())
    asked = _description(options)
    keys = ("SimulationSeed", "TimepointsYears", "SessionScanner", "Lesions", "LesionFraction")
    differ = [k for k in keys if done.get(k) != asked.get(k)]
    if differ:
        raise ValueError(f"{out_dir} holds a cohort simulated with other settings ({', '.join(differ)}): "
                         "use another --out or the same options")


PARTICIPANT_COLUMNS = ["participant_id", "age", "sex", "field_strength", "t1w_sequence", "icv_ml", "gm_ml",
                       "wm_ml", "csf_ml", "lateral_ventricles_ml", "nwbv"]


def participants_table(records: list[dict], options: SimulationOptions):
    """participants.tsv rows: the healthy columns, then the lesion columns of lesion cohorts (first scan)."""
    import pandas as pd

    table = pd.DataFrame(records)
    columns = list(PARTICIPANT_COLUMNS)
    if options.timepoints:
        table["sessions"] = [len(r["sessions"]) for r in records]
        columns.append("sessions")
    if options.lesions:
        first = [r["lesions"] if "lesions" in r else r["session_lesions"] for r in records]
        for col in LESION_COLUMNS:
            table[col] = [f[col] for f in first]
        columns += LESION_COLUMNS
    return table[columns].sort_values("participant_id")


def simulate_cohort(out_dir: str | Path, options: SimulationOptions, workers: int = 1,
                    progress: bool = True):
    """Simulate (or finish simulating) a cohort; returns the participants table (pandas)."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_same_cohort(out_dir, options)
    for stale in out_dir.glob(".tmp-sub-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    indices = range(options.subjects)
    bar = tqdm(total=options.subjects, desc="simulate", unit="subject", disable=not progress)
    records = []
    if workers <= 1:
        for i in indices:
            records.append(simulate_subject(i, out_dir, options))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for record in pool.map(simulate_subject, indices, [out_dir] * len(indices),
                                   [options] * len(indices)):
                records.append(record)
                bar.update()
    bar.close()
    table = participants_table(records, options)
    write_text_atomic(out_dir / "participants.tsv", table.to_csv(sep="\t", index=False, float_format="%.4f"))
    write_json_atomic(out_dir / "dataset_description.json", _description(options))
    if options.lesions:
        _describe_lesion_derivatives(out_dir)
    write_text_atomic(out_dir / "README", _cohort_readme(options))
    return table.reset_index(drop=True)


def _description(options: SimulationOptions) -> dict:
    healthy = not options.lesions
    out = {"Name": f"Dall-e Brain simulated {'healthy ' if healthy else ''}cohort", "BIDSVersion": "1.9.0",
           "DatasetType": "raw",
           "GeneratedBy": [{"Name": "dallebrain", "Description": "dallebrain data simulate"}],
           "License": "Derived from the MNI152 2009a template and the Neuromorphometrics atlas: see README",
           "SimulationSeed": options.seed, "Subjects": options.subjects}
    if options.timepoints:
        out |= {"TimepointsYears": list(options.timepoints), "SessionScanner": options.session_scanner}
    if not healthy:
        out |= {"Lesions": list(options.lesions), "LesionFraction": options.lesion_fraction}
    return out


def _describe_lesion_derivatives(out_dir: Path) -> None:
    from dallebrain.data.lesions import MASK_DESCRIPTIONS, MASK_LABELS

    root = out_dir / LESION_DERIVATIVES
    write_json_atomic(root / "dataset_description.json", {
        "Name": "Lesion masks of the simulated cohort", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "dallebrain", "Description": "dallebrain data simulate --lesions"}]})
    rows = ["index\tname\tdescription"] + [f"{k}\t{v}\t{MASK_DESCRIPTIONS[v]}" for k, v in MASK_LABELS.items()]
    write_text_atomic(root / "label-lesion_mask.tsv", "\n".join(rows) + "\n")


def _cohort_readme(options: SimulationOptions) -> str:
    extra = ""
    if options.timepoints:
        extra += (f"\nEach subject was scanned at {', '.join(f'{t:g}' for t in options.timepoints)} years after "
                  f"baseline (sub-*/ses-*/anat; ages and volumes per session in sub-*/sub-*_sessions.tsv), from "
                  f"one anatomy; scanner and protocol at later sessions: {options.session_scanner}.\n")
    if options.lesions:
        extra += (f"\nLesions ({', '.join(options.lesions)}) in a share {options.lesion_fraction:g} of subjects; "
                  f"masks in {LESION_DERIVATIVES.as_posix()}/ (label values in label-lesion_mask.tsv), lesion "
                  "columns in participants.tsv; 'healthy' is true only where the mask is empty.\n")
    return f"""Dall-e Brain simulated {'healthy ' if not options.lesions else ''}cohort
=====================================
{options.subjects} simulated subjects (seed {options.seed}), contrasts {', '.join(options.contrasts)},
{options.grid.spacing_mm} mm isotropic, skull-stripped, native space with MNI-aligned axes.
Volumes in participants.tsv are measured on the simulated tissue maps; the targets asked for, the
sequence parameters and the exact native<-MNI transform are in each sub-*/sub-*{RECORD_SUFFIX}.
{extra}
Licences of the sources:
- {TEMPLATE_LICENCE}
- {ATLAS_LICENCE}
"""
