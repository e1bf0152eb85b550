"""The slice tissue judge: CSF, lateral ventricles, grey and white matter of any brain slice, as a label map
(`segment`) and as fractions of the brain area (`fractions`). Trained on the simulated cohort's ground-truth
tissue maps (judges/train.py); the shipped weights are in weights/judges/tissue."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dallebrain.judges.network import CLASSES

SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "judges" / "tissue"
FRACTIONS = ("csf", "ventricles", "gm", "wm")  # csf: the CSF outside the lateral ventricles
MIN_SIZE = 16  # pixels a side: three poolings must leave the network something to see
BATCH = 64


def check_images(images) -> np.ndarray:
    """Slices as float32 [N, H, W] in [0, 1], or a one-line ValueError saying what is wrong."""
    array = np.asarray(images)
    if array.ndim != 3:
        raise ValueError(f"images must be an array [N, H, W], got shape {array.shape}")
    if array.shape[0] == 0 or min(array.shape[1:]) < MIN_SIZE:
        raise ValueError(f"images must be at least 1 x {MIN_SIZE} x {MIN_SIZE}, got {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"images must be numbers, got dtype {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError("images contain NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(f"image intensities must lie in [0, 1] (prepare's normalisation), got {low:.3g}..{high:.3g}")
    return np.clip(array, 0.0, 1.0)


class TissueJudge:
    """A trained segmenter. `segment` -> class indices of CLASSES per pixel; `fractions` -> per image the share
    of the brain area (every non-background pixel) that is csf / ventricles / gm / wm (NaN with no brain)."""

    classes = CLASSES

    def __init__(self, net):
        self.net = net.eval()
        self.image_size = net.config.image_size

    def probabilities(self, images) -> np.ndarray:
        """Class probabilities [N, classes, H, W]. Slices of another size are resampled to the training grid and
        the logits back, so a 64-pixel or 256-pixel slice of the same field of view is judged alike."""
        import torch
        from torch.nn import functional

        array = check_images(images)
        size = array.shape[1:]
        out = []
        with torch.no_grad():
            for start in range(0, len(array), BATCH):
                x = torch.from_numpy(array[start:start + BATCH])[:, None]
                if size != (self.image_size, self.image_size):
                    x = functional.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", antialias=True)
                logits = self.net(x)
                if logits.shape[-2:] != size:
                    logits = functional.interpolate(logits, size=size, mode="bilinear")
                out.append(torch.softmax(logits, dim=1).numpy())
        return np.concatenate(out)

    def segment(self, images) -> np.ndarray:
        """Class index per pixel, [N, H, W] uint8 (0 background, then CLASSES in order)."""
        array = check_images(images)
        # batch by batch: the probabilities of thousands of slices would hold gigabytes at once
        return np.concatenate([self.probabilities(array[i:i + BATCH]).argmax(axis=1).astype(np.uint8)
                               for i in range(0, len(array), BATCH)])

    def fractions(self, images) -> dict[str, np.ndarray]:
        """Per image, each tissue's share of the brain area: {"csf", "ventricles", "gm", "wm"} -> [N]."""
        return label_fractions(self.segment(images))


def label_fractions(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Shares of the brain (non-background) pixels per class, from class-index maps [N, H, W]."""
    labels = np.asarray(labels)
    counts = np.stack([(labels == CLASSES.index(name)).sum(axis=(1, 2)) for name in FRACTIONS]).astype(np.float64)
    brain = counts.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(brain > 0, counts / brain, np.nan)
    return {name: shares[i] for i, name in enumerate(FRACTIONS)}


def load_tissue_judge(folder: str | Path | None = None) -> TissueJudge:
    """The shipped tissue judge, or one trained by `dallebrain judge train` (its --out folder)."""
    from dallebrain.judges.network import load_tissue_net

    return TissueJudge(load_tissue_net(SHIPPED if folder is None else folder))
