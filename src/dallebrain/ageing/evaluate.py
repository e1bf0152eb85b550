"""`dallebrain evaluate-ageing`: predict each later session of held-out people from their first and compare with
the simulator's true rendering, the ageing network beside the naive baselines (evaluate_methods.py), measured
by evaluate_metrics.py, written by evaluate_report.py. The issue's targets are judged on 10-year predictions.

Held-out pairs are handled one contrast and plane at a time (a chunk holds every held-out person at every slice
position of it, all that identity retrieval compares), so a 128-pixel cohort never sits in memory at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dallebrain.ageing.evaluate_methods import (
    COHORT_KEY,
    COHORT_MEAN,
    COPY,
    NETWORK,
    SDEDIT,
    cohort_changes,
    cohort_mean_predictions,
    network_predictions,
    pick_sdedit_pairs,
    sdedit_predictions,
    with_gap,
)
from dallebrain.ageing.evaluate_metrics import (
    TISSUES,
    VENTRICLE_MIN,
    VENTRICLE_PLANES,
    identity_hits,
    image_scores,
    monotone_sequences,
    summarise,
)
from dallebrain.ageing.evaluate_report import REPORT_JSON, write_report

HELD_OUT = ("val", "test")
PAIR_COLUMNS = ["subject_id", "modality", "orientation", "slice_index", "slice_mm", "sex", "source_session_id",
                "target_session_id", "source_age", "target_age", "years", "gap", "source_image_path",
                "target_image_path"]


@dataclass(frozen=True)
class AgeingEvalOptions:
    data: Path  # a prepared longitudinal data set (`data simulate --timepoints`, then `data prepare`)
    out: Path  # report folder
    model: Path | None = None  # ageing network folder; None: the shipped one
    splits: tuple[str, ...] = ("test",)  # held-out people only: val, test or both
    max_people: int | None = None  # the first N held-out people by id (a quicker run)
    slice_stride: int = 1  # every k-th slice position of each plane (a quicker run; 1: all)
    ldm: Path | None = None  # an LDM pipeline folder: adds the sdedit method
    ldm_pairs: int = 48  # pairs sdedit runs on (slow on a CPU)
    strength: float = 0.3  # sdedit: fraction of the noise schedule the baseline's latent is noised to
    ldm_steps: int = 10  # sdedit: DDIM steps back from that level
    ldm_guidance: float = 4.0  # sdedit: classifier-free guidance towards the follow-up prompt (generate's default)
    tissue_judge: Path | None = None  # None: the shipped tissue judge
    examples: int = 4  # held-out people in the example figure
    seed: int = 0  # which pairs sdedit runs on, and its noise
    overwrite: bool = False

    def check(self) -> None:
        if not self.splits or any(s not in HELD_OUT for s in self.splits):
            raise ValueError(f"--split must name held-out splits (val, test or val,test), got {','.join(self.splits)}")
        if self.max_people is not None and self.max_people < 1:
            raise ValueError(f"--max-people must be at least 1, got {self.max_people}")
        if self.slice_stride < 1:
            raise ValueError(f"--slice-stride must be at least 1, got {self.slice_stride}")
        if self.ldm_pairs < 1 or self.ldm_steps < 1:
            raise ValueError("--ldm-pairs and the sdedit steps must be at least 1")
        if not 0.0 < self.strength < 1.0:
            raise ValueError(f"--strength must lie in (0, 1), got {self.strength}")
        if self.examples < 0:
            raise ValueError(f"examples must be 0 or more, got {self.examples}")
        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out exists and is not a folder: {out}")
        if (out / REPORT_JSON).exists() and not self.overwrite:
            raise ValueError(f"{out} already holds an ageing report (--overwrite replaces it)")


def held_out_pairs(table, options: AgeingEvalOptions):
    """First session -> each later one, of the held-out people (the first --max-people of them by id), at every
    --slice-stride-th slice position of each plane."""
    from dallebrain.ageing.pairs import session_pairs

    pairs = session_pairs(table, options.splits, from_first=True)
    people = sorted(pairs["subject_id"].unique())
    if options.max_people is not None:
        pairs = pairs[pairs["subject_id"].isin(people[:options.max_people])]
    if options.slice_stride > 1:
        rank = pairs.groupby("orientation")["slice_index"].rank(method="dense").astype(int) - 1
        pairs = pairs[rank % options.slice_stride == 0]
    return with_gap(pairs).reset_index(drop=True)


def _judged(judge, images: np.ndarray) -> dict[str, np.ndarray]:
    fractions = judge.fractions(images)
    return {t: fractions[t] for t in TISSUES}


def _method_rows(chunk, method: str, predictions: np.ndarray, truths: np.ndarray, truth_fractions, source_v):
    """The per-pair table's rows of one method on one chunk."""
    rows = chunk[PAIR_COLUMNS].copy()
    rows.insert(0, "pair", chunk.index)
    rows.insert(1, "method", method)
    rows["ssim"], rows["psnr"] = image_scores(truths, predictions)
    rows["identity_hit"] = identity_hits(predictions, truths, _groups(chunk), chunk["subject_id"])
    rows["ventricles_source"] = source_v
    rows["ventricle_slice"] = (source_v >= VENTRICLE_MIN) & chunk["orientation"].isin(VENTRICLE_PLANES).to_numpy()
    for tissue in TISSUES:
        rows[f"{tissue}_true"] = truth_fractions[tissue]
    return rows


def _groups(chunk) -> list[tuple]:
    return list(zip(*(chunk[c] for c in ["modality", "orientation", "slice_index", "target_session_id"]),
                    strict=True))


