"""Every simulated contrast against published tissue contrast ratios, at 1.5 T and 3 T (contrast_reference)."""

import numpy as np
import pytest

from dallebrain.data.anatomy import Anatomy
from dallebrain.data.contrast_reference import PUBLISHED_RATIOS, contrast_key, outside_published, tissue_ratios
from dallebrain.data.grid import VolumeGrid
from dallebrain.data.mr_physics import TISSUES, draw_sequence, tissue_signals
from dallebrain.data.simulate import synthesize
from dallebrain.data.templates import atlas_labels, tissue_priors

# The central 1.5 mm block of the brain (ventricles, deep grey matter, cortex): the cohort's voxel size,
# where partial volume is as in the cohort, at a quarter of its voxels.
CROP = VolumeGrid((80, 96, 64), 1.5, (-60.0, -90.0, -30.0))
CASES = sorted(PUBLISHED_RATIOS)
MODALITY = {"mprage": "T1w", "spgr": "T1w"}


@pytest.fixture(scope="module")
def template_brain() -> Anatomy:
    priors = tissue_priors(CROP)
    return Anatomy(priors.gm, priors.wm, priors.csf, atlas_labels(CROP), np.eye(4), CROP.spacing_mm ** 3 / 1000)


def _draws(key: str, field: float, n: int, seed: int = 0):
    """n sequences of one row of the table, drawn as the cohort draws them."""
    modality = MODALITY.get(key, key)
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        seq = draw_sequence(modality, field, rng)
        if contrast_key(modality, seq.kind) == key:
            out.append(seq)
    return out


def _render(anatomy: Anatomy, seq, field: float, seed: int) -> np.ndarray:
    flat = np.zeros(anatomy.gm.shape, np.float32)  # no bias field: ratios are measured locally in studies
    return synthesize(anatomy, seq, field, np.random.default_rng(seed), 0.0, 0.02, flat)


@pytest.mark.parametrize("key, field", CASES, ids=[f"{k}-{f:g}T" for k, f in CASES])
def test_contrast_ratios_within_published_range(template_brain, key, field):
    """Pure-tissue signals of 100 drawn protocols, and the rendered images of 4 of them (individual T1
    differences, noise and partial volume included) measured on voxels at least 80 % one tissue, all
    inside the published ranges."""
    for seq in _draws(key, field, 100):
        bad = outside_published((key, field), tissue_ratios(tissue_signals(seq, field)))
        assert not bad, (seq, bad)
    for i, seq in enumerate(_draws(key, field, 4, seed=2)):
        image = _render(template_brain, seq, field, seed=i)
        means = {t: float(np.median(image[getattr(template_brain, t) > 0.8])) for t in TISSUES}
        bad = outside_published((key, field), tissue_ratios(means))
        assert not bad, (seq, bad)


@pytest.mark.parametrize("field", [1.5, 3.0])
def test_flair_grey_brighter_than_white_over_tissue_labels(template_brain, field):
    """The measure that found the bug: means over the hard tissue labels (partial volume and all), where
    1.5 T FLAIR had white matter brighter than grey (GM 2410 vs WM 2520)."""
    labels = template_brain.tissue_labels()
    for i, seq in enumerate(_draws("FLAIR", field, 6, seed=3)):
        image = _render(template_brain, seq, field, seed=i)
        gm, wm = image[labels == 2].mean(), image[labels == 3].mean()
        assert gm > 1.02 * wm, (seq, gm, wm)
