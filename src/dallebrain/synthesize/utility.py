"""Do synthetic slices help a network learn? Train on synthetic, test on real (TSTR), against training on real.

The same small network, the evaluation's attribute encoder (evaluation.features: contrast, plane and sex
classifiers, age and level regressors on one CNN), is trained from scratch in each setting and scored on the
same held-out real slices (the real data set's val and test splits: nothing here is tuned on val, and a
cohort's test split alone can be a handful of subjects, too few to score age or sex):

  real            R real train slices
  synthetic       R synthetic slices (targets: what each slice's prompt asked for)
  real+synthetic  both
  scarce          the train slices of only `scarce_subjects` real subjects
  scarce+synth    those plus R synthetic slices

R is the smaller of the real train split and the synthetic set (capped by max_slices). A predictor that ignores
the image (the train majority class or mean) is the chance row. Every setting is repeated with `repeats` seeds
(network initialisation, batches, subsets) and reported as mean and SD; within a repeat the settings share
their subsets (paired), so adding synthetic slices is compared on the same real subjects.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dallebrain.synthesize.utility_settings import CLASS_TASKS, REGRESSION_TASKS, REPORT_FILES, SETTINGS

__all__ = ["CLASS_TASKS", "REGRESSION_TASKS", "SETTINGS", "UtilityOptions", "run_utility"]


@dataclass(frozen=True)
class UtilityOptions:
    real: Path  # prepared real data set (train split to train on, test split to test on)
    synthetic: Path  # synthetic data set (dallebrain synthesize)
    out: Path
    scarce_subjects: int = 10
    steps: int = 1500  # optimiser steps per network (600, the evaluation's default, leaves age at chance)
    repeats: int = 1
    max_slices: int | None = None  # cap on R
    test_slices: int = 2000  # held-out real slices scored (a seeded subset of the held-out splits)
    heldout_splits: tuple[str, ...] = ("val", "test")
    settings: tuple[str, ...] = SETTINGS  # which of SETTINGS to train
    on_prompt_only: bool = False  # synthetic slices the on-prompt judge passed (synthesize --judge) only
    overwrite: bool = False  # replace an earlier report in out

    def check(self) -> None:
        unknown = [s for s in self.settings if s not in SETTINGS]
        if unknown or not self.settings:
            raise ValueError(f"unknown setting(s) {', '.join(unknown) or '(none given)'}: choose from "
                             f"{', '.join(SETTINGS)}")
        for name in ("real", "synthetic"):
            if not (Path(getattr(self, name)) / "metadata.parquet").is_file():
                raise ValueError(f"--{name}: not a prepared data set (no metadata.parquet): {getattr(self, name)}")
        if self.scarce_subjects < 1 or self.steps < 1 or self.repeats < 1 or self.test_slices < 1:
            raise ValueError("--scarce-subjects, --steps, --repeats and --test-slices must be at least 1")
        if self.max_slices is not None and self.max_slices < 1:
            raise ValueError(f"--max-slices must be at least 1, got {self.max_slices}")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise ValueError(f"--out exists and is not a folder: {self.out}")
        earlier = [Path(self.out) / name for name in REPORT_FILES if (Path(self.out) / name).exists()]
        if earlier and not self.overwrite:
            raise FileExistsError(f"{earlier[0]} exists: choose another --out or pass --overwrite")
        # checked now, not after an hour of training (the folder is made only when the report is written)
        existing = next(p for p in (Path(self.out).absolute(), *Path(self.out).absolute().parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"--out {self.out} cannot be written ({existing} is not a writable folder)")


@dataclass
class Pool:
    """Slices of one data set at the encoder's input size, with their table (targets come from it)."""

    root: Path
    table: pd.DataFrame
    images: np.ndarray = field(repr=False)

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
        return self.images[rows], self.table.iloc[rows]


def load_pool(root: Path, table: pd.DataFrame, size: int) -> Pool:
    from dallebrain.evaluation.features import load_slices

    table = table.reset_index(drop=True)
    return Pool(Path(root), table, load_slices(root, table["image_path"], size, desc=f"loading {Path(root).name}"))


