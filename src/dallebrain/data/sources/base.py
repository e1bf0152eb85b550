"""What every cohort reader hands to `prepare`: one record per subject, nothing source-specific."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SubjectRecord:
    """One subject of a cohort as found on disk, before any image is read.

    Args:
        subject_id: identifier unique within the source, safe as a file name (e.g. "IXI002", "OAS1_0001").
        source: reader that produced it: "simulated", "bids", "ixi", "oasis1" or "hcp".
        images: modality ("T1w", "T2w", "PDw", "FLAIR") -> image file (NIfTI, or Analyze .hdr/.img).
        age: years, None when the source does not say (never invented).
        sex: "F" or "M", None when unknown.
        field_strength: tesla (1.5, 3.0), None when unknown.
        site: acquisition site or scanner, when the source records it.
        tissue_seg: the source's own tissue/structure segmentation, when it ships one.
        in_mni: True when the images are already registered to an MNI-like atlas space (registration is
            then lightened to a check, not redone).
        to_mni: known 4x4 world(native mm) <- world(MNI mm) transform, e.g. the ground truth of a simulated
            subject; None means "estimate it by registration".
        extra: other demographics kept for the metadata table (age range text, CDR, MMSE, eTIV, ...).
        problems: demographic problems met while reading (missing or conflicting rows); a record with
            problems is still returned so that `prepare` can list it in the failures table.
    """

    subject_id: str
    source: str
    images: dict[str, Path]
    age: float | None = None
    sex: str | None = None
    field_strength: float | None = None
    site: str | None = None
    tissue_seg: Path | None = None
    in_mni: bool = False
    to_mni: list[list[float]] | None = None
    extra: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
