"""What the report draws besides metrics.json: the slices themselves, embeddings, GLCM features, the closest
pairs to the training set and the age-trend points."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dallebrain.evaluation import features as Fe
from dallebrain.evaluation import metrics as M
from dallebrain.evaluation.columns import AgeTrend, SetFeatures
from dallebrain.evaluation.reference import RealSlices

NEAREST_SHOWN = 4  # closest pairs to the training set shown per set


@dataclass
class ReportData:
    split: str
    prompts: list[str]
    real: np.ndarray  # (n, H, W) held-out slices
    floor: np.ndarray  # (n, H, W) train slices matched to them
    modality: list[str]
    synthetic: dict[str, np.ndarray] = field(default_factory=dict)
    diversity: list[dict] = field(default_factory=list)  # per prompt: prompt, real (k, H, W), synthetic {route: ..}
    latent: dict[str, np.ndarray] = field(default_factory=dict)  # set name -> embeddings
    latent_space: str = "encoder"
    glcm: dict[str, np.ndarray] = field(default_factory=dict)
    nn_pairs: dict[str, list[dict]] = field(default_factory=dict)  # set -> [{query, train, similarity, ..}]
    age_points: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def nearest_pairs(reference: RealSlices, images: np.ndarray, neighbours: tuple[np.ndarray, np.ndarray],
                  data_root) -> list[dict]:
    """The slices of one set closest to a training slice (smallest relative distance), each with that slice."""
    sims, idx = neighbours
    rel = M.relative_distance(sims)
    order = np.argsort(rel)[:NEAREST_SHOWN]
    train = reference.train
    train_images = Fe.load_slices(data_root, train.loc[idx[order, 0], "image_path"])
    return [{"query": images[i], "train": train_images[j], "similarity": float(sims[i, 0]),
             "relative_distance": float(rel[i]), "prompt": reference.prompts[i],
             "train_slice": str(train.loc[idx[i, 0], "image_path"])} for j, i in enumerate(order)]


def report_data(reference: RealSlices, sets: SetFeatures, synthetic: dict[str, np.ndarray], diversity: list[dict],
                pixel_neighbours: dict[str, tuple], age: AgeTrend, split: str, data_root) -> ReportData:
    names = ["real", *synthetic]
    data = ReportData(split, reference.prompts, reference.real, reference.floor, reference.modality, synthetic,
                      diversity, latent=sets.clip or sets.encoder, glcm=sets.glcm,
                      latent_space="brain_clip" if sets.clip else "encoder")
    data.nn_pairs = {name: nearest_pairs(reference, sets.images[name], pixel_neighbours[name], data_root)
                     for name in names}
    data.age_points = {"cohort (train)": (age.train_ages, age.cohort),
                       **{f"real {split}" if name == "real" else name: (age.prompt_ages, age.relative[name])
                          for name in names}}
    return data
