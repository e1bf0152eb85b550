"""The on-prompt judge: the evaluation's attribute encoder (evaluation.features), trained on real slices, says
which contrast and plane a synthetic slice shows; a slice whose prompt asked for another is off-prompt.

Its accuracy on real held-out slices is measured once and written beside it (judge/heldout.json), so a user
knows how far to trust a rejection."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dallebrain.synthesize.plan import PlannedSlice

MAX_TRAIN_SLICES = 4000  # a seeded subset of the train split: the judge learns contrast and plane long before this
MAX_HELDOUT_SLICES = 1000


def real_split(prepared: Path, split: str, limit: int, seed: int = 0):
    """Up to `limit` rows of a prepared data set's split (a seeded subset), in table order."""
    import pandas as pd

    table = pd.read_parquet(Path(prepared) / "metadata.parquet")
    table = table[table["split"] == split] if "split" in table else table.iloc[0:0]
    if len(table) > limit:
        table = table.sample(limit, random_state=seed).sort_index()
    return table.reset_index(drop=True)


@dataclass
class Judge:
    encoder: object  # evaluation.features.TrainedEncoder
    heldout: dict  # accuracy on real held-out slices, per attribute

    @classmethod
    def prepare(cls, prepared: Path, folder: Path, steps: int, progress: bool = False) -> Judge:
        """The judge cached in `folder` when it was trained on the same data with the same settings, else a new
        one trained on `prepared`'s train split and scored on its test split."""
        from dallebrain.data.io import write_json_atomic
        from dallebrain.evaluation.attributes import chance_scores, score_attributes
        from dallebrain.evaluation.features import (
            EncoderConfig,
            Targets,
            data_fingerprint,
            encoder_key,
            load_or_train_encoder,
            load_slices,
        )

        train = real_split(prepared, "train", MAX_TRAIN_SLICES)
        if train.empty:
            raise ValueError(f"--judge: {prepared} has no train split to train the judge on")
        config = EncoderConfig(steps=steps)
        key = encoder_key(data_fingerprint(prepared), config, len(train))
        images = load_slices(prepared, train["image_path"], config.input_size, progress, "judge: loading slices")
        encoder, reused = load_or_train_encoder(Path(folder), images, Targets.from_table(train), config, key,
                                                progress)
        record = Path(folder) / "heldout.json"
        if reused and record.is_file():
            import json

            try:
                heldout = json.loads(record.read_text())
            except (ValueError, OSError):  # a damaged record is measured again below, not a refusal of every rerun
                heldout = None
            if isinstance(heldout, dict) and "n" in heldout:
                return cls(encoder, heldout)
        test = real_split(prepared, "test", MAX_HELDOUT_SLICES)
        heldout = {"n": len(test)}
        if len(test):
            truth = Targets.from_table(test)
            _, predicted = encoder.run(load_slices(prepared, test["image_path"], config.input_size))
            scores = score_attributes(predicted, truth)
            chance = chance_scores(Targets.from_table(train), truth)
            heldout |= {name: {"accuracy": scores[name]["accuracy"], "chance": chance[name]["accuracy"]}
                        for name in ("contrast", "orientation")}
        write_json_atomic(record, heldout)
        return cls(encoder, heldout)

    def verdicts(self, images: np.ndarray, planned: list[PlannedSlice]) -> list[dict]:
        """Per slice: the contrast and plane the judge sees, and whether both are what the prompt asked."""
        _, predicted = self.encoder.run(images)
        out = []
        for p, modality, orientation in zip(planned, predicted["contrast"], predicted["orientation"], strict=True):
            on_prompt = modality == p.facts.modality and orientation == p.facts.orientation
            out.append({"judged_modality": str(modality), "judged_orientation": str(orientation),
                        "on_prompt": bool(on_prompt)})
        return out
