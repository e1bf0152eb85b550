"""The built-in simulated healthy cohort: BIDS-like MRI of individual, aged brains, offline.

Each subject: an age (18-90) and sex, an anatomy (`anatomy.make_anatomy`), a field strength and per-subject
sequence parameters, contrasts from the MR signal equations (`mr_physics`), a smooth bias field of random
strength and Rician noise. Images are skull-stripped (like the template they come from) and written in the
subject's native space, whose axes are MNI's; the exact native <- MNI transform is kept in the subject's
simulation record so registration can be checked against the truth and `prepare` can use it.
"""

from __future__ import annotations

import json
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dallebrain.data.anatomy import AgeingModel, Anatomy, make_anatomy
from dallebrain.data.grid import VolumeGrid
from dallebrain.data.io import write_json_atomic, write_text_atomic
from dallebrain.data.mr_physics import CONTRAST_NAMES, Sequence, draw_sequence, tissue_signals
from dallebrain.data.templates import ATLAS_LICENCE, ATLAS_NAME, TEMPLATE_LICENCE

# Native field of view: the MNI152 box at 1.5 mm, large enough for any head the model draws.
SIMULATION_GRID = VolumeGrid((128, 152, 128), 1.5, (-96.0, -132.0, -78.0))
AGE_RANGE = (18.0, 90.0)
RECORD_SUFFIX = "_simulation.json"


@dataclass(frozen=True)
class SimulationOptions:
    """What `dallebrain data simulate` asks for."""

    subjects: int
    seed: int = 0
    contrasts: tuple[str, ...] = ("T1w", "T2w", "PDw", "FLAIR")
    grid: VolumeGrid = SIMULATION_GRID


def parse_contrasts(text: str) -> tuple[str, ...]:
    """'t1,t2,pd,flair' -> ('T1w', 'T2w', 'PDw', 'FLAIR'); ValueError names an unknown one."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in CONTRAST_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown contrast(s) {unknown or text!r}: choose from {','.join(CONTRAST_NAMES)}")
    return tuple(dict.fromkeys(CONTRAST_NAMES[n] for n in names))


def subject_id(index: int) -> str:
    return f"{index + 1:04d}"


def synthesize(anatomy: Anatomy, seq: Sequence, field_strength: float, rng: np.random.Generator,
               bias_strength: float, noise_fraction: float, bias_field: np.ndarray) -> np.ndarray:
    """Partial-volume signal, times the bias field, with Rician noise, skull-stripped; float32."""
    jitter = {t: float(rng.normal(1, 0.03)) for t in ("csf", "gm", "wm")}
    s = tissue_signals(seq, field_strength, jitter)
    signal = s["csf"] * anatomy.csf + s["gm"] * anatomy.gm + s["wm"] * anatomy.wm
    signal *= 1 + bias_strength * bias_field
    # Rician noise: magnitude of the complex signal with Gaussian noise on both channels.
    sigma = noise_fraction * max(s.values())
    noisy = np.hypot(signal + rng.normal(0, sigma, signal.shape), rng.normal(0, sigma, signal.shape))
    noisy[anatomy.intracranial < 0.5] = 0.0
    return noisy.astype(np.float32)


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Smooth field in [-0.5, 0.5] (a bias field shape: low spatial frequency only)."""
    from scipy import ndimage

    coarse = ndimage.gaussian_filter(rng.standard_normal((6, 6, 6)), 1.0)
    field = ndimage.zoom(coarse, [n / 6 for n in shape], order=3)[: shape[0], : shape[1], : shape[2]]
    field -= field.min()
    return (field / max(float(field.max()), 1e-6) - 0.5).astype(np.float32)


