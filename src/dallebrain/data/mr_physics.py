"""MR signal equations and tissue parameters used to simulate contrasts from tissue fractions.

Sources (../shared/DATA.md): BrainWeb 1.5 T grey/white values and literature 3 T values. BrainWeb's CSF is
too fast for water at body temperature (T1 2569, T2 329 ms): CSF T1 is about 4.3 s at either field (the 3 T
value in DATA.md) and T2 about 2 s. With the short T1 the CSF-nulling FLAIR inversion time came out at
1.7 s instead of the 2.2-2.5 s of clinical 1.5 T protocols, and that early inversion left grey matter,
whose T1 is longer, darker than white: a 1.5 T FLAIR with white matter brighter than grey, which no real
one has. At 3 T, grey/white T2 are Stanisz et al. 2005 (99 / 69 ms): the 70 / 60 ms quoted in DATA.md
leave 3 T FLAIR with white matter as bright as grey. The contrasts these give are checked against the
published ratios in `contrast_reference`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

# (T1 ms, T2 ms, proton density) per tissue and field strength.
TISSUE_PARAMETERS = {
    1.5: {"csf": (4270.0, 2000.0, 1.00), "gm": (833.0, 83.0, 0.86), "wm": (500.0, 70.0, 0.77)},
    3.0: {"csf": (4270.0, 2400.0, 1.00), "gm": (1400.0, 99.0, 0.86), "wm": (825.0, 69.0, 0.77)},
}
TISSUES = ("csf", "gm", "wm")
CONTRAST_NAMES = {"t1": "T1w", "t2": "T2w", "pd": "PDw", "flair": "FLAIR"}


@dataclass(frozen=True)
class Sequence:
    """One acquisition's parameters (ms, degrees); `kind` picks the signal equation."""

    modality: str  # BIDS suffix: T1w, T2w, PDw, FLAIR
    kind: str  # "mprage" (inversion-prepared), "spgr" (spoiled gradient echo), "se" (spin echo / TSE), "ir"
    tr: float  # for MPRAGE: the time between inversions
    te: float
    ti: float | None = None  # for MPRAGE: inversion to the centre of k-space
    flip_deg: float | None = None
    echo_spacing: float | None = None  # MPRAGE: time between the readout pulses of one train
    train_length: int | None = None  # MPRAGE: readout pulses per inversion (linear order, centre in the middle)

    def bids_sidecar(self, field_strength: float) -> dict:
        """The sequence as BIDS JSON sidecar fields (seconds, degrees)."""
        side = {"MagneticFieldStrength": field_strength, "RepetitionTime": self.tr / 1000,
                "EchoTime": self.te / 1000, "PulseSequenceType": self.kind.upper()}
        if self.ti is not None:
            side["InversionTime"] = self.ti / 1000
        if self.flip_deg is not None:
            side["FlipAngle"] = self.flip_deg
        if self.echo_spacing is not None:
            side["RepetitionTimeExcitation"] = self.echo_spacing / 1000
        return side

    def to_dict(self) -> dict:
        return asdict(self)


def mprage_longitudinal(seq: Sequence, t1: float) -> float:
    """Longitudinal magnetisation (M0 = 1) at the k-space centre of an MPRAGE in its steady state.

    Deichmann et al. 2000 (NeuroImage 12:112): inversion, a wait, a train of n small flips every
    echo_spacing, a recovery delay; the train saturates towards (1 - E) / (1 - cos(a) E). The bare
    inversion-recovery formula ignores that train and nulls grey matter at 3 T near TI 900 ms, which real
    MPRAGE images do not show."""
    a = math.radians(seq.flip_deg)
    n = seq.train_length
    e = math.exp(-seq.echo_spacing / t1)
    q = math.cos(a) * e
    m_ss = (1 - e) / (1 - q)
    wait = seq.ti - n / 2 * seq.echo_spacing
    delay = seq.tr - wait - n * seq.echo_spacing
    if wait <= 0 or delay <= 0:
        raise ValueError(f"MPRAGE timing impossible: TI {seq.ti:.0f} / TR {seq.tr:.0f} ms for {n} pulses")
    ea, ed, qn = math.exp(-wait / t1), math.exp(-delay / t1), q ** n
    # Steady state: m0 -> inversion -> wait -> train -> delay -> m0, linear in m0.
    m0 = (1 - ed + ed * (m_ss + (1 - ea - m_ss) * qn)) / (1 + ed * ea * qn)
    m_start = 1 - (1 + m0) * ea
    return m_ss + (m_start - m_ss) * q ** (n / 2)


