"""What `evaluate-ageing` measures of a predicted follow-up against the true one (the simulator rendered the same
anatomy at the later age, so the truth is exact up to scanner noise and pose):

- SSIM and PSNR (skimage, data range 1);
- the tissue judge's ventricle / GM / WM fractions of prediction vs truth, and for the ventricles the error as a
  share of the true change (a method that copies the baseline scores 100 %: it misses the whole change);
- identity: is the prediction nearest (mean squared error) to its own person's follow-up among every held-out
  person's at that position, contrast and session?
- monotone sequences: does a person's judged ventricle area never shrink as the network ages the baseline?
"""

from __future__ import annotations

import numpy as np

from dallebrain.judges.network import CLASSES

VENTRICLE_MIN = 0.02  # judged ventricle share of the baseline slice's brain for a slice "through the ventricles"
VENTRICLE_PLANES = ("axial", "coronal")  # sagittal slices cut the ventricles at a tangent: tiny, noisy areas
PSNR_CEILING = 100.0  # dB: an exact prediction has infinite PSNR, which no mean or JSON can hold
TISSUES = ("ventricles", "gm", "wm")
MONOTONE_TOLERANCE = 0.005  # of the first value: a dip of a few judged pixels is the judge's noise, not shrinkage
SEQUENCE_STEP, SEQUENCE_SPAN, SEQUENCE_CAP = 5.0, 30.0, 105.0  # years


def image_scores(truths: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pair (SSIM, PSNR in dB) of the prediction against the true follow-up."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    ssim = [structural_similarity(t, p, data_range=1.0) for t, p in zip(truths, predictions, strict=True)]
    with np.errstate(divide="ignore"):
        psnr = [peak_signal_noise_ratio(t, p, data_range=1.0) for t, p in zip(truths, predictions, strict=True)]
    return np.asarray(ssim, np.float64), np.minimum(np.asarray(psnr, np.float64), PSNR_CEILING)


def identity_hits(predictions: np.ndarray, truths: np.ndarray, groups, people) -> np.ndarray:
    """Per pair 1.0 if the true follow-up nearest the prediction (MSE) is its own person's, among the true
    follow-ups of its group (same contrast, plane, slice position and target session); NaN where the group
    holds no other person (nothing to tell apart)."""
    codes: dict = {}
    groups = np.asarray([codes.setdefault(g, len(codes)) for g in groups])  # any hashable group label
    people = np.asarray(people)
    hits = np.full(len(predictions), np.nan)
    for group in range(len(codes)):
        at = np.flatnonzero(groups == group)
        if len(np.unique(people[at])) < 2:
            continue
        flat_truths = truths[at].reshape(len(at), -1)
        for i in at:
            mse = ((flat_truths - predictions[i].reshape(1, -1)) ** 2).mean(axis=1)
            hits[i] = float(people[at[int(np.argmin(mse))]] == people[i])
    return hits


def ventricle_change_share(pairs) -> tuple[float, int]:
    """mean |v_pred - v_true| / mean |v_true - v_source| over the pairs whose baseline slice shows the
    ventricles (axial or coronal, judged fraction >= VENTRICLE_MIN), and how many pairs that is."""
    keep = pairs["ventricle_slice"].to_numpy(bool)
    if not keep.any():
        return float("nan"), 0
    rows = pairs[keep]
    change = np.abs(rows["ventricles_true"] - rows["ventricles_source"]).mean()
    error = np.abs(rows["ventricles_pred"] - rows["ventricles_true"]).mean()
    return float(error / change) if change > 0 else float("nan"), int(keep.sum())


def summary_of(pairs) -> dict:
    """The report's numbers for one method over some pairs (a gap, or all)."""
    share, n_ventricle = ventricle_change_share(pairs)
    hits = pairs["identity_hit"].dropna()
    row = {"pairs": int(len(pairs)), "people": int(pairs["subject_id"].nunique()),
           "ssim": float(pairs["ssim"].mean()), "psnr": float(pairs["psnr"].mean()),
           "ventricle_change_error": share, "ventricle_pairs": n_ventricle,
           "identity_rate": float(hits.mean()) if len(hits) else float("nan"), "identity_pairs": int(len(hits))}
    for tissue in TISSUES:
        row[f"{tissue}_error"] = float(np.abs(pairs[f"{tissue}_pred"] - pairs[f"{tissue}_true"]).mean())
    return row


def summarise(per_pair) -> dict:
    """{method: {"all": summary, "5": summary, "10": summary, ...}} (gaps in whole years)."""
    out = {}
    for method, rows in per_pair.groupby("method", sort=False):
        out[method] = {"all": summary_of(rows)}
        for gap, at_gap in rows.groupby("gap"):
            out[method][str(int(gap))] = summary_of(at_gap)
    return out


def ventricle_pixels(judge, images: np.ndarray) -> np.ndarray:
    """Judged lateral-ventricle pixels per image."""
    return (judge.segment(images) == CLASSES.index("ventricles")).sum(axis=(1, 2))


def sequence_ages(source_age: float) -> list[float]:
    """source + 0, +5, ..., +30 years, capped at the oldest age asked of the network (duplicates dropped)."""
    steps = np.arange(0.0, SEQUENCE_SPAN + 1e-9, SEQUENCE_STEP)
    return sorted({float(min(source_age + s, SEQUENCE_CAP)) for s in steps})


def is_monotone(values) -> bool:
    values = np.asarray(values, np.float64)
    return bool(np.all(np.diff(values) >= -MONOTONE_TOLERANCE * values[0]))


def monotone_sequences(net, judge, data, baselines) -> dict:
    """Per person, the first session's axial T1w slices through the lateral ventricles (`baselines`: their
    rows with `ventricles_source`), each aged by the network to every age of `sequence_ages` straight from the
    baseline; the judged ventricle pixels summed over the slices must not fall with age."""
    from dallebrain.ageing.pairs import load_images
    from dallebrain.ageing.predict import age_slices

    rows = baselines[baselines["ventricles_source"] >= VENTRICLE_MIN]
    per_person = {}
    for person, slices in rows.groupby("subject_id"):
        images, index = load_images(data, slices["source_image_path"])
        images = images[slices["source_image_path"].map(index).to_numpy()]
        source_age = float(slices["source_age"].iloc[0])
        ages = sequence_ages(source_age)
        frames = age_slices(net, np.repeat(images, len(ages), axis=0), [source_age] * len(ages) * len(images),
                            ages * len(images))
        totals = ventricle_pixels(judge, frames).reshape(len(images), len(ages)).sum(axis=0)
        per_person[str(person)] = {"ages": ages, "ventricle_pixels": [int(v) for v in totals], "slices": len(images),
                                   "monotone": is_monotone(totals),
                                   "grew": bool(totals[-1] > (1 + MONOTONE_TOLERANCE) * totals[0])}
    monotone = sum(p["monotone"] for p in per_person.values())
    # a network that changes nothing is trivially monotone: how many sequences grew at all tells them apart
    grew = sum(p["grew"] for p in per_person.values())
    return {"people": len(per_person), "monotone": monotone, "grew": grew,
            "share": monotone / len(per_person) if per_person else float("nan"), "per_person": per_person,
            "tolerance": MONOTONE_TOLERANCE}
