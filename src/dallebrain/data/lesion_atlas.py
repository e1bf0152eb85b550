"""Where lesions go: lobes, arterial territories and distances on the template, computed once per grid.

Lobes and territories come from the Neuromorphometrics labels (a label -> lobe / territory table made by
hand here); every brain voxel takes the lobe and territory of its nearest labelled grey-matter structure,
so the white matter under a gyrus belongs to the gyrus's lobe and territory.

Territories: Tatu L, Moulin T, Bogousslavsky J, Duvernoy H. Arterial territories of the human brain:
cerebral hemispheres. Neurology 1998;50:1699-1708. The anterior cerebral artery supplies the medial frontal
and parietal cortex (to the precuneus); the posterior cerebral artery the occipital lobe, the inferomedial
temporal lobe and the thalamus; the middle cerebral artery the lateral convexity, insula and (through the
lenticulostriate arteries) the striatum. [check] The label-by-label assignment is a simplification of their
maps: border-zone gyri are given to one side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from dallebrain.data.grid import VolumeGrid
from dallebrain.data.templates import (
    LATERAL_VENTRICLE_LABELS,
    atlas_label_names,
    atlas_labels,
    label_ids,
    tissue_priors,
)

LOBES = ("frontal lobe", "parietal lobe", "temporal lobe", "occipital lobe", "insula", "basal ganglia",
         "thalamus", "cerebellum", "brainstem")
TERRITORIES = ("anterior cerebral artery", "middle cerebral artery", "posterior cerebral artery")

# Label stem (side and code words removed from the atlas name) -> lobe.
_LOBE_OF = {
    **dict.fromkeys(("ACgG", "AOrG", "FO", "FRP", "GRe", "LOrG", "MCgG", "MFC", "MFG", "MOrG", "MPrG", "MSFG",
                     "OpIFG", "OrIFG", "POrG", "PrG", "SCA", "SFG", "SMC", "TrIFG"), "frontal lobe"),
    **dict.fromkeys(("AnG", "MPoG", "PCgG", "PCu", "PO", "PoG", "SMG", "SPL"), "parietal lobe"),
    **dict.fromkeys(("Ent", "FuG", "ITG", "MTG", "PHG", "PP", "PT", "STG", "TMP", "TTG", "Hippocampus",
                     "Amygdala"), "temporal lobe"),
    **dict.fromkeys(("Calc", "Cun", "IOG", "LiG", "MOG", "OCP", "OFuG", "SOG"), "occipital lobe"),
    **dict.fromkeys(("AIns", "PIns", "CO"), "insula"),
    **dict.fromkeys(("Caudate", "Putamen", "Pallidum", "Accumbens_Area"), "basal ganglia"),
    "Thalamus_Proper": "thalamus",
    **dict.fromkeys(("Cerebellum_Exterior", "Cerebellar_Vermal_Lobules_I-V", "Cerebellar_Vermal_Lobules_VI-VII",
                     "Cerebellar_Vermal_Lobules_VIII-X"), "cerebellum"),
    "Brain_Stem": "brainstem",
}
_TERRITORY_OF = {
    **dict.fromkeys(("MSFG", "MFC", "ACgG", "MCgG", "SCA", "GRe", "MPrG", "MPoG", "SMC", "PCu", "SFG", "FRP"),
                    "anterior cerebral artery"),
    **dict.fromkeys(("Calc", "Cun", "LiG", "OCP", "OFuG", "FuG", "PHG", "Ent", "Hippocampus", "Thalamus_Proper",
                     "PCgG", "SOG"), "posterior cerebral artery"),
    **dict.fromkeys(("MFG", "OpIFG", "TrIFG", "OrIFG", "LOrG", "AOrG", "POrG", "MOrG", "FO", "CO", "PO", "PrG",
                     "PoG", "SMG", "AnG", "SPL", "STG", "MTG", "ITG", "TTG", "PT", "PP", "TMP", "AIns", "PIns",
                     "MOG", "IOG", "Putamen", "Caudate", "Pallidum", "Amygdala"), "middle cerebral artery"),
}


def _stem(name: str) -> str:
    name = re.sub(r"^(?:Left|Right)[_ ]", "", name.strip())
    return name.split("_")[0] if re.match(r"[A-Z][A-Za-z]*_[a-z]", name) else name


@dataclass(frozen=True)
class LesionAtlas:
    """Template-space maps lesions are placed with (one grid)."""

    brain: np.ndarray  # bool: intracranial and mostly tissue
    lobe: np.ndarray  # int8: index into LOBES + 1 (0: none)
    territory: np.ndarray  # int8: index into TERRITORIES + 1 (0: none)
    left: np.ndarray  # bool: left hemisphere (MNI x < 0)
    cortex_mm: np.ndarray  # float32: distance to the nearest grey-matter-dominant voxel
    edge_mm: np.ndarray  # float32: distance to the outside of the brain
    ventricle_mm: np.ndarray  # float32: distance to the lateral ventricles (of the young template)


def _lookup(names: dict[int, str], table: dict[str, str], order: tuple[str, ...]) -> np.ndarray:
    out = np.zeros(max(names) + 1, np.int8)
    for i, name in names.items():
        kind = table.get(_stem(name))
        if kind is not None:
            out[i] = order.index(kind) + 1
    return out


@lru_cache(maxsize=2)
def lesion_atlas(grid: VolumeGrid) -> LesionAtlas:
    priors, labels = tissue_priors(grid), atlas_labels(grid)
    names = atlas_label_names()
    lobe_of, territory_of = _lookup(names, _LOBE_OF, LOBES), _lookup(names, _TERRITORY_OF, TERRITORIES)
    safe = np.clip(labels, 0, len(lobe_of) - 1)
    brain = (priors.gm + priors.wm > 0.5) & (priors.intracranial > 0.5)
    # Nearest labelled grey-matter structure of every voxel: its lobe and territory.
    named = (lobe_of[safe] > 0) | (territory_of[safe] > 0)
    _, nearest = ndimage.distance_transform_edt(~named, return_indices=True)
    nearest_label = safe[tuple(nearest)]
    del nearest
    x_mm = grid.origin_mm[0] + grid.spacing_mm * np.arange(grid.shape[0])
    mm = grid.spacing_mm
    cortex = (priors.gm > priors.wm) & (priors.gm > 0.3)
    return LesionAtlas(
        brain=brain, lobe=np.where(brain, lobe_of[nearest_label], 0).astype(np.int8),
        territory=np.where(brain, territory_of[nearest_label], 0).astype(np.int8),
        left=np.broadcast_to((x_mm < 0)[:, None, None], grid.shape),
        cortex_mm=(ndimage.distance_transform_edt(~cortex) * mm).astype(np.float32),
        edge_mm=(ndimage.distance_transform_edt(priors.intracranial > 0.5) * mm).astype(np.float32),
        ventricle_mm=(ndimage.distance_transform_edt(~np.isin(labels, label_ids(*LATERAL_VENTRICLE_LABELS)))
                      * mm).astype(np.float32),
    )


def describe_place(atlas: LesionAtlas, voxel: tuple[int, int, int]) -> str:
    """'left frontal lobe' for a voxel (side by MNI x)."""
    lobe = int(atlas.lobe[voxel])
    side = "left" if atlas.left[voxel] else "right"
    return f"{side} {LOBES[lobe - 1]}" if lobe else f"{side} cerebral white matter"