def evaluate_chunk(chunk, context: dict) -> list:
    """Every method on one contrast and plane's held-out pairs -> per-pair rows (one DataFrame per method)."""
    from dallebrain.ageing.pairs import load_images

    data, judge = context["data"], context["judge"]
    images, index = load_images(data, [*chunk["source_image_path"], *chunk["target_image_path"]])
    sources = images[chunk["source_image_path"].map(index).to_numpy()]
    truths = images[chunk["target_image_path"].map(index).to_numpy()]
    del images
    wanted = set(zip(*(chunk[c] for c in COHORT_KEY), strict=True))
    changes = cohort_changes(data, context["train_pairs"], wanted)
    cohort, missing = cohort_mean_predictions(sources, chunk, changes)
    context["cohort_missing"] += missing
    predictions = {NETWORK: network_predictions(context["net"], sources, chunk), COPY: sources, COHORT_MEAN: cohort}
    truth_fractions, source_fractions = _judged(judge, truths), _judged(judge, sources)
    source_v = source_fractions["ventricles"]
    out = []
    for method, predicted in predictions.items():
        rows = _method_rows(chunk, method, predicted, truths, truth_fractions, source_v)
        # the copy is the baseline: its judged fractions are the baseline's (the judge is slow on a CPU)
        judged = source_fractions if method == COPY else _judged(judge, predicted)
        for tissue, values in judged.items():
            rows[f"{tissue}_pred"] = values
        out.append(rows)
    chosen = chunk.index.isin(list(context["sdedit_pairs"]))
    if context["pipe"] is not None and chosen.any():
        sub = chunk[chosen]
        predicted = sdedit_predictions(context["pipe"], sources[chosen], sub, context["strength"],
                                       context["ldm_steps"], context["ldm_guidance"], context["seed"])
        rows = _method_rows(sub, SDEDIT, predicted, truths[chosen], {t: v[chosen] for t, v in
                                                                   truth_fractions.items()}, source_v[chosen])
        rows["identity_hit"] = np.nan  # only a sample of pairs: no full set of its predictions to retrieve among
        for tissue, values in _judged(judge, predicted).items():
            rows[f"{tissue}_pred"] = values
        out.append(rows)
    return out


def _context(options: AgeingEvalOptions, table, pairs) -> dict:
    from dallebrain.ageing.network import load_ageing_net
    from dallebrain.ageing.pairs import session_pairs
    from dallebrain.judges.tissue import load_tissue_judge

    pipe = None
    if options.ldm is not None:
        from dallebrain.api import load_pipeline

        pipe = load_pipeline(options.ldm)
    return {"data": Path(options.data), "net": load_ageing_net(options.model),
            "judge": load_tissue_judge(options.tissue_judge),
            "train_pairs": with_gap(session_pairs(table, ("train",), from_first=True)), "pipe": pipe,
            "sdedit_pairs": pick_sdedit_pairs(pairs, options.ldm_pairs, options.seed) if pipe is not None else set(),
            "strength": options.strength, "ldm_steps": options.ldm_steps, "ldm_guidance": options.ldm_guidance,
            "seed": options.seed, "cohort_missing": 0}


def evaluate_ageing(options: AgeingEvalOptions, progress: bool = False) -> dict:
    """Run the evaluation and write OUT/ageing_report.json, ageing_report.md, ageing_pairs.csv and
    ageing_examples.png; returns the report. One-line ValueError for bad input (checked before anything heavy)."""
    import time

    import pandas as pd

    from dallebrain.ageing.pairs import longitudinal_table

    started = time.time()
    options.check()
    table = longitudinal_table(options.data)
    pairs = held_out_pairs(table, options)
    context = _context(options, table, pairs)
    chunks = list(pairs.groupby(["modality", "orientation"], sort=True))
    per_pair = []
    for i, (name, chunk) in enumerate(chunks):
        if progress:
            print(f"evaluate-ageing: {'/'.join(name)} ({i + 1}/{len(chunks)}, {len(chunk)} pairs)", flush=True)
        per_pair.extend(evaluate_chunk(chunk, context))
    per_pair = pd.concat(per_pair, ignore_index=True)
    network_rows = per_pair[per_pair["method"] == NETWORK]
    baselines = network_rows[(network_rows["orientation"] == "axial") & (network_rows["modality"] == "T1w")]
    sequences = monotone_sequences(context["net"], context["judge"], context["data"],
                                   baselines.drop_duplicates("source_image_path"))
    report = {
        "settings": _settings(options), "model": _provenance(context["net"], options.model),
        "held_out": {"people": int(pairs["subject_id"].nunique()), "pairs": int(len(pairs)),
                     "splits": list(options.splits), "cohort_mean_pairs_without_train_change":
                     int(context["cohort_missing"])},
        "metrics": summarise(per_pair), "sequences": sequences,
        # every method on sdedit's pairs alone: the fair comparison for a method run on a sample
        "sdedit_subset": summarise(per_pair[per_pair["pair"].isin(context["sdedit_pairs"])])
        if context["sdedit_pairs"] else None,
        "seconds": round(time.time() - started, 1),
    }
    write_report(Path(options.out), report, per_pair, context, options.examples)
    return report


def _settings(options: AgeingEvalOptions) -> dict:
    return {"data": str(options.data), "model": str(options.model) if options.model else "shipped",
            "splits": list(options.splits), "max_people": options.max_people, "slice_stride": options.slice_stride,
            "ldm": str(options.ldm) if options.ldm else None, "ldm_pairs": options.ldm_pairs,
            "strength": options.strength, "ldm_steps": options.ldm_steps, "ldm_guidance": options.ldm_guidance,
            "seed": options.seed}


def _provenance(net, folder) -> dict:
    return {"folder": str(folder) if folder else "shipped", "training": net.config.training,
            "channels": list(net.config.channels), "image_size": net.config.image_size}
