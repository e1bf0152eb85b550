import csv
import json
from pathlib import Path

import pytest
import torch

from dallebrain.models.clip import BrainCLIP
from dallebrain.training.clip import ClipStage, ClipTrainConfig, main
from dallebrain.training.config import load_config
from dallebrain.training.loop import fit

CONFIGS = Path(__file__).parents[2] / "configs"
TINY = CONFIGS / "clip.tiny.json"


def _losses(out: Path) -> dict[int, float]:
    with open(out / "losses.csv") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--config", str(TINY), "--no-progress", *extra]


def test_configs_load():
    for name in ("clip.tiny.json", "clip.base.json"):
        config = load_config(ClipTrainConfig, CONFIGS / name)
        config.model_config(128).validate()
    base = load_config(ClipTrainConfig, CONFIGS / "clip.base.json")
    assert base.text_learning_rate < base.learning_rate


def test_main_trains_exports_and_evaluates(tiny_prepared, tmp_path):
    out = tmp_path / "run"
    metrics = main(_args(tiny_prepared, out, "--max-steps", "3", "--set", "sample_every=3"))
    assert sorted(_losses(out)) == [1, 2, 3]
    assert (out / "samples" / "step-0000003.png").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics
    assert saved["split"] == "val" and 0 < saved["pairs"] <= 48
    for k in (1, 5, 10):
        for direction in ("text_to_image", "image_to_text"):
            assert 0 <= saved[f"{direction}_recall@{k}"] <= 1
        assert saved[f"recall_chance@{k}"] == pytest.approx(min(1.0, k / saved["pairs"]))
    assert saved["zero_shot_contrast_chance"] == pytest.approx(1 / 4)
    assert saved["zero_shot_orientation_chance"] == pytest.approx(1 / 3)
    assert 0 <= saved["zero_shot_contrast_accuracy"] <= 1 and 0 <= saved["zero_shot_orientation_accuracy"] <= 1
    # the folder at the top of --out is a Brain-CLIP the next stage can load
    model = BrainCLIP.from_pretrained(out)
    assert model.config.image_size == 64 and model.config.embed_dim == 32
    # checkpoints hold only the trained weights, not a copy of MiniLM
    checkpoint = max((out / "checkpoints").glob("step-*"))
    assert (checkpoint / "clip.safetensors").stat().st_size < 10e6


def test_resume_continues_with_the_same_losses(tiny_prepared, tmp_path):
    config = load_config(ClipTrainConfig, TINY, ["max_steps=4"])
    stopped = ClipStage(config, tiny_prepared)
    fit(stopped, config, tmp_path / "resumed", progress=False, stop_at=3)
    assert stopped.metrics is None and not (tmp_path / "resumed" / "model.safetensors").exists()
    quick_eval = ("--set", "val_pairs=8")
    main(_args(tiny_prepared, tmp_path / "resumed", "--resume", "--max-steps", "4", *quick_eval))
    main(_args(tiny_prepared, tmp_path / "straight", "--max-steps", "4", *quick_eval))
    resumed, straight = _losses(tmp_path / "resumed"), _losses(tmp_path / "straight")
    assert sorted(resumed) == [1, 2, 3, 4]
    assert resumed[4] == pytest.approx(straight[4], rel=1e-5)
    assert resumed[3] == pytest.approx(straight[3], rel=1e-5)


def test_two_learning_rates_and_clipping_reach_the_optimizer(tiny_prepared, tmp_path):
    config = load_config(ClipTrainConfig, TINY, ["max_steps=1", "max_grad_norm=1e-6"])
    stage = ClipStage(config, tiny_prepared)
    fit(stage, config, tmp_path, progress=False, stop_at=0)  # builds the model and optimiser, trains nothing
    groups = stage.trainable_parameters()
    assert [g["lr"] for g in groups] == [config.learning_rate, config.text_learning_rate]
    text_ids = {id(p) for p in stage.model.text_parameters()}
    assert text_ids == {id(p) for p in groups[1]["params"]}
    before = {k: v.clone() for k, v in stage.model.trained_state_dict().items()}
    clip_norm = stage.accelerator.clip_grad_norm_
    loss = stage.loss(0, 0)["loss"]
    loss.backward()
    norm = clip_norm([p for g in groups for p in g["params"]], 1e-6)  # as loop.fit flattens the groups
    assert float(norm) > 0
    grads = [p.grad for g in groups for p in g["params"] if p.grad is not None]
    assert float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) <= 1.1e-6
    after = stage.model.trained_state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