def read_tables(options: UtilityOptions) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(real train, real held-out, synthetic) tables; refuses a real data set without train and held-out slices."""
    from dallebrain.data.dataset import read_metadata

    real = read_metadata(options.real, ["subject_id", "image_path"], "--real")
    held = real["split"].isin(options.heldout_splits) if "split" in real else None
    if held is None or not (real["split"] == "train").any() or not held.any():
        raise ValueError(f"--real {options.real} needs a train split and held-out slices "
                         f"({', '.join(options.heldout_splits)})")
    synthetic = read_metadata(options.synthetic, ["image_path"], "--synthetic")
    if options.on_prompt_only:
        if "on_prompt" not in synthetic or synthetic["on_prompt"].isna().all():
            raise ValueError(f"--on-prompt-only: {options.synthetic} was not judged (synthesize --judge)")
        synthetic = synthetic[synthetic["on_prompt"].fillna(False).astype(bool)]
    if synthetic.empty:
        raise ValueError(f"--synthetic {options.synthetic} holds no slice")
    train, test = real[real["split"] == "train"], real[held]
    if len(test) > options.test_slices:
        test = test.sample(options.test_slices, random_state=0).sort_index()
    n_subjects = train["subject_id"].nunique()
    if options.scarce_subjects >= n_subjects:
        raise ValueError(f"--scarce-subjects {options.scarce_subjects} is not fewer than the {n_subjects} train "
                         "subjects of --real")
    return train, test, synthetic


def setting_rows(setting: str, train: pd.DataFrame, n_synthetic: int, r: int, scarce_subjects: int,
                 repeat: int) -> tuple[np.ndarray, np.ndarray]:
    """(real train rows, synthetic rows) of a setting, positions in the train table and the synthetic table.
    The subsets are drawn from the repeat alone, so within a repeat every setting shares them: scarce and
    scarce+synthetic train on the same real subjects, real and real+synthetic on the same real slices, and a
    difference between them is the synthetic slices' doing, not a different draw of subjects."""
    none = np.array([], dtype=np.int64)
    rng = np.random.default_rng(repeat)
    real_r = np.sort(rng.choice(len(train), r, replace=False))
    synth_r = np.sort(rng.choice(n_synthetic, r, replace=False))
    subjects = train["subject_id"].drop_duplicates().to_numpy()
    chosen = rng.choice(subjects, scarce_subjects, replace=False)
    scarce = np.flatnonzero(train["subject_id"].isin(chosen).to_numpy())
    return {"real": (real_r, none), "synthetic": (none, synth_r), "real+synthetic": (real_r, synth_r),
            "scarce": (scarce, none), "scarce+synthetic": (scarce, synth_r)}[setting]


def flat(scores: dict) -> dict[str, float | None]:
    """evaluation.attributes scores as {task: accuracy or MAE}."""
    return {**{t: scores[t]["accuracy"] for t in CLASS_TASKS}, **{t: scores[t]["mae"] for t in REGRESSION_TASKS}}


def score(predictions: dict, truth) -> dict[str, float | None]:
    from dallebrain.evaluation.attributes import score_attributes

    return flat(score_attributes(predictions, truth))


def train_and_test(images: np.ndarray, table: pd.DataFrame, test: Pool, steps: int, seed: int) -> dict:
    from dallebrain.evaluation.features import EncoderConfig, Targets, train_encoder

    encoder = train_encoder(images, Targets.from_table(table), EncoderConfig(steps=steps, seed=seed))
    _, predicted = encoder.run(test.images)
    return score(predicted, Targets.from_table(test.table))


def run_utility(options: UtilityOptions, progress: bool = True) -> dict:
    """Every setting x repeat; returns (and writes, utility_report) the scores and the slice counts."""
    from tqdm.auto import tqdm

    from dallebrain.evaluation.attributes import chance_scores
    from dallebrain.evaluation.features import EncoderConfig, Targets
    from dallebrain.synthesize.utility_report import write_report

    options.check()
    train_table, test_table, synthetic_table = read_tables(options)
    r = min(len(train_table), len(synthetic_table), options.max_slices or math.inf)
    size = EncoderConfig().input_size
    real, synthetic = load_pool(options.real, train_table, size), load_pool(options.synthetic, synthetic_table, size)
    test = load_pool(options.real, test_table, size)
    chance = chance_scores(Targets.from_table(real.table), Targets.from_table(test.table))
    settings = [s for s in SETTINGS if s in options.settings]
    results: dict[str, list[dict]] = {s: [] for s in settings}
    counts: dict[str, dict] = {}
    jobs = [(s, k) for k in range(options.repeats) for s in settings]
    for setting, repeat in tqdm(jobs, desc="utility: training", disable=not progress):
        real_rows, synth_rows = setting_rows(setting, real.table, len(synthetic.table), int(r),
                                             options.scarce_subjects, repeat)
        images = np.concatenate([real.images[real_rows], synthetic.images[synth_rows]])
        table = pd.concat([real.table.iloc[real_rows], synthetic.table.iloc[synth_rows]], ignore_index=True)
        results[setting].append(train_and_test(images, table, test, options.steps, repeat))
        counts[setting] = {"real_slices": len(real_rows), "synthetic_slices": len(synth_rows),
                           "real_subjects": int(real.table.iloc[real_rows]["subject_id"].nunique())}
    summary = {
        "settings": {s: summarise(results[s]) | counts[s] for s in settings},
        "chance": flat(chance),
        "test_slices": len(test.table), "test_subjects": int(test.table["subject_id"].nunique()),
        "heldout_splits": list(options.heldout_splits),
        "r": int(r), "steps": options.steps, "repeats": options.repeats,
        "real": str(options.real), "synthetic": str(options.synthetic), "on_prompt_only": options.on_prompt_only,
    }
    write_report(Path(options.out), summary)
    return summary


def summarise(runs: list[dict]) -> dict:
    """Per task: mean and SD over the repeats."""
    out = {}
    for task in (*CLASS_TASKS, *REGRESSION_TASKS):
        values = np.array([r[task] for r in runs if r[task] is not None], dtype=float)
        out[task] = {"mean": float(values.mean()) if values.size else None,
                     "sd": float(values.std(ddof=1)) if values.size > 1 else None}
    return out
