"""Reader for the built-in simulated cohort (`dallebrain data simulate`): BIDS plus ground truth.

One record per scan: a longitudinal subject gives one per session (subject_id '0001_ses-02', the participant
and session in `extra`, so `prepare` keeps a subject's sessions together); a lesion cohort adds each scan's
lesion mask and findings."""

from __future__ import annotations

import json
from pathlib import Path

from dallebrain.data.simulate import RECORD_SUFFIX
from dallebrain.data.sources.base import SubjectRecord
from dallebrain.data.templates import ATLAS_NAME
from dallebrain.vocab import MODALITIES

VOLUME_FIELDS = ("icv_ml", "gm_ml", "wm_ml", "csf_ml", "lateral_ventricles_ml", "nwbv")
LESION_FIELDS = ("healthy", "lesion_type", "findings")


def _scan(sim: dict, cohort: Path, anat: Path, stem: str, record_id: str, participant: str) -> SubjectRecord:
    images = {m: p for m in MODALITIES if (p := anat / f"{stem}_{m}.nii.gz").exists()}
    extra = {"atlas_seg": str(anat / f"{stem}_atlas-{ATLAS_NAME}_dseg.nii.gz"), "participant": participant,
             **{k: sim[k] for k in VOLUME_FIELDS}}
    if "session_id" in sim:
        extra |= {"session_id": sim["session_id"], "years_from_baseline": sim["years_from_baseline"]}
    if "lesions" in sim:
        extra |= {k: sim["lesions"][k] for k in LESION_FIELDS}
        extra["lesion_mask"] = str(cohort / sim["lesions"]["lesion_mask"])
    return SubjectRecord(
        subject_id=record_id, source="simulated", images=images, age=sim["age"], sex=sim["sex"],
        field_strength=sim["field_strength"], site="simulated", tissue_seg=anat / f"{stem}_dseg.nii.gz",
        to_mni=sim["to_mni"], extra=extra, problems=[] if images else ["no image found"])


def find_subjects(input_dir: Path, demographics: Path | None = None) -> list[SubjectRecord]:
    """One record per finished simulated scan; the known native<-MNI transform replaces registration."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise ValueError(f"simulated cohort folder not found: {input_dir}")
    records = []
    for record_path in sorted(input_dir.glob(f"sub-*/sub-*{RECORD_SUFFIX}")):
        sim = json.loads(record_path.read_text())
        sid = sim["participant_id"].removeprefix("sub-")
        if "sessions" not in sim:
            records.append(_scan(sim, input_dir, record_path.parent / "anat", f"sub-{sid}", sid, sid))
            continue
        for session in sim["sessions"]:
            folder = record_path.parent / session
            scan = json.loads((folder / f"sub-{sid}_{session}{RECORD_SUFFIX}").read_text())
            records.append(_scan(scan, input_dir, folder / "anat", f"sub-{sid}_{session}", f"{sid}_{session}", sid))
    if not records:
        raise ValueError(f"no simulated subject in {input_dir}: run 'dallebrain data simulate' first")
    return records
