"""The metadata table of a synthetic data set: `data prepare`'s columns (so training code and the evaluation read
it unchanged) plus how each slice was made. One fixed schema, so every batch's part file has the same types
and the parts can be merged as a stream."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from dallebrain.synthesize.plan import PlannedSlice, slice_landmark

# A generated slice has a black background: the brain is where it is brighter than this (of full scale).
BRAIN_THRESHOLD = 0.05
IDENTITY_TO_MNI = json.dumps(np.eye(4).tolist())  # generated in MNI space: native <- MNI is the identity
VOLUME_COLUMNS = ("icv_ml", "gm_ml", "wm_ml", "csf_ml", "lateral_ventricles_ml", "nwbv")

_S, _F, _I, _B = pa.string(), pa.float64(), pa.int64(), pa.bool_()
SCHEMA = pa.schema([
    ("subject_id", _S), ("source", _S), ("image_path", _S), ("label_path", _S), ("modality", _S), ("orientation", _S),
    ("slice_index", _I), ("slice_mm", _F), ("landmark", _S), ("brain_fraction", _F), ("structures", pa.list_(_S)),
    ("age", _F), ("sex", _S), ("field_strength", _F), ("site", _S),
    *((name, _F) for name in VOLUME_COLUMNS),
    ("volume_method", _S), ("to_mni", _S), ("split", _S), ("ventricles_z", _F), ("brain_volume_z", _F),
    ("captions", pa.list_(_S)), ("caption", _S),
    # how it was made
    ("synthetic", _B), ("seed", _I), ("prompt", _S), ("model_hash", _S), ("nifti_path", _S),
    # the judge's reading of the slice (null without --judge)
    ("judged_modality", _S), ("judged_orientation", _S), ("on_prompt", _B),
])


def slice_row(planned: PlannedSlice, image: np.ndarray, model_hash: str, nifti: bool,
              verdict: dict | None) -> dict:
    """One metadata row of a generated slice."""
    f = planned.facts
    return {
        "subject_id": planned.subject_id, "source": "synthetic", "image_path": planned.path(".png"),
        "label_path": None,  # no ground-truth tissue map for a generated slice (the tissue judge can read one)
        "modality": f.modality, "orientation": f.orientation, "slice_index": planned.slice_index,
        "slice_mm": f.slice_mm, "landmark": slice_landmark(planned),
        "brain_fraction": float((image > BRAIN_THRESHOLD).mean()), "structures": list(f.structures),
        "age": f.age, "sex": f.sex, "field_strength": f.field_strength, "site": None,
        **dict.fromkeys(VOLUME_COLUMNS), "volume_method": None, "to_mni": IDENTITY_TO_MNI,
        "split": planned.split, "ventricles_z": planned.ventricles_z, "brain_volume_z": planned.brain_volume_z,
        "captions": list(planned.captions), "caption": planned.prompt,
        "synthetic": True, "seed": planned.seed, "prompt": planned.prompt, "model_hash": model_hash,
        "nifti_path": planned.path(".nii.gz") if nifti else None,
        **(verdict or {"judged_modality": None, "judged_orientation": None, "on_prompt": None}),
    }


def rows_to_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)
