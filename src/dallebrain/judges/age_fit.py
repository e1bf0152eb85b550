"""`dallebrain judge fit-age`: fit the age judge's ridge regression on a prepared data set's train slices, as
the tissue judge sees them. The ridge strength is chosen by cross-validation grouped by subject (slices of one
person are not independent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dallebrain.judges.age import CENTRES_MM, MODEL_FILE, WIDTH_MM, features, tissue_fingerprint

ALPHAS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
FOLDS = 4


def _standardise(design: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, scale = design.mean(axis=0), design.std(axis=0)
    return mean, np.where(scale > 1e-9, scale, 1.0)


def ridge(design: np.ndarray, target: np.ndarray, alpha: float) -> dict:
    """Closed-form ridge on standardised columns (the intercept is not shrunk)."""
    mean, scale = _standardise(design)
    x = (design - mean) / scale
    coef = np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ (target - target.mean()))
    return {"coef": coef, "mean": mean, "scale": scale, "intercept": float(target.mean())}


def _predict(model: dict, design: np.ndarray) -> np.ndarray:
    return (design - model["mean"]) / model["scale"] @ model["coef"] + model["intercept"]


def choose_alpha(design: np.ndarray, target: np.ndarray, groups: np.ndarray, seed: int = 0) -> tuple[float, dict]:
    """The ridge strength of least cross-validated mean absolute error, folds by subject; (alpha, MAE per alpha)."""
    subjects = np.unique(groups)
    fold_of = dict(zip(np.random.default_rng(seed).permutation(subjects), np.arange(len(subjects)) % FOLDS,
                       strict=True))
    folds = np.array([fold_of[g] for g in groups])
    errors = {}
    for alpha in ALPHAS:
        absolute = np.concatenate([np.abs(_predict(ridge(design[folds != f], target[folds != f], alpha),
                                                   design[folds == f]) - target[folds == f])
                                   for f in range(FOLDS) if (folds == f).any()])
        errors[alpha] = float(absolute.mean())
    return min(errors, key=errors.get), errors


def fit_from_fractions(rows, shares: dict[str, np.ndarray], seed: int = 0) -> dict:
    """The age judge's record from slices (rows with orientation, slice_mm, age, subject_id) and their judged
    fractions; slices where no brain was seen are left out."""
    seen = np.isfinite(shares["ventricles"])
    rows, shares = rows[seen].reset_index(drop=True), {k: v[seen] for k, v in shares.items()}
    design = features(shares, rows["orientation"].to_numpy(), rows["slice_mm"].to_numpy())
    target = rows["age"].to_numpy(dtype=np.float64)
    alpha, errors = choose_alpha(design, target, rows["subject_id"].to_numpy(), seed)
    model = ridge(design, target, alpha)
    return {"coef": model["coef"].tolist(), "mean": model["mean"].tolist(), "scale": model["scale"].tolist(),
            "intercept": model["intercept"], "alpha": alpha, "cv_mae_by_alpha": errors,
            "centres_mm": list(CENTRES_MM), "width_mm": WIDTH_MM,
            "age_range": [float(target.min()), float(target.max())],
            "training": {"slices": len(rows), "subjects": int(rows["subject_id"].nunique()),
                         "train_mean_age": float(target.mean())}}


def fit_age(data: Path, out: Path, tissue_folder: Path | None = None, max_slices: int = 6000, seed: int = 0,
            overwrite: bool = False) -> dict:
    """Fit on the train split (a random `max_slices` of its slices) and write OUT/age.json; returns the record."""
    from dallebrain.data.dataset import read_metadata
    from dallebrain.data.io import write_json_atomic
    from dallebrain.data.slicing import load_png
    from dallebrain.judges.tissue import load_tissue_judge
    from dallebrain.judges.train import check_run_options
    from dallebrain.training.common import data_provenance

    check_run_options(out, max_slices, overwrite, MODEL_FILE, "an age judge")
    table = read_metadata(data, ("split", "age", "subject_id", "image_path", "orientation", "slice_mm"))
    rows = table[(table["split"] == "train") & table["age"].notna()]
    if rows["subject_id"].nunique() < FOLDS:
        raise ValueError(f"{data}: the train split needs at least {FOLDS} subjects with an age")
    rows = rows.sample(min(max_slices, len(rows)), random_state=seed).reset_index(drop=True)
    judge = load_tissue_judge(tissue_folder)
    shares = judge.fractions(np.stack([load_png(Path(data) / p) for p in rows["image_path"]]))
    record = fit_from_fractions(rows, shares, seed)
    record["tissue_sha256"] = tissue_fingerprint(tissue_folder)
    record["training"] |= data_provenance(data)
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(out) / MODEL_FILE, record)
    return record
