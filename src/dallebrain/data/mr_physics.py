"""MR signal equations and tissue parameters used to simulate contrasts from tissue fractions.

Sources (../shared/DATA.md): BrainWeb 1.5 T tissue values and literature 3 T values; BrainWeb's CSF T2
(329 ms) is unrealistically short and would make CSF grey on T2-weighted images, so CSF T2 uses 2000 ms
at 1.5 T (the 3 T literature value is 2400 ms). At 3 T, grey/white T2 are Stanisz et al. 2005 (99 / 69 ms):
the 70 / 60 ms quoted in DATA.md leave 3 T FLAIR with white matter as bright as grey, which it is not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

# (T1 ms, T2 ms, proton density) per tissue and field strength.
TISSUE_PARAMETERS = {
    1.5: {"csf": (2569.0, 2000.0, 1.00), "gm": (833.0, 83.0, 0.86), "wm": (500.0, 70.0, 0.77)},
    3.0: {"csf": (4270.0, 2400.0, 1.00), "gm": (1400.0, 99.0, 0.86), "wm": (825.0, 69.0, 0.77)},
}
TISSUES = ("csf", "gm", "wm")
CONTRAST_NAMES = {"t1": "T1w", "t2": "T2w", "pd": "PDw", "flair": "FLAIR"}


@dataclass(frozen=True)
class Sequence:
    """One acquisition's parameters (ms, degrees); `kind` picks the signal equation."""

    modality: str  # BIDS suffix: T1w, T2w, PDw, FLAIR
    kind: str  # "mprage" (inversion-prepared), "spgr" (spoiled gradient echo), "se" (spin echo / TSE), "ir"
    tr: float
    te: float
    ti: float | None = None
    flip_deg: float | None = None

    def bids_sidecar(self, field_strength: float) -> dict:
        """The sequence as BIDS JSON sidecar fields (seconds, degrees)."""
        side = {"MagneticFieldStrength": field_strength, "RepetitionTime": self.tr / 1000,
                "EchoTime": self.te / 1000, "PulseSequenceType": self.kind.upper()}
        if self.ti is not None:
            side["InversionTime"] = self.ti / 1000
        if self.flip_deg is not None:
            side["FlipAngle"] = self.flip_deg
        return side

    def to_dict(self) -> dict:
        return asdict(self)


def tissue_signal(seq: Sequence, t1: float, t2: float, pd: float) -> float:
    """Steady-state signal of one tissue for a sequence."""
    e1 = math.exp(-seq.tr / t1)
    t2_decay = math.exp(-seq.te / t2)
    if seq.kind == "se":  # S = PD (1 - exp(-TR/T1)) exp(-TE/T2)
        return pd * (1 - e1) * t2_decay
    if seq.kind == "spgr":  # S = PD sin a (1 - E1) / (1 - cos a E1) exp(-TE/T2*), T2* ~ T2 here
        a = math.radians(seq.flip_deg or 20.0)
        return pd * math.sin(a) * (1 - e1) / (1 - math.cos(a) * e1) * t2_decay
    if seq.kind in ("ir", "mprage"):  # S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)
        return pd * abs(1 - 2 * math.exp(-seq.ti / t1) + e1) * t2_decay
    raise ValueError(f"unknown sequence kind {seq.kind!r}")


def csf_null_ti(tr: float, t1_csf: float) -> float:
    """Inversion time that nulls CSF for a given TR: 1 - 2 exp(-TI/T1) + exp(-TR/T1) = 0."""
    return t1_csf * math.log(2 / (1 + math.exp(-tr / t1_csf)))


def draw_sequence(modality: str, field_strength: float, rng: np.random.Generator) -> Sequence:
    """Typical clinical parameters for one contrast, varied per subject (DATA.md ranges)."""
    u = rng.uniform
    if modality == "T1w":
        if rng.random() < 0.5:
            return Sequence("T1w", "mprage", tr=u(1900, 2500), te=u(2.5, 4.0), ti=u(800, 1100), flip_deg=9.0)
        return Sequence("T1w", "spgr", tr=u(10, 25), te=u(3, 5), flip_deg=u(15, 30))
    if modality == "T2w":
        return Sequence("T2w", "se", tr=u(4000, 6000), te=u(85, 120))
    if modality == "PDw":
        return Sequence("PDw", "se", tr=u(3000, 6000), te=u(8, 15))
    if modality == "FLAIR":
        tr = u(8000, 10000)
        t1_csf = TISSUE_PARAMETERS[field_strength]["csf"][0]
        return Sequence("FLAIR", "ir", tr=tr, te=u(90, 140), ti=csf_null_ti(tr, t1_csf))
    raise ValueError(f"unknown modality {modality!r}")


def tissue_signals(seq: Sequence, field_strength: float, jitter: dict[str, float] | None = None) -> dict:
    """Signal per tissue; `jitter` scales each tissue's T1 (individual relaxation differences)."""
    out = {}
    for tissue in TISSUES:
        t1, t2, pd = TISSUE_PARAMETERS[field_strength][tissue]
        out[tissue] = tissue_signal(seq, t1 * (jitter or {}).get(tissue, 1.0), t2, pd)
    return out
