"""Writing a longitudinal subject: one BIDS session per time point (`sub-X/ses-Y/anat`), a sessions table
(`sub-X/sub-X_sessions.tsv`) with age and measured volumes, and a record per session with its exact
native <- MNI transform and the fingerprint of the shape warp all sessions share."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dallebrain.data.anatomy import AgeingModel, IndividualTraits
from dallebrain.data.lesion_plans import LESION_COLUMNS, add_lesions
from dallebrain.data.longitudinal import sessions, shape_warp_digest
from dallebrain.data.simulate_scan import (
    RECORD_SUFFIX,
    SESSION_STREAM,
    SimulationOptions,
    scan_record,
    write_lesion_mask,
    write_scan,
)

SESSION_COLUMNS = ["session_id", "years_from_baseline", "age", "field_strength", "t1w_sequence", "icv_ml", "gm_ml",
                   "wm_ml", "csf_ml", "lateral_ventricles_ml", "nwbv"]


def simulate_sessions(tmp: Path, out_dir: Path, sid: str, head: dict, rng: np.random.Generator,
                      field_strength: float, traits: IndividualTraits, plan, options: SimulationOptions,
                      model: AgeingModel) -> dict:
    """All sessions of one subject into the temporary subject folder `tmp`; returns the subject record.

    The first session uses the subject's own random stream (so a time point 0 is the cross-sectional
    subject's scan); later ones a stream of their own for pose, noise and, with session_scanner 'redraw',
    field strength and protocol."""
    grid = options.grid
    ml_per_voxel = grid.spacing_mm ** 3 / 1000 * traits.scale ** 3
    session_rng = np.random.default_rng([options.seed, int(sid) - 1, SESSION_STREAM])

    def lesions(aged, age):
        return add_lesions(aged, plan, grid, ml_per_voxel, age)

    rows, first, scanner = [], None, None
    digest = shape_warp_digest(traits)
    for session in sessions(grid, head["age"], traits, options.timepoints, session_rng, model, lesions):
        stem = f"sub-{sid}_ses-{session.session_id}"
        anat = tmp / f"ses-{session.session_id}" / "anat"
        anat.mkdir(parents=True)
        scan_rng = rng if first is None else session_rng
        strength = field_strength
        kept = scanner if options.session_scanner == "keep" else None
        if first is not None and kept is None:
            strength = 1.5 if session_rng.random() < 0.5 else 3.0
        scanner = write_scan(anat, stem, session.anatomy, strength if kept is None else kept.field_strength,
                             options.contrasts, scan_rng, grid, kept)
        record = {"participant_id": head["participant_id"], "session_id": f"ses-{session.session_id}",
                  "years_from_baseline": session.years, "age": session.age, "sex": head["sex"],
                  **scan_record(session.anatomy, session.targets, scanner), "shape_warp_sha1": digest}
        if options.lesions:
            record["lesions"] = write_lesion_mask(out_dir, stem, session.anatomy, grid, plan, session.session_id)
        (tmp / f"ses-{session.session_id}" / f"{stem}{RECORD_SUFFIX}").write_text(
            json.dumps(record, indent=2, default=float))
        rows.append(record)
        first = first or record
    _write_sessions_table(tmp / f"sub-{sid}_sessions.tsv", rows, bool(options.lesions))
    subject = head | {k: v for k, v in first.items() if k not in head and k not in ("session_id", "lesions")}
    subject["sessions"] = [r["session_id"] for r in rows]
    if options.lesions:
        subject["session_lesions"] = first["lesions"]
    return subject


def _write_sessions_table(path: Path, rows: list[dict], lesions: bool) -> None:
    import pandas as pd

    table = pd.DataFrame(rows)
    columns = list(SESSION_COLUMNS)
    if lesions:
        for col in LESION_COLUMNS:
            table[col] = [r["lesions"][col] for r in rows]
        columns += LESION_COLUMNS
    path.write_text(table[columns].to_csv(sep="\t", index=False, float_format="%.4f"))
