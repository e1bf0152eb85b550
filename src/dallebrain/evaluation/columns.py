"""Per-column metrics: each image set (the real reference, each route's synthetic slices) measured the same way.

The "real" column compares the floor (train slices matched to the held-out ones) with the held-out slices for
the distances, scores the held-out slices against their own captions for adherence (the ceiling), takes
real slices of different subjects for diversity and the held-out slices for privacy; a route's column puts
its synthetic slices in each of those places."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dallebrain.evaluation import attributes as A
from dallebrain.evaluation import features as Fe
from dallebrain.evaluation import metrics as M

PRIVACY_K = 6  # nearest training slices kept per query: the nearest and the five it is compared with
MIN_TEXTURE_ROWS = 8  # slices of a contrast, per side, before its own GLCM distance is reported


@dataclass
class SetFeatures:
    """Per image set name ("real", "floor", a route): what the metrics read of its slices."""

    images: dict[str, np.ndarray]  # (N, S, S) slices
    encoder: dict[str, np.ndarray]  # evaluation-encoder features (N, F)
    predictions: dict[str, dict]  # the encoder's attribute predictions
    glcm: dict[str, np.ndarray]  # GLCM features (N, 18)
    clip: dict[str, np.ndarray]  # Brain-CLIP image embeddings; empty when the model has no clip/

    @classmethod
    def measure(cls, images: dict[str, np.ndarray], encoder: Fe.TrainedEncoder, clip=None) -> SetFeatures:
        runs = {name: encoder.run(x) for name, x in images.items()}
        return cls(images, {k: v[0] for k, v in runs.items()}, {k: v[1] for k, v in runs.items()},
                   {name: M.glcm_features(x) for name, x in images.items()},
                   {name: Fe.clip_image_features(clip, x) for name, x in images.items()} if clip else {})


def feature_block(real_f: np.ndarray, other_f: np.ndarray) -> dict:
    """Realism of one set against the real held-out set in one feature space."""
    out = {"frechet": M.frechet_distance(real_f, other_f), "kid": M.kid(real_f, other_f),
           **M.prdc(real_f, other_f), "one_nn_accuracy": M.one_nn_accuracy(real_f, other_f)}
    a, b = M.normalise_rows(real_f), M.normalise_rows(other_f)
    out["nn_cosine_to_real_median"] = float(np.median((b @ a.T).max(axis=1)))
    return out


def grey_levels(real: np.ndarray, other: np.ndarray, modality: list[str]) -> dict:
    """Brain-intensity histogram distances over all slices and per contrast."""
    modality = np.asarray(modality)
    out = {"all": {**M.histogram_distances(real, other), "top_share": M.top_share(other)}}
    for m in dict.fromkeys(modality.tolist()):
        out[m] = {**M.histogram_distances(real[modality == m], other[modality == m]),
                  "top_share": M.top_share(other[modality == m])}
    return out


def texture(real_glcm: np.ndarray, other_glcm: np.ndarray, modality: list[str] | None = None) -> dict:
    """GLCM distances over all slices and, with `modality`, per contrast: the pooled Frechet distance can be
    carried by one contrast (measured: PD-weighted slices clipped flat white had 5x the real spread of GLCM energy
    and ASM, and made most of a pooled 66). A contrast with fewer than MIN_TEXTURE_ROWS slices on either side is
    left out rather than given an 18-feature covariance from a handful of rows."""
    names = M.glcm_feature_names()
    ks = M.ks_statistics(real_glcm, other_glcm, names)
    out = {"frechet": M.standardised_frechet(real_glcm, other_glcm), "ks_mean": float(np.mean(list(ks.values()))),
           "ks_max": float(max(ks.values())), "ks": ks}
    if modality is not None:
        modality = np.asarray(modality)
        out["by_contrast"] = {}
        for m in dict.fromkeys(modality.tolist()):
            rows = modality == m
            if rows.sum() < MIN_TEXTURE_ROWS:
                continue
            ks_m = M.ks_statistics(real_glcm[rows], other_glcm[rows], names)
            out["by_contrast"][m] = {"frechet": M.standardised_frechet(real_glcm[rows], other_glcm[rows]),
                                     "ks_mean": float(np.mean(list(ks_m.values())))}
    return out


def distances(sets: SetFeatures, other: str, modality: list[str]) -> dict:
    """Realism (per feature space), grey levels and texture of set `other` against the real held-out set."""
    column: dict = {"realism": {"encoder": feature_block(sets.encoder["real"], sets.encoder[other])},
                    "grey_levels": grey_levels(sets.images["real"], sets.images[other], modality),
                    "texture": texture(sets.glcm["real"], sets.glcm[other], modality)}
    if sets.clip:
        column["realism"]["brain_clip"] = feature_block(sets.clip["real"], sets.clip[other])
    return column


def privacy_neighbours(sets: SetFeatures, names: list[str], train_work: np.ndarray, train_encoder: np.ndarray,
                       train_clip: np.ndarray | None) -> dict[str, dict]:
    """{space: {set name: (similarities, train indices) of the PRIVACY_K nearest train slices}}: every query
    against the whole train split (float32 at the encoder's size), in band-pass pixels, encoder features and
    (with clip/) Brain-CLIP."""
    work = train_work.shape[-1]
    train_pixels = M.correlation_vectors(M.bandpass(train_work))
    train_embed = M.normalise_rows(train_encoder)
    out = {"pixel": {name: M.nearest_neighbours(M.correlation_vectors(M.bandpass(Fe.to_size(sets.images[name], work))),
                                                train_pixels, PRIVACY_K) for name in names},
           "encoder_embedding": {name: M.nearest_neighbours(M.normalise_rows(sets.encoder[name]), train_embed,
                                                            PRIVACY_K) for name in names}}
    if train_clip is not None:
        train_clip = M.normalise_rows(train_clip)
        out["brain_clip_embedding"] = {name: M.nearest_neighbours(sets.clip[name], train_clip, PRIVACY_K)
                                       for name in names}
    return out


def privacy(neighbours: dict[str, dict], name: str) -> dict:
    """Memorisation statistics of one set beside the real held-out set, per space."""
    out = {}
    for space, by_set in neighbours.items():
        # the near-copy rule was calibrated in band-pass pixels only
        threshold = M.NEAR_COPY_RELATIVE_DISTANCE if space == "pixel" else None
        out[space] = M.memorisation(by_set[name][0], by_set["real"][0], threshold)
    return out


@dataclass
class AgeTrend:
    """Brain fraction over the cohort mean at the same position, per set and for the train cohort."""

    train_ages: np.ndarray
    cohort: np.ndarray  # relative brain fraction of each train slice
    prompt_ages: np.ndarray  # the age each held-out caption states
    relative: dict[str, np.ndarray]  # per set name

    @classmethod
    def measure(cls, sets: SetFeatures, names: list[str], train, heldout, train_work: np.ndarray,
                train_targets: Fe.Targets, prompt_targets: Fe.Targets) -> AgeTrend:
        work = train_work.shape[-1]
        train_keys = A.position_keys(train["modality"], train["orientation"], train["slice_mm"])
        train_fraction = M.brain_fraction(train_work)
        reference = A.reference_means(train_fraction, train_keys)
        keys = A.position_keys(heldout["modality"], heldout["orientation"], heldout["slice_mm"])
        relative = {name: A.relative_brain_fraction(M.brain_fraction(Fe.to_size(sets.images[name], work)), keys,
                                                    reference) for name in names}
        return cls(train_targets.age, A.relative_brain_fraction(train_fraction, train_keys, reference),
                   prompt_targets.age, relative)

    def column(self, name: str) -> dict:
        slope = A.age_slope(self.prompt_ages, self.relative[name])
        return {**A.age_slope(self.train_ages, self.cohort), "heldout": slope} if name == "real" else slope


def diversity(groups: list[dict], name: str) -> dict:
    """Mean pairwise MS-SSIM within each prompt's group: real slices of different subjects, or a route's samples."""
    scores = [M.mean_pairwise_ms_ssim(g["real"] if name == "real" else g["synthetic"][name]) for g in groups]
    valid = [s for s in scores if s is not None]
    return {"ms_ssim": float(np.mean(valid)) if valid else None, "per_prompt": scores}


def adherence(sets: SetFeatures, name: str, targets: Fe.Targets, prompt_embeds: np.ndarray | None) -> dict:
    """Attribute scores against the prompts (for "real": the held-out slices against their own captions)."""
    out: dict = {"attributes": A.score_attributes(sets.predictions[name], targets)}
    if sets.clip:
        out["clip_score"] = float((sets.clip[name] * prompt_embeds).sum(axis=1).mean())
    return out


def column(sets: SetFeatures, name: str, modality: list[str], targets: Fe.Targets, prompt_embeds, groups,
           neighbours: dict[str, dict], age: AgeTrend) -> dict:
    """Every metric of one column, in the order metrics.json and the report list them."""
    out = distances(sets, "floor" if name == "real" else name, modality)
    out["adherence"] = adherence(sets, name, targets, prompt_embeds)
    out["diversity"] = diversity(groups, name)
    out["privacy"] = privacy(neighbours, name)
    out["age_trend"] = age.column(name)
    return out
