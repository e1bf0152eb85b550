"""What the anatomy judges see in real and synthetic slices, side by side.

- Tissue: the tissue judge's CSF / ventricle / GM / WM fractions of each synthetic slice against those of the real
  held-out slice whose caption was its prompt (same contrast, plane, level, age and sex asked): mean absolute
  difference and correlation, per contrast. The judge's own error on real slices (against the ground-truth label
  PNGs, where the cohort has them) says how small a difference it can see.
- Ventricles and age: on axial slices through the lateral ventricles (VENTRICLE_BAND_MM), the correlation of the
  judged ventricle fraction with age; for synthetic slices the age their prompt asked.
- Head size by sex: the brain-mask area over the cohort's mean at the same contrast, plane and level (the age
  trend's relative brain fraction), men over women; no judge needed.
- Age by the age judge, level by the level judge: MAE on real slices against their truth (ceiling), on synthetic
  slices against their prompt, and chance (the train mean).

A judge that is not there, labels the cohort lacks, or no slice in the ventricle band skip their part with a note."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dallebrain.vocab import SEXES

# Axial levels (MNI z, mm) through the bodies of the lateral ventricles: where ventricle size carries age.
VENTRICLE_BAND_MM = (17.0, 29.0)
MIN_PAIRS = 3  # fewer finite pairs give no correlation


@dataclass
class Judges:
    """The judges an evaluation runs (None: skipped, with a note saying why)."""

    tissue: object | None = None
    age: object | None = None
    record: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def load_judges(tissue_folder: str | Path | None = None, age_folder: str | Path | None = None) -> Judges:
    """The shipped judges, or the folders given. A folder given that cannot serve is a one-line ValueError; a
    shipped judge that is not installed is skipped with a note, so evaluation works without it."""
    from dallebrain.judges.age import MODEL_FILE, load_age_judge
    from dallebrain.judges.age import SHIPPED as AGE_SHIPPED
    from dallebrain.judges.network import WEIGHTS_FILE
    from dallebrain.judges.tissue import SHIPPED as TISSUE_SHIPPED
    from dallebrain.judges.tissue import load_tissue_judge

    judges = Judges(record={"tissue": _name(tissue_folder), "age": None})
    if tissue_folder is None and not (TISSUE_SHIPPED / WEIGHTS_FILE).is_file():
        judges.record["tissue"] = None
        judges.notes.append("no tissue judge (none installed in weights/judges/tissue; --tissue-judge FOLDER): "
                            "tissue fractions, ventricles vs age and the age judge skipped")
        return judges
    judges.tissue = load_tissue_judge(tissue_folder)
    if age_folder is None and not (AGE_SHIPPED / MODEL_FILE).is_file():
        judges.notes.append("no age judge (none installed in weights/judges/age; --age-judge FOLDER): skipped")
        return judges
    try:
        judges.age = load_age_judge(age_folder, tissue_folder)
    except ValueError as exc:
        if age_folder is not None:  # asked for by name: a bad folder is an error
            raise
        judges.notes.append(f"shipped age judge skipped: {str(exc).splitlines()[0]}")  # e.g. another tissue judge
        return judges
    judges.record["age"] = _name(age_folder)
    return judges


def _name(folder) -> str:
    return "installed" if folder is None else str(folder)


# --- numbers ----------------------------------------------------------------------------------------------------


def pearson(x, y) -> float | None:
    """Pearson r over the finite pairs; None with fewer than MIN_PAIRS or a constant side."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < MIN_PAIRS or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return None
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def mean_absolute_error(predicted, truth, where=None) -> dict:
    """{"mae", "n"} over the finite pairs (and `where`); mae None when there is none."""
    predicted, truth = np.asarray(predicted, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    ok = np.isfinite(predicted) & np.isfinite(truth)
    if where is not None:
        ok &= np.asarray(where, dtype=bool)
    return {"mae": float(np.abs(predicted[ok] - truth[ok]).mean()) if ok.any() else None, "n": int(ok.sum())}


# what a level error is made of: slices within the judge's own reference spacing (the prepared grid at 128 px:
# 1.5 mm) and slices beyond two of the cohort's 3 mm slice steps, which are draws landing elsewhere
LEVEL_NEAR_MM, LEVEL_FAR_MM = 1.5, 6.0
LEVEL_BAND_MM = 12.0  # the groups whose own median error `level_error_profile` removes for its scatter MAE


def level_error_profile(predicted, truth, planes=None) -> dict:
    """`mean_absolute_error`'s {"mae", "n"} and what makes it up: the mean signed error ("bias_mm": where slices
    land on average, which a level map corrects), the share of slices within LEVEL_NEAR_MM and beyond LEVEL_FAR_MM,
    the share of the mean absolute error those far slices make ("far_share_of_error"), and, given each slice's
    plane, the MAE left once every plane and LEVEL_BAND_MM band of asked levels has its own median error removed
    ("scatter_mae": fitted on the same slices, so no shift per plane and band, as a level map makes, leaves less;
    what is left is scatter, which only a model that holds the level tighter removes). Values None without a
    finite pair."""
    predicted, truth = np.asarray(predicted, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    ok = np.isfinite(predicted) & np.isfinite(truth)
    error = predicted[ok] - truth[ok]
    out = {"mae": None, "n": int(ok.sum()), "bias_mm": None, "within_near": None, "beyond_far": None,
           "far_share_of_error": None, "scatter_mae": None}
    if ok.any():
        size = np.abs(error)
        far = size > LEVEL_FAR_MM
        out.update(mae=float(size.mean()), bias_mm=float(error.mean()),
                   within_near=float(np.mean(size <= LEVEL_NEAR_MM)), beyond_far=float(far.mean()),
                   far_share_of_error=float(size[far].sum() / size.sum()) if size.sum() > 0 else 0.0)
        if planes is not None:
            groups = [f"{plane} {int(np.floor(level / LEVEL_BAND_MM))}"
                      for plane, level in zip(np.asarray(planes, dtype=object)[ok], truth[ok], strict=True)]
            _, group_of = np.unique(groups, return_inverse=True)
            left = error.copy()
            for group in np.unique(group_of):
                rows = group_of == group
                left[rows] -= np.median(error[rows])  # the shift with the least absolute error left
            out["scatter_mae"] = float(np.abs(left).mean())
    return out


def compare_fractions(reference: dict[str, np.ndarray], other: dict[str, np.ndarray], modality) -> dict:
    """Paired slices: {group ("all", then each contrast): {fraction: {"mae", "pearson_r", "n"}}}."""
    modality = np.asarray(modality)
    groups = {"all": np.ones(len(modality), dtype=bool)}
    groups.update({m: modality == m for m in dict.fromkeys(modality.tolist())})
    out = {}
    for group, rows in groups.items():
        out[group] = {k: {**mean_absolute_error(other[k], reference[k], rows),
                          "pearson_r": pearson(reference[k][rows], other[k][rows])} for k in reference}
    return out


def in_ventricle_band(orientation, slice_mm) -> np.ndarray:
    low, high = VENTRICLE_BAND_MM
    level = np.asarray(slice_mm, dtype=np.float64)
    return (np.asarray(orientation) == "axial") & (level >= low) & (level <= high)


def ventricles_vs_age(ventricles, ages, band) -> dict:
    """Correlation of the ventricle fraction with age over the slices in the band."""
    band = np.asarray(band, dtype=bool)
    ventricles, ages = np.asarray(ventricles, dtype=np.float64)[band], np.asarray(ages, dtype=np.float64)[band]
    return {"pearson_r": pearson(ventricles, ages), "n": int((np.isfinite(ventricles) & np.isfinite(ages)).sum())}


def sex_ratio(relative_area, sexes) -> dict:
    """Mean relative brain area of men over that of women ({"ratio", "men", "women"}: ratio None without both)."""
    relative_area, sexes = np.asarray(relative_area, dtype=np.float64), np.asarray(sexes, dtype=object)
    ok = np.isfinite(relative_area)
    men, women = relative_area[ok & (sexes == "M")], relative_area[ok & (sexes == "F")]
    ratio = float(men.mean() / women.mean()) if men.size and women.size and women.mean() > 0 else None
    return {"ratio": ratio, "men": int(men.size), "women": int(women.size)}


def percent_off(value: float | None, reference: float | None) -> float | None:
    """How far `value` is from `reference`, in % of it."""
    if value is None or reference is None or reference == 0:
        return None
    return 100.0 * (value / reference - 1.0)


def label_fractions_of(data_root, heldout) -> dict[str, np.ndarray] | None:
    """Tissue fractions of the held-out slices' ground-truth label PNGs (NaN where a slice has none); None when the
    cohort has no labels (a real cohort, or one prepared before labels were sliced)."""
    from PIL import Image

    from dallebrain.judges.tissue import FRACTIONS, label_fractions
    from dallebrain.judges.train import label_classes

    if "label_path" not in heldout or heldout["label_path"].isna().all():
        return None
    out = {k: np.full(len(heldout), np.nan) for k in FRACTIONS}
    for i, rel in enumerate(heldout["label_path"]):
        if isinstance(rel, str) and rel:
            with Image.open(Path(data_root) / rel) as im:
                shares = label_fractions(label_classes(np.asarray(im))[None])
            for k in FRACTIONS:
                out[k][i] = shares[k][0]
    return out


def prompt_sexes(targets) -> np.ndarray:
    return np.array([SEXES[s] if s >= 0 else None for s in targets.sex], dtype=object)


# --- the evaluation's anatomy block ----------------------------------------------------------------------------


def measure_anatomy(judges: Judges, reference, synthetic: dict[str, np.ndarray], age_trend, prompt_targets,
                    data_root) -> dict:
    """metrics.json's "anatomy": head size by sex always; tissue fractions, ventricles vs age and the age judge
    when the judges are there. `reference` is the evaluation's RealSlices, `age_trend` its AgeTrend (relative brain
    areas), `prompt_targets` what each prompt asked (features.Targets)."""
    heldout = reference.heldout
    sexes = {"real": _column(heldout, "sex", object), **{r: prompt_sexes(prompt_targets) for r in synthetic}}
    out = {"judges": dict(judges.record), "notes": list(judges.notes), "ventricle_band_mm": list(VENTRICLE_BAND_MM),
           "head_size": head_size(age_trend, _column(reference.train, "sex", object), sexes)}
    if judges.tissue is None:
        return out
    fractions = {name: judges.tissue.fractions(np.clip(x, 0.0, 1.0)) for name, x in
                 {"real": reference.real, **synthetic}.items()}
    out["tissue"] = tissue_block(fractions, label_fractions_of(data_root, heldout), heldout["modality"], out["notes"])
    ages = {"real": _column(heldout, "age", np.float64), **{r: prompt_targets.age for r in synthetic}}
    band = in_ventricle_band(heldout["orientation"], heldout["slice_mm"])
    trend = {name: ventricles_vs_age(fractions[name]["ventricles"], ages[name], band) for name in fractions}
    trend["heldout_split"] = split_ventricles_vs_age(judges.tissue, reference.table, heldout["split"].iloc[0],
                                                     data_root)
    if not band.any():
        out["notes"].append(f"no sampled slice is axial at z {VENTRICLE_BAND_MM[0]:g}-{VENTRICLE_BAND_MM[1]:g} mm: "
                            "no paired ventricles-vs-age correlation (raise --n)")
    out["ventricles_vs_age"] = trend
    out["level_judge"] = level_judge_scores(judges.tissue, {"real": reference.real, **synthetic}, heldout,
                                            prompt_targets, reference.train)
    if judges.age is not None:
        train_age = _column(reference.train, "age", np.float64)
        if np.isfinite(train_age).any():  # a cohort without ages has no age truth to judge against
            out["age_judge"] = age_judge_scores(judges.age, fractions, heldout, ages, band,
                                                float(np.nanmean(train_age)))
        else:
            out["notes"].append("the data set has no ages: age judge skipped")
    return out


def head_size(age_trend, train_sexes, sexes: dict[str, np.ndarray]) -> dict:
    """Men over women in brain area relative to the cohort mean at the same position, per set and in the train
    cohort; a route's ratio also as % off the real one at the same positions."""
    out = {"cohort_train": sex_ratio(age_trend.cohort, train_sexes)}
    out.update({name: sex_ratio(age_trend.relative[name], s) for name, s in sexes.items()})
    for name in sexes:
        if name != "real":
            out[name]["vs_real_percent"] = percent_off(out[name]["ratio"], out["real"]["ratio"])
            out[name]["vs_cohort_percent"] = percent_off(out[name]["ratio"], out["cohort_train"]["ratio"])
    return out


def tissue_block(fractions: dict[str, dict], labels: dict | None, modality, notes: list[str]) -> dict:
    """Mean fractions per set, each route paired with the real slices, and the judge on real slices against the
    ground-truth labels (when the cohort has them)."""
    out = {"mean_fraction": {name: {k: _nanmean(v) for k, v in f.items()} for name, f in fractions.items()},
           "paired_with_real": {name: compare_fractions(fractions["real"], f, modality)
                                for name, f in fractions.items() if name != "real"}}
    if labels is None:
        notes.append("the data set has no tissue label PNGs (label_path): the tissue judge's error on real slices "
                     "is not measured")
    else:
        out["judge_on_real_vs_labels"] = compare_fractions(labels, fractions["real"], modality)
    return out


def split_ventricles_vs_age(tissue_judge, table, split: str, data_root) -> dict:
    """The same correlation over every real slice of the held-out split in the ventricle band (all its subjects,
    not just the sampled slices): the real reference with more slices than a small --n draws."""
    from dallebrain.evaluation.features import load_slices

    rows = table[(table["split"] == split) & in_ventricle_band(table["orientation"], table["slice_mm"])]
    if rows.empty:
        return {"pearson_r": None, "n": 0}
    ventricles = tissue_judge.fractions(load_slices(data_root, rows["image_path"]))["ventricles"]
    return ventricles_vs_age(ventricles, _column(rows, "age", np.float64), np.ones(len(rows), dtype=bool))


def age_judge_scores(age_judge, fractions: dict[str, dict], heldout, ages: dict[str, np.ndarray], band: np.ndarray,
                     train_mean_age: float) -> dict:
    """{slices: {set: {"mae", "n"}, "chance": {...}}} over all slices and the ventricle band. Each set is judged at
    the position of the real slice whose caption was its prompt (the caption states it); chance is the train
    mean age against the real truth."""
    orientation, level = heldout["orientation"].to_numpy(), heldout["slice_mm"].to_numpy(dtype=np.float64)
    predicted = {name: age_judge.predict_from_fractions(f, orientation, level) for name, f in fractions.items()}
    chance = np.full(len(heldout), train_mean_age)
    out = {}
    for slices, where in (("all", None), ("ventricle_band", band)):
        out[slices] = {name: mean_absolute_error(p, ages[name], where) for name, p in predicted.items()}
        out[slices]["chance"] = mean_absolute_error(chance, ages["real"], where)
    return out


def level_judge_scores(tissue_judge, images: dict[str, np.ndarray], heldout, prompt_targets, train) -> dict:
    """The level judge's MAE (mm; sagittal as |x|) per set, with its bias and scatter (`level_error_profile`):
    real slices against their true level, synthetic ones against their prompt's; chance: the train split's mean
    level against the real truth."""
    from dallebrain.evaluation.features import Targets
    from dallebrain.judges.level import estimate_levels

    orientations = [str(o) for o in heldout["orientation"]]
    truth = Targets.from_table(heldout).level_mm
    out = {name: level_error_profile(estimate_levels(np.clip(x, 0.0, 1.0), orientations, tissue_judge),
                                     truth if name == "real" else prompt_targets.level_mm, orientations)
           for name, x in images.items()}
    train_levels = Targets.from_table(train).level_mm
    out["chance"] = mean_absolute_error(np.full(len(heldout), np.nanmean(train_levels)), truth)
    return out


def _column(table, name: str, dtype) -> np.ndarray:
    """A metadata column as an array; None / NaN throughout when the cohort lacks it (no demographics)."""
    import pandas as pd

    if name not in table:
        return np.full(len(table), np.nan if dtype is np.float64 else None, dtype=dtype)
    values = table[name].to_numpy(dtype=object)
    if dtype is np.float64:
        return np.array([np.nan if pd.isna(v) else float(v) for v in values], dtype=np.float64)
    return np.array([None if pd.isna(v) else v for v in values], dtype=object)


def _nanmean(values) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else None


# --- per attribute: real ceiling, synthetic, chance -------------------------------------------------------------

ENCODER_ATTRIBUTES = (("contrast", "accuracy", "higher"), ("orientation", "accuracy", "higher"),
                      ("level_mm", "mae", "lower"), ("sex", "accuracy", "higher"), ("age", "mae", "lower"))
AGE_JUDGE_SLICES = {"all": "all slices",
                    "ventricle_band": f"axial z {VENTRICLE_BAND_MM[0]:g}-{VENTRICLE_BAND_MM[1]:g} mm"}


def attribute_table(columns: dict, chance: dict, anatomy: dict) -> list[dict]:
    """One row per attribute and judge: the real ceiling (real held-out slices against their truth), each
    route (synthetic slices against their prompt) and chance (ignoring the image), with the slice counts."""
    routes = [name for name in columns if name != "real"]
    rows = []
    for name, measure, better in ENCODER_ATTRIBUTES:
        def score(column, name=name, measure=measure):
            return column["adherence"]["attributes"][name][measure]
        rows.append({"attribute": name, "judge": "evaluation encoder", "slices": "all slices", "measure": measure,
                     "better": better, "real": score(columns["real"]),
                     "synthetic": {r: score(columns[r]) for r in routes}, "chance": chance[name][measure],
                     "n": columns["real"]["adherence"]["attributes"][name]["n"]})
    level = anatomy.get("level_judge")
    if level is not None:
        rows.append({"attribute": "level_mm", "judge": "level judge", "slices": "all slices", "measure": "mae",
                     "better": "lower", "real": level["real"]["mae"], "synthetic": {r: level[r]["mae"] for r in routes},
                     "chance": level["chance"]["mae"], "n": level["real"]["n"]})
    for key, label in AGE_JUDGE_SLICES.items():
        scores = anatomy.get("age_judge", {}).get(key)
        if scores is None:
            continue
        rows.append({"attribute": "age", "judge": "age judge", "slices": label, "measure": "mae", "better": "lower",
                     "real": scores["real"]["mae"], "synthetic": {r: scores[r]["mae"] for r in routes},
                     "chance": scores["chance"]["mae"], "n": scores["real"]["n"]})
    return rows
