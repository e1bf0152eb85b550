"""Reader for the built-in simulated cohort (`dallebrain data simulate`): BIDS plus ground truth."""

from __future__ import annotations

import json
from pathlib import Path

from dallebrain.data.simulate import RECORD_SUFFIX
from dallebrain.data.sources.base import MODALITIES, SubjectRecord
from dallebrain.data.templates import ATLAS_NAME

VOLUME_FIELDS = ("icv_ml", "gm_ml", "wm_ml", "csf_ml", "lateral_ventricles_ml", "nwbv")


def find_subjects(input_dir: Path, demographics: Path | None = None) -> list[SubjectRecord]:
    """One record per finished simulated subject; the known native<-MNI transform replaces registration."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise ValueError(f"simulated cohort folder not found: {input_dir}")
    records = []
    for record_path in sorted(input_dir.glob(f"sub-*/sub-*{RECORD_SUFFIX}")):
        sim = json.loads(record_path.read_text())
        sid = sim["participant_id"].removeprefix("sub-")
        anat = record_path.parent / "anat"
        images = {m: p for m in MODALITIES if (p := anat / f"sub-{sid}_{m}.nii.gz").exists()}
        problems = [] if images else ["no image found"]
        records.append(SubjectRecord(
            subject_id=sid, source="simulated", images=images, age=sim["age"], sex=sim["sex"],
            field_strength=sim["field_strength"], site="simulated", tissue_seg=anat / f"sub-{sid}_dseg.nii.gz",
            to_mni=sim["to_mni"],
            extra={"atlas_seg": str(anat / f"sub-{sid}_atlas-{ATLAS_NAME}_dseg.nii.gz"),
                   **{k: sim[k] for k in VOLUME_FIELDS}},
            problems=problems))
    if not records:
        raise ValueError(f"no simulated subject in {input_dir}: run 'dallebrain data simulate' first")
    return records
