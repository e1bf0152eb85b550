"""Detection scores, at the pixel level inside the brain and at the slice level (the MOOD challenge's two tasks).

- Dice at a threshold, and the best Dice over all thresholds (the maximum F1 of the precision-recall curve of
  every evaluated pixel pooled: the "best possible Dice" of the unsupervised-detection literature).
- AUPRC (average precision) and AUROC of pixels; slice-level AUROC from slice scores.
- Healthy false positives: the share of healthy brain pixels above the threshold (the stated false-positive
  rate, measured on held-out healthy slices) and the share of healthy slices with any detection.
"""

from __future__ import annotations

import numpy as np

MIN_DETECTION_PX = 5  # a slice "has a detection" when at least this many pixels pass the threshold


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """2|P & T| / (|P| + |T|); 1 when both are empty (nothing to find, nothing found)."""
    p, t = np.asarray(prediction, bool), np.asarray(truth, bool)
    total = int(p.sum() + t.sum())
    return 1.0 if total == 0 else 2.0 * int((p & t).sum()) / total


def best_dice(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(best Dice, its threshold) over all thresholds of pooled pixel scores."""
    from sklearn.metrics import precision_recall_curve

    truth = np.asarray(truth, bool).ravel()
    if not truth.any():
        return float("nan"), float("nan")
    precision, recall, thresholds = precision_recall_curve(truth, np.asarray(scores, np.float64).ravel())
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)[:-1]
    i = int(np.argmax(f1))
    return float(f1[i]), float(thresholds[i])


def auprc(scores: np.ndarray, truth: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    truth = np.asarray(truth, bool).ravel()
    return float(average_precision_score(truth, np.asarray(scores).ravel())) if truth.any() else float("nan")


def auroc(scores: np.ndarray, truth: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    truth = np.asarray(truth, bool).ravel()
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, np.asarray(scores).ravel()))


def _per_slice(thresholds, n: int) -> np.ndarray:
    """A threshold per slice (N, 1, 1) from one value or one per slice (each slice's contrast has its own)."""
    return np.broadcast_to(np.asarray(thresholds, np.float64).reshape(-1), (n,)).reshape(n, 1, 1)


def pixel_metrics(maps: np.ndarray, masks: np.ndarray, brains: np.ndarray, thresholds) -> dict:
    """Pixel-level scores of a set of slices, over their brain pixels pooled; Dice at the validation threshold
    (one value, or one per slice) pooled too."""
    inside = np.asarray(brains, bool)
    scores, truth = maps[inside], np.asarray(masks, bool)[inside]
    predicted = (maps > _per_slice(thresholds, len(maps)))[inside]
    best, best_at = best_dice(scores, truth)
    return {"dice": dice(predicted, truth), "dice_best": best, "threshold_best": best_at,
            "auprc": auprc(scores, truth), "auroc": auroc(scores, truth), "lesion_px": int(truth.sum()),
            "brain_px": int(inside.sum())}


def healthy_false_positives(maps: np.ndarray, brains: np.ndarray, thresholds) -> dict:
    """Share of healthy brain pixels above the threshold (one, or one per slice), and of healthy slices with a
    detection."""
    inside = np.asarray(brains, bool)
    above = (maps > _per_slice(thresholds, len(maps))) & inside
    flagged = [int(a.sum()) >= MIN_DETECTION_PX for a in above]
    return {"pixel_fpr": float(above.sum() / max(int(inside.sum()), 1)), "slices_flagged": float(np.mean(flagged)),
            "n_slices": len(flagged)}


def slice_auroc(lesion_scores: list[float], healthy_scores: list[float]) -> float:
    """AUROC of slice scores: slices with a lesion against slices of healthy subjects."""
    scores = np.array([*lesion_scores, *healthy_scores], np.float64)
    truth = np.array([1] * len(lesion_scores) + [0] * len(healthy_scores), bool)
    return auroc(scores, truth)


def threshold_at_fpr(healthy_values: np.ndarray, fpr: float) -> float:
    """The value that healthy values exceed with probability `fpr` (their 1 - fpr quantile)."""
    values = np.asarray(healthy_values, np.float64).ravel()
    if values.size == 0:
        raise ValueError("no healthy validation pixels to choose a threshold on")
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"false-positive rate must lie in (0, 1), got {fpr}")
    return float(np.quantile(values, 1.0 - fpr))
