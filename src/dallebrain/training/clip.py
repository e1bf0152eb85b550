"""Train Brain-CLIP: contrastive image/caption training of the ResNet image tower and MiniLM's top layers.

    dallebrain train clip --data PREPARED --out runs/clip --config configs/clip.base.json

--out receives the Brain-CLIP save_pretrained folder (config.json, model.safetensors), metrics.json (retrieval
recall@k and zero-shot contrast / orientation accuracy on the val split, each with its chance level), and the
training artefacts beside them (checkpoints/, losses.csv, train_config.json).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dallebrain.models.clip import BrainCLIP, BrainCLIPConfig
from dallebrain.models.clip_zero_shot import CONTRAST_PROMPTS, ORIENTATION_PROMPTS
from dallebrain.models.clip_zero_shot import class_embeddings as _class_embeddings
from dallebrain.training.common import held_out
from dallebrain.training.config import TrainConfig
from dallebrain.training.loop import Stage, fit, save_image_grid
from dallebrain.vocab import FIELD_OF_VIEW_MM

_MODEL = BrainCLIPConfig()
_MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(BrainCLIPConfig) if f.name != "image_size")

RECALL_KS = (1, 5, 10)


@dataclass
class ClipTrainConfig(TrainConfig):
    """Settings of the clip stage: the shared ones, Brain-CLIP's architecture, and the stage's own."""

    # Architecture (see BrainCLIPConfig; image_size is taken from the data).
    image_width: int = _MODEL.image_width  # channels of the first ResNet stage
    image_blocks_per_stage: int = _MODEL.image_blocks_per_stage  # basic blocks per stage
    image_stages: int = _MODEL.image_stages  # ResNet stages (each after the first halves the resolution)
    image_stem_stride: int = _MODEL.image_stem_stride  # stride of the stem conv
    embed_dim: int = _MODEL.embed_dim  # shared embedding dimension
    tuned_text_layers: int = _MODEL.tuned_text_layers  # trainable top MiniLM layers (of 6)
    init_temperature: float = _MODEL.init_temperature  # initial softmax temperature
    text_pooling: str = _MODEL.text_pooling  # "mean" or "cls"
    # Training.
    learning_rate: float = 3e-4  # image tower, projections, logit scale
    text_learning_rate: float = 1e-5  # tuned MiniLM layers: pretrained, so a gentler rate
    augment: bool = True  # TorchIO slice augmentation (AugmentConfig defaults) on training images
    random_captions: bool = True  # a random phrasing of each slice's captions per step (else the canonical one)
    # Evaluation at export.
    val_pairs: int = 256  # (image, canonical caption) pairs for retrieval and zero-shot metrics
    eval_batch_size: int = 64  # images / captions encoded at once during evaluation

    def model_config(self, image_size: int) -> BrainCLIPConfig:
        return BrainCLIPConfig(image_size=image_size, **{k: getattr(self, k) for k in _MODEL_FIELDS})


def _seed_of(*parts: int) -> int:
    return int(np.random.default_rng(list(parts)).integers(2**31))


@torch.no_grad()
def evaluate_clip(model: BrainCLIP, data_dir: str | Path, max_pairs: int = 256, batch_size: int = 64,
                  seed: int = 0) -> dict:
    """Retrieval recall@k (text->image, image->text) and zero-shot contrast / orientation accuracy on up to
    `max_pairs` (image, canonical caption) pairs of the val split (else test, else train), with chance levels.

    Many slices share near-identical canonical captions, which caps retrieval recall: reported as measured."""
    dataset, split = held_out(data_dir)
    n = min(max_pairs, len(dataset))
    rows = np.sort(np.random.default_rng(seed).choice(len(dataset), size=n, replace=False))
    was_training = model.training
    model.eval()
    try:
        images, texts = [], []
        for start in range(0, n, batch_size):
            batch, captions = dataset.batch(rows[start:start + batch_size])
            images.append(model.encode_image(batch))
            texts.append(model.encode_text(captions))
        image_emb, text_emb = torch.cat(images), torch.cat(texts)
        contrast_emb = _class_embeddings(model, CONTRAST_PROMPTS)
        orientation_emb = _class_embeddings(model, ORIENTATION_PROMPTS)
    finally:
        model.train(was_training)
    similarity = image_emb @ text_emb.t()  # (image, text)
    truth = torch.arange(n, device=similarity.device)

    def ranks(scores: torch.Tensor) -> torch.Tensor:  # rank of the true match in each row (0 = first)
        return (scores > scores[truth, truth][:, None]).sum(1)

    t2i, i2t = ranks(similarity.t()), ranks(similarity)
    table = dataset.table.iloc[rows]
    metrics: dict = {"split": split, "pairs": n,
                     "distinct_captions": int(table["captions"].map(lambda c: c[0]).nunique())}
    for k in RECALL_KS:
        metrics[f"text_to_image_recall@{k}"] = float((t2i < k).float().mean())
        metrics[f"image_to_text_recall@{k}"] = float((i2t < k).float().mean())
        metrics[f"recall_chance@{k}"] = min(1.0, k / n)
    for name, prompts, column, class_emb in (("contrast", CONTRAST_PROMPTS, "modality", contrast_emb),
                                             ("orientation", ORIENTATION_PROMPTS, "orientation", orientation_emb)):
        labels = list(prompts)
        predicted = (image_emb @ class_emb.t()).argmax(1).cpu().numpy()
        actual = table[column].map(labels.index).to_numpy()
        metrics[f"zero_shot_{name}_accuracy"] = float((predicted == actual).mean())
        metrics[f"zero_shot_{name}_chance"] = 1.0 / len(labels)
    return metrics


class ClipStage(Stage):
    """Contrastive training on (slice, caption) pairs of the train split."""

    name = "clip"

    def __init__(self, config: ClipTrainConfig, data_dir: str | Path, dataset=None):
        from dallebrain.data.dataset import SliceDataset

        self.config = config
        self.data_dir = Path(data_dir)
        self.dataset = dataset if dataset is not None else SliceDataset(self.data_dir, "train", columns=("captions",))
        self.images_per_step = config.batch_size
        self.model: BrainCLIP | None = None
        self.metrics: dict | None = None
        self._augment = None
        self._sample_pool = None

    def setup(self, accelerator) -> None:
        from dallebrain.data.augment import AugmentConfig, build_augmentation

        self.accelerator = accelerator
        size = self.dataset.image_size
        # Built here, after fit seeds every RNG, so the initial weights are a function of config.seed.
        self.model = BrainCLIP(self.config.model_config(size)).to(accelerator.device)
        self.model.train()
        self._trained = self.model.trained_modules()
        self._wrapped = accelerator.prepare(self.model)
        if self.config.augment:
            self._augment = build_augmentation(AugmentConfig(), spacing_mm=FIELD_OF_VIEW_MM / size)

    def modules(self) -> dict[str, torch.nn.Module]:
        # Only the trained weights: a checkpoint need not carry the frozen MiniLM (about 90 MB).
        return {"clip": self._trained}

    def trainable_parameters(self) -> list[dict]:
        groups = [{"params": self.model.image_parameters(), "lr": self.config.learning_rate}]
        text = self.model.text_parameters()
        if text:
            groups.append({"params": text, "lr": self.config.text_learning_rate})
        return groups

    def batch(self, step: int, micro: int) -> tuple[torch.Tensor, list[str]]:
        """Training images and captions of one micro-batch: a pure function of (seed, step, micro, rank)."""
        from dallebrain.data.dataset import batch_indices

        rank = self.accelerator.process_index
        n_micro = self.config.gradient_accumulation
        rows = batch_indices(len(self.dataset), self.config.batch_size, self.config.seed, step * n_micro + micro,
                             rank)
        caption_seed = _seed_of(self.config.seed, step, micro, rank, 1) if self.config.random_captions else None
        images, captions = self.dataset.batch(rows, caption_seed=caption_seed)
        if self._augment is not None:
            images = self._augment(images, seed=_seed_of(self.config.seed, step, micro, rank, 2))
        return images.to(self.accelerator.device), captions

    def loss(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        images, captions = self.batch(step, micro)
        logits_per_image, logits_per_text = self._wrapped(images, captions)
        loss = BrainCLIP.contrastive_loss(logits_per_image, logits_per_text, captions)
        with torch.no_grad():
            accuracy = (logits_per_image.argmax(1) == torch.arange(len(captions), device=loss.device)).float().mean()
        return {"loss": loss, "logit_scale": self.model.scale().detach(), "batch_accuracy": accuracy}

    def sample(self, step: int, path: Path) -> None:
        """A retrieval figure: for each contrast prompt (rows), the 4 best-matching slices of a val pool."""
        model = self.model
        if self._sample_pool is None:
            dataset, _ = held_out(self.data_dir)
            rows = np.random.default_rng(0).choice(len(dataset), size=min(64, len(dataset)), replace=False)
            self._sample_pool = dataset.batch(rows)[0]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                pool = self._sample_pool.to(model.device)
                scores = _class_embeddings(model, CONTRAST_PROMPTS) @ model.encode_image(pool).t()
                best = scores.topk(min(4, len(pool)), dim=1).indices.flatten()
        finally:
            model.train(was_training)
        save_image_grid(pool[best], path, columns=min(4, len(pool)))

    def export(self, out_dir: Path) -> None:
        from dallebrain.data.io import write_json_atomic

        model = self.model
        model.save_pretrained(out_dir)
        self.metrics = evaluate_clip(model, self.data_dir, self.config.val_pairs, self.config.eval_batch_size,
                                     self.config.seed)
        write_json_atomic(Path(out_dir) / "metrics.json", self.metrics)
        print(json.dumps(self.metrics, indent=2))


def main(argv: list[str] | None = None) -> dict:
    """Train Brain-CLIP on a prepared data set; returns the evaluation metrics (also in --out/metrics.json)."""
    started = time.perf_counter()  # time_budget_s counts the data and caches too
    from dallebrain.training.args import stage_config, stage_parser

    parser = stage_parser("clip", "Train Brain-CLIP (ResNet image tower + MiniLM text tower) contrastively.")
    args = parser.parse_args(argv)
    config = stage_config(ClipStage, ClipTrainConfig, args)
    config.model_config(128).validate()
    stage = ClipStage(config, args.data)
    summary = fit(stage, config, args.out, resume=args.resume, progress=not args.no_progress,
                  started=started)
    if stage.metrics is None and (args.out / "metrics.json").is_file():
        return json.loads((args.out / "metrics.json").read_text())
    return stage.metrics or {"steps": summary["steps"]}


if __name__ == "__main__":
    from dallebrain._env import configure_offline

    configure_offline()
    main()