def simulate_subject(index: int, out_dir: Path, options: SimulationOptions,
                     model: AgeingModel = AgeingModel()) -> dict:
    """Simulate one subject into out_dir/sub-XXXX (written in a temporary folder, then renamed)."""
    import nibabel as nib

    sid = subject_id(index)
    final = out_dir / f"sub-{sid}"
    record_path = final / f"sub-{sid}{RECORD_SUFFIX}"
    if record_path.exists():
        return json.loads(record_path.read_text())
    rng = np.random.default_rng([options.seed, index])  # per subject: independent of workers and resumes
    age = float(np.round(rng.uniform(*AGE_RANGE), 1))
    sex = "F" if rng.random() < 0.5 else "M"
    field_strength = 1.5 if rng.random() < 0.5 else 3.0
    anatomy, targets = make_anatomy(options.grid, age, sex, rng, model)

    tmp = out_dir / f".tmp-sub-{sid}-{uuid.uuid4().hex[:8]}"
    anat = tmp / "anat"
    anat.mkdir(parents=True)
    affine = options.grid.affine
    bias_strength = float(rng.uniform(0.0, 0.4))  # peak-to-peak: 0-40 % (DATA.md)
    bias_field = _smooth_field(options.grid.shape, rng)
    sequences = {}
    for modality in options.contrasts:
        seq = draw_sequence(modality, field_strength, rng)
        noise = float(rng.uniform(0.01, 0.04))
        image = synthesize(anatomy, seq, field_strength, rng, bias_strength, noise, bias_field)
        # Stored as scanner-like integers: 12-bit range, brightest tissue near 3000.
        scale = 3000.0 / max(float(np.percentile(image[image > 0], 99.5)), 1e-6)
        data = np.clip(np.round(image * scale), 0, 65535).astype(np.uint16)
        nib.save(nib.Nifti1Image(data, affine), anat / f"sub-{sid}_{modality}.nii.gz")
        sidecar = seq.bids_sidecar(field_strength) | {"NoiseSigmaFraction": noise}
        (anat / f"sub-{sid}_{modality}.json").write_text(json.dumps(sidecar, indent=2))
        sequences[modality] = seq.to_dict() | {"noise_fraction": noise}
    nib.save(nib.Nifti1Image(anatomy.tissue_labels(), affine), anat / f"sub-{sid}_dseg.nii.gz")
    nib.save(nib.Nifti1Image(anatomy.labels, affine), anat / f"sub-{sid}_atlas-{ATLAS_NAME}_dseg.nii.gz")
    record = {"participant_id": f"sub-{sid}", "age": age, "sex": sex, "field_strength": field_strength,
              "t1w_sequence": sequences.get("T1w", {}).get("kind"), **anatomy.volumes_ml(),
              "targets": targets, "to_mni": anatomy.to_mni.tolist(), "bias_strength": bias_strength,
              "sequences": sequences, "seed": options.seed, "index": index}
    (tmp / f"sub-{sid}{RECORD_SUFFIX}").write_text(json.dumps(record, indent=2, default=float))
    if final.exists():  # an earlier run died after writing images but before its record: redo it
        shutil.rmtree(final)
    tmp.rename(final)
    return record


PARTICIPANT_COLUMNS = ["participant_id", "age", "sex", "field_strength", "t1w_sequence", "icv_ml", "gm_ml",
                       "wm_ml", "csf_ml", "lateral_ventricles_ml", "nwbv"]


def simulate_cohort(out_dir: str | Path, options: SimulationOptions, workers: int = 1,
                    progress: bool = True):
    """Simulate (or finish simulating) a cohort; returns the participants table (pandas)."""
    import pandas as pd
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
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
    table = pd.DataFrame(records)[PARTICIPANT_COLUMNS].sort_values("participant_id")
    write_text_atomic(out_dir / "participants.tsv", table.to_csv(sep="\t", index=False, float_format="%.4f"))
    write_json_atomic(out_dir / "dataset_description.json", {
        "Name": "Dall-e Brain simulated healthy cohort", "BIDSVersion": "1.9.0", "DatasetType": "raw",
        "GeneratedBy": [{"Name": "dallebrain", "Description": "dallebrain data simulate"}],
        "License": "Derived from the MNI152 2009a template and the Neuromorphometrics atlas: see README",
        "SimulationSeed": options.seed, "Subjects": options.subjects})
    write_text_atomic(out_dir / "README", _cohort_readme(options))
    return table.reset_index(drop=True)


def _cohort_readme(options: SimulationOptions) -> str:
    return f"""Dall-e Brain simulated healthy cohort
=====================================
{options.subjects} simulated subjects (seed {options.seed}), contrasts {', '.join(options.contrasts)},
{options.grid.spacing_mm} mm isotropic, skull-stripped, native space with MNI-aligned axes.
Volumes in participants.tsv are measured on the simulated tissue maps; the targets asked for, the
sequence parameters and the exact native<-MNI transform are in each sub-*/sub-*{RECORD_SUFFIX}.

Licences of the sources:
- {TEMPLATE_LICENCE}
- {ATLAS_LICENCE}
"""