def tissue_signal(seq: Sequence, t1: float, t2: float, pd: float) -> float:
    """Steady-state signal of one tissue for a sequence."""
    e1 = math.exp(-seq.tr / t1)
    t2_decay = math.exp(-seq.te / t2)
    if seq.kind == "se":  # S = PD (1 - exp(-TR/T1)) exp(-TE/T2)
        return pd * (1 - e1) * t2_decay
    if seq.kind == "spgr":  # S = PD sin a (1 - E1) / (1 - cos a E1) exp(-TE/T2*), T2* ~ T2 here
        a = math.radians(seq.flip_deg or 20.0)
        return pd * math.sin(a) * (1 - e1) / (1 - math.cos(a) * e1) * t2_decay
    if seq.kind == "mprage":  # magnitude image of the readout train's centre
        return pd * math.sin(math.radians(seq.flip_deg)) * abs(mprage_longitudinal(seq, t1)) * t2_decay
    if seq.kind == "ir":  # S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)
        return pd * abs(1 - 2 * math.exp(-seq.ti / t1) + e1) * t2_decay
    raise ValueError(f"unknown sequence kind {seq.kind!r}")


def csf_null_ti(tr: float, t1_csf: float) -> float:
    """Inversion time that nulls CSF for a given TR: 1 - 2 exp(-TI/T1) + exp(-TR/T1) = 0."""
    return t1_csf * math.log(2 / (1 + math.exp(-tr / t1_csf)))


# MPRAGE protocols as run clinically (ADNI 1.5 T: TR 2400, TI 1000, 8 deg; ADNI 3 T: TR 2300, TI 900, 9 deg;
# Deichmann 2000): TR is TI plus the train plus a recovery, 1.0-1.4 s after TI; 160-192 readout pulses. At 3 T
# a shorter TI or a smaller flip pushes grey matter towards its null, which clinical protocols avoid.
_MPRAGE = {1.5: {"ti": (850, 1100), "flip": (7, 12)}, 3.0: {"ti": (900, 1100), "flip": (8, 12)}}
# FLAIR echo times: Wattjes et al. 2006 (Eur Radiol 16:915) found TE 100-120 ms best at 3 T and 140 ms
# worse; clinical 1.5 T protocols use 100-140 ms. Below 100 ms grey matter loses its edge over white.
_FLAIR_TE = {1.5: (100, 140), 3.0: (105, 140)}


def draw_sequence(modality: str, field_strength: float, rng: np.random.Generator) -> Sequence:
    """Typical clinical parameters for one contrast, varied per subject (DATA.md ranges)."""
    u = rng.uniform
    if modality == "T1w":
        if rng.random() < 0.5:
            p = _MPRAGE[field_strength]
            ti = u(*p["ti"])
            return Sequence("T1w", "mprage", tr=ti + u(1000, 1400), te=u(2.5, 4.0), ti=ti, flip_deg=u(*p["flip"]),
                            echo_spacing=u(6.5, 8.5), train_length=int(rng.integers(160, 193)))
        return Sequence("T1w", "spgr", tr=u(10, 25), te=u(3, 5), flip_deg=u(15, 30))
    if modality == "T2w":
        return Sequence("T2w", "se", tr=u(4000, 6000), te=u(85, 120))
    if modality == "PDw":
        return Sequence("PDw", "se", tr=u(3000, 6000), te=u(8, 15))
    if modality == "FLAIR":
        tr = u(8000, 10000)
        t1_csf = TISSUE_PARAMETERS[field_strength]["csf"][0]
        return Sequence("FLAIR", "ir", tr=tr, te=u(*_FLAIR_TE[field_strength]), ti=csf_null_ti(tr, t1_csf))
    raise ValueError(f"unknown modality {modality!r}")


def tissue_signals(seq: Sequence, field_strength: float, jitter: dict[str, float] | None = None) -> dict:
    """Signal per tissue; `jitter` scales each tissue's T1 (individual relaxation differences)."""
    out = {}
    for tissue in TISSUES:
        t1, t2, pd = TISSUE_PARAMETERS[field_strength][tissue]
        out[tissue] = tissue_signal(seq, t1 * (jitter or {}).get(tissue, 1.0), t2, pd)
    return out
