"""One simulated scan: the options of a simulation, the scanner and sequence drawn for it, the rendered
contrasts written as BIDS files with their record, and a lesion mask. Shared by the cross-sectional writer
(simulate.py) and the longitudinal one (simulate_sessions.py), which import it; it imports neither."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dallebrain.data.anatomy import Anatomy
from dallebrain.data.grid import VolumeGrid
from dallebrain.data.io import write_json_atomic
from dallebrain.data.lesion_plans import lesion_summary
from dallebrain.data.lesions import LESION_TYPES, lesion_parameters
from dallebrain.data.longitudinal import SESSION_SCANNER
from dallebrain.data.mr_physics import CONTRAST_NAMES, TISSUES, Sequence, tissue_signal, tissue_signals
from dallebrain.data.templates import ATLAS_NAME

# Native field of view: the MNI152 box at 1.5 mm, large enough for any head the model draws.
SIMULATION_GRID = VolumeGrid((128, 152, 128), 1.5, (-96.0, -132.0, -78.0))
AGE_RANGE = (18.0, 90.0)
RECORD_SUFFIX = "_simulation.json"
LESION_DERIVATIVES = Path("derivatives") / "lesions"
LESION_STREAM, SESSION_STREAM = 1, 2  # extra random streams per subject: [seed, index, stream]


@dataclass(frozen=True)
class SimulationOptions:
    """What `dallebrain data simulate` asks for."""

    subjects: int
    seed: int = 0
    contrasts: tuple[str, ...] = ("T1w", "T2w", "PDw", "FLAIR")
    grid: VolumeGrid = SIMULATION_GRID
    timepoints: tuple[float, ...] = ()  # years after baseline; empty: one scan per subject, no sessions
    session_scanner: str = "keep"  # later sessions keep the scanner and protocol, or redraw them
    lesions: tuple[str, ...] = ()  # lesion types drawn from; empty: a healthy cohort
    lesion_fraction: float = 0.0  # share of subjects drawn with a lesion

    def __post_init__(self) -> None:
        if self.session_scanner not in SESSION_SCANNER:
            raise ValueError(f"session scanner must be one of {', '.join(SESSION_SCANNER)}, "
                             f"got {self.session_scanner!r}")
        if not 0.0 <= self.lesion_fraction <= 1.0:
            raise ValueError(f"lesion fraction must be between 0 and 1, got {self.lesion_fraction}")
        if any(t not in LESION_TYPES for t in self.lesions):
            raise ValueError(f"unknown lesion type in {self.lesions}: choose from {', '.join(LESION_TYPES)}")


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
    jitter = {t: float(rng.normal(1, 0.03)) for t in TISSUES}
    s = tissue_signals(seq, field_strength, jitter)
    signal = s["csf"] * anatomy.csf + s["gm"] * anatomy.gm + s["wm"] * anatomy.wm
    if anatomy.lesions is not None:  # lesion tissue draws no random numbers: noise stays the healthy scan's
        region = signal[anatomy.lesions.box]
        for name, fraction in anatomy.lesions.tissues.items():
            region += tissue_signal(seq, *lesion_parameters(name, field_strength)) * fraction
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


@dataclass
class Scanner:
    """One visit's scanner: field strength, protocol per contrast, bias strength, noise per contrast."""

    field_strength: float
    sequences: dict[str, Sequence]
    bias_strength: float
    noise: dict[str, float]


def write_scan(anat: Path, stem: str, anatomy: Anatomy, field_strength: float, contrasts: tuple[str, ...],
               rng: np.random.Generator, grid: VolumeGrid, kept: Scanner | None = None) -> Scanner:
    """Images, sidecars and segmentations of one scan into `anat`; `kept` reuses a scanner (draws no
    protocol). Returns the scanner used."""
    import nibabel as nib

    from dallebrain.data.mr_physics import draw_sequence

    affine = grid.affine
    bias_strength = kept.bias_strength if kept else float(rng.uniform(0.0, 0.4))  # peak-to-peak 0-40 % (DATA.md)
    bias_field = _smooth_field(grid.shape, rng)
    scanner = Scanner(field_strength, {}, bias_strength, {})
    for modality in contrasts:
        seq = kept.sequences[modality] if kept else draw_sequence(modality, field_strength, rng)
        noise = kept.noise[modality] if kept else float(rng.uniform(0.01, 0.04))
        image = synthesize(anatomy, seq, field_strength, rng, bias_strength, noise, bias_field)
        # Stored as scanner-like integers: 12-bit range, brightest tissue near 3000.
        scale = 3000.0 / max(float(np.percentile(image[image > 0], 99.5)), 1e-6)
        data = np.clip(np.round(image * scale), 0, 65535).astype(np.uint16)
        nib.save(nib.Nifti1Image(data, affine), anat / f"{stem}_{modality}.nii.gz")
        sidecar = seq.bids_sidecar(field_strength) | {"NoiseSigmaFraction": noise}
        (anat / f"{stem}_{modality}.json").write_text(json.dumps(sidecar, indent=2))
        scanner.sequences[modality], scanner.noise[modality] = seq, noise
    nib.save(nib.Nifti1Image(anatomy.tissue_labels(), affine), anat / f"{stem}_dseg.nii.gz")
    nib.save(nib.Nifti1Image(anatomy.labels, affine), anat / f"{stem}_atlas-{ATLAS_NAME}_dseg.nii.gz")
    return scanner


def scan_record(anatomy: Anatomy, targets: dict, scanner: Scanner) -> dict:
    """The per-scan part of a simulation record (key order is the cohort's record format)."""
    sequences = {m: s.to_dict() | {"noise_fraction": scanner.noise[m]} for m, s in scanner.sequences.items()}
    return {"field_strength": scanner.field_strength,
            "t1w_sequence": sequences.get("T1w", {}).get("kind"), **anatomy.volumes_ml(),
            "targets": targets, "to_mni": anatomy.to_mni.tolist(), "bias_strength": scanner.bias_strength,
            "sequences": sequences}


def lesion_mask_path(out_dir: Path, stem: str, session: str | None = None) -> Path:
    sub = stem.split("_")[0]
    folder = out_dir / LESION_DERIVATIVES / sub / (f"ses-{session}" if session else "") / "anat"
    return folder / f"{stem}_label-lesion_mask.nii.gz"


def write_lesion_mask(out_dir: Path, stem: str, anatomy: Anatomy, grid: VolumeGrid, plan,
                      session: str | None = None) -> dict:
    """The scan's lesion mask (BIDS derivative, label values per lesions.MASK_LABELS) and its table row."""
    import nibabel as nib

    from dallebrain.data.io import save_nifti_atomic
    from dallebrain.data.lesions import MASK_LABELS, full_mask

    mask = full_mask(grid.shape, anatomy.lesions, anatomy.lesion_mask)
    path = lesion_mask_path(out_dir, stem, session)
    save_nifti_atomic(nib.Nifti1Image(mask, grid.affine), path)
    write_json_atomic(path.with_name(path.name.replace(".nii.gz", ".json")),
                      {"Labels": {str(k): v for k, v in MASK_LABELS.items()}, "Sources": [f"bids::{stem}"]})
    return {**lesion_summary(plan, mask, anatomy.voxel_ml), "lesion_mask": str(path.relative_to(out_dir))}
