"""Published tissue contrast of brain MRI: the ratios the simulated contrasts are checked against.

A ratio is mean signal of one tissue over another in regions of nearly pure tissue (cortex or deep grey
matter, frontal white matter, ventricular CSF), as region-of-interest studies measure them. Each range
spans the values reported, or implied by the reported relaxation times at the reported protocols, in:

- [Lu2005] Lu H, Nagae-Poetscher LM, Golay X, Lin D, Pomper M, van Zijl PCM. Routine clinical brain MRI
  sequences for use at 3.0 Tesla. J Magn Reson Imaging 2005;22:13-22 (GM, WM, CSF relaxation at 1.5 and
  3 T; grey/white contrast of T1w, T2w, PDw and FLAIR at both fields).
- [Wattjes2006] Wattjes MP et al. FLAIR imaging for multiple sclerosis: a comparative MR study at 1.5 and
  3.0 Tesla. Eur Radiol 2006;16:915-921 (GM, WM and CSF signal on FLAIR at both fields, TE 100-140 ms).
- [Deichmann2000] Deichmann R et al. Optimization of 3-D MP-RAGE sequences for structural brain imaging.
  NeuroImage 2000;12:112-127 (MPRAGE grey/white contrast against TI and flip angle).
- [Salat2009] Salat DH et al. Age-associated alterations in cortical gray and white matter signal intensity
  and gray to white matter contrast. NeuroImage 2009;48:21-28 (T1w grey/white contrast, 1.5 T MPRAGE).
- [Stanisz2005] Stanisz GJ et al. T1, T2 relaxation and magnetization transfer in tissue at 3T. Magn Reson
  Med 2005;54:507-512 (GM/WM T1 and T2 at 1.5 and 3 T), and [Wansapura1999] Wansapura JP et al. NMR
  relaxation times in the human brain at 3.0 tesla. J Magn Reson Imaging 1999;9:531-538 (spoiled-gradient-
  echo ratios computed from these T1s at TR 10-25 ms, flip 15-30 deg).
- [Neeb2006] Neeb H, Zilles K, Shah NJ. A new method for fast quantitative mapping of absolute water content
  in vivo. NeuroImage 2006;31:1156-1168 (GM/WM water content about 0.80 / 0.69: the floor of PDw GM/WM).

[check] The ranges were set from these sources as recalled offline (no copy of the papers is available
here): confirm the bounds against the tables before tightening them. They are deliberately as wide as the
spread between studies; what they must catch is a contrast that is the wrong way round or far off, e.g.
white matter brighter than grey on FLAIR.
"""

from __future__ import annotations

RATIOS = ("gm/wm", "csf/gm", "csf/wm")

# (sequence kind, field strength T) -> ratio -> (low, high). T1w comes as MPRAGE or SPGR; field strength
# changes the contrast of each through T1, so both fields are listed even where the bounds agree.
# MPRAGE: Deichmann2000, Salat2009 (1.5 T), Lu2005 (3 T). SPGR: computed from Stanisz2005 and
# Wansapura1999. T2w and PDw: Lu2005, Stanisz2005, Neeb2006 (PDw CSF: a TR of 3 s recovers only half of
# the 4.3 s T1 of CSF, so CSF/GM reaches down to about 0.6). FLAIR: Wattjes2006, Lu2005.
PUBLISHED_RATIOS: dict[tuple[str, float], dict[str, tuple[float, float]]] = {
    ("mprage", 1.5): {"gm/wm": (0.55, 0.82), "csf/gm": (0.00, 0.55), "csf/wm": (0.00, 0.40)},
    ("mprage", 3.0): {"gm/wm": (0.55, 0.82), "csf/gm": (0.00, 0.55), "csf/wm": (0.00, 0.40)},
    ("spgr", 1.5): {"gm/wm": (0.65, 0.90), "csf/gm": (0.20, 0.70), "csf/wm": (0.15, 0.60)},
    ("spgr", 3.0): {"gm/wm": (0.65, 0.90), "csf/gm": (0.20, 0.70), "csf/wm": (0.15, 0.60)},
    ("T2w", 1.5): {"gm/wm": (1.20, 1.90), "csf/gm": (1.50, 4.50), "csf/wm": (2.00, 6.50)},
    ("T2w", 3.0): {"gm/wm": (1.20, 1.90), "csf/gm": (1.50, 4.50), "csf/wm": (2.00, 6.50)},
    ("PDw", 1.5): {"gm/wm": (1.03, 1.30), "csf/gm": (0.55, 1.35), "csf/wm": (0.60, 1.50)},
    ("PDw", 3.0): {"gm/wm": (1.03, 1.30), "csf/gm": (0.55, 1.35), "csf/wm": (0.60, 1.50)},
    ("FLAIR", 1.5): {"gm/wm": (1.10, 1.60), "csf/gm": (0.00, 0.30), "csf/wm": (0.00, 0.35)},
    ("FLAIR", 3.0): {"gm/wm": (1.10, 1.60), "csf/gm": (0.00, 0.30), "csf/wm": (0.00, 0.35)},
}


def contrast_key(modality: str, kind: str) -> str:
    """The row of PUBLISHED_RATIOS a sequence belongs to: T1w by its kind, the others by modality."""
    return kind if modality == "T1w" else modality


def tissue_ratios(means: dict[str, float]) -> dict[str, float]:
    """GM/WM, CSF/GM, CSF/WM of per-tissue mean signals."""
    return {"gm/wm": means["gm"] / means["wm"], "csf/gm": means["csf"] / means["gm"],
            "csf/wm": means["csf"] / means["wm"]}


def outside_published(key: tuple[str, float], ratios: dict[str, float]) -> dict[str, float]:
    """The ratios that fall outside the published range of `key` (empty when all are inside)."""
    ranges = PUBLISHED_RATIOS[key]
    return {r: v for r, v in ratios.items() if not ranges[r][0] <= v <= ranges[r][1]}
