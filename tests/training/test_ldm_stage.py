import csv
import json

import numpy as np
import pytest
import torch

from dallebrain.training import ldm
from dallebrain.training.config import load_config
from testing_constants import CONFIGS

LOSS_COLUMNS = ("step", "loss", "mse", "lr")  # of losses.csv: all but the throughput


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


def test_ldm_writes_a_complete_pipeline_folder(tiny_pipeline):
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_pipeline / part).is_dir(), part
    index = json.loads((tiny_pipeline / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["text_encoder"] == ["transformers", "BertModel"]
    info = json.loads((tiny_pipeline / "dallebrain.json").read_text())
    assert info["image_size"] == 64 and info["grid"]["spacing_mm"] == 3.0
    rows = list(csv.DictReader(open(tiny_pipeline / "losses.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3] and all(float(r["loss"]) > 0 for r in rows)
    assert not list(tiny_pipeline.rglob("*.bin")) and not list(tiny_pipeline.rglob("*.pt"))


def test_cache_is_built_once_and_reused(tiny_prepared, tiny_vae, tmp_path):
    args = ["--data", str(tiny_prepared), "--out", str(tmp_path), "--vae", str(tiny_vae), "--config",
            str(CONFIGS / "ldm.tiny.json"), "--no-progress", "--max-steps", "2"]
    ldm.main(args)
    stamp = (tmp_path / "cache" / "latents.npy").stat().st_mtime_ns
    ldm.main([*args[:-1], "3", "--resume"])
    assert (tmp_path / "cache" / "latents.npy").stat().st_mtime_ns == stamp
    rows = list(csv.DictReader(open(tmp_path / "losses.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]


def test_a_stopped_and_resumed_run_is_the_uninterrupted_one(tiny_prepared, tiny_vae, tiny_pipeline, tmp_path):
    """Stopped after 2 of 3 steps (as a preempted job) and resumed, the LDM ends where tiny_pipeline's
    uninterrupted run did: same losses, same exported (EMA) weights. So the EMA copy travels in the
    checkpoint and every random draw of a step is restored or recomputed."""
    from dallebrain.data.dataset import SliceDataset
    from dallebrain.training.loop import fit

    config = load_config(ldm.LdmTrainConfig, CONFIGS / "ldm.tiny.json")
    dataset = SliceDataset(tiny_prepared, "train", max_rows=config.max_rows, seed=config.seed)
    for resume, stop_at in ((False, 2), (True, None)):
        stage = ldm.LdmStage(config, dataset, tiny_vae, None, tmp_path, progress=False)
        fit(stage, config, tmp_path, resume=resume, progress=False, stop_at=stop_at)
    rows, straight = (list(csv.DictReader(open(folder / "losses.csv"))) for folder in (tmp_path, tiny_pipeline))
    assert [[r[c] for c in LOSS_COLUMNS] for r in rows] == [[r[c] for c in LOSS_COLUMNS] for r in straight]
    resumed, reference = _weights(tmp_path / "unet"), _weights(tiny_pipeline / "unet")
    assert resumed.keys() == reference.keys() and all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_the_ldm_learns_to_denoise_its_training_slices(tiny_prepared, tiny_vae, tmp_path):
    """A short overfit on 4 slices: the (EMA) UNet's denoising error on them, under fixed noise and
    timesteps, falls well below the untrained UNet's."""
    from dallebrain.data.dataset import SliceDataset
    from dallebrain.models.conditioning import feature_width
    from dallebrain.training.diffusion import denoising_loss
    from dallebrain.training.loop import fit

    config = load_config(ldm.LdmTrainConfig, CONFIGS / "ldm.tiny.json",
                         ["max_steps=1000", "max_rows=4", "learning_rate=3e-3", "caption_dropout=0",
                          "checkpoint_every=1000"])
    dataset = SliceDataset(tiny_prepared, "train", max_rows=4, seed=0)
    stage = ldm.LdmStage(config, dataset, tiny_vae, None, tmp_path, progress=False)
    rows = np.arange(len(stage.cache)).repeat(8)
    latents = stage.cache.latents[rows].float()
    states = stage.cache.text(rows, np.zeros_like(rows)).float()
    attributes = stage.attributes[rows]  # each slice's ground truth, from metadata.parquet
    assert stage.attributes.shape == (len(dataset), feature_width())

    def error(unet) -> float:
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(0)
            return float(denoising_loss(lambda x, t: unet(x, t, encoder_hidden_states=states,
                                                          class_labels=attributes).sample,
                                        stage.noise, latents, snr_gamma=0)["mse"])

    untrained = error(stage.unet)
    fit(stage, config, tmp_path, progress=False, stop_at=15)  # lr stays near its peak: 15 of 1000 steps
    assert error(stage.final_unet()) < 0.8 * untrained


@pytest.mark.parametrize("caption_only", [0.0, 1.0])
def test_caption_only_dropout_keeps_the_attributes(tiny_prepared, tiny_vae, tmp_path, caption_only):
    """caption_only_dropout replaces captions by "" while the attributes stay stated (the attribute path must
    carry the slice alone); caption_dropout drops both."""
    from dallebrain.data.dataset import SliceDataset
    from dallebrain.models.conditioning import unstated_features

    config = load_config(ldm.LdmTrainConfig, CONFIGS / "ldm.tiny.json",
                         ["caption_dropout=0", "attribute_dropout=0", f"caption_only_dropout={caption_only}"])
    from accelerate import Accelerator

    stage = ldm.LdmStage(config, SliceDataset(tiny_prepared, "train", max_rows=8, seed=0), tiny_vae, None, tmp_path,
                         progress=False)
    stage.setup(Accelerator(cpu=True))
    seen = {}
    forward = stage.unet.forward

    def spy(x, t, encoder_hidden_states=None, class_labels=None, **kw):
        seen.update(states=encoder_hidden_states, labels=class_labels)
        return forward(x, t, encoder_hidden_states=encoder_hidden_states, class_labels=class_labels, **kw)

    stage.unet.forward = spy
    stage.loss(step=0, micro=0)
    uncond = stage.cache.uncond.float().expand_as(seen["states"])
    assert torch.equal(seen["states"], uncond) == (caption_only == 1.0)
    assert not (seen["labels"] == unstated_features(1)).all(dim=1).any()  # every row keeps its attributes


def test_a_fine_level_stage_trains_on_the_wider_ground_truth(tiny_prepared, tiny_vae, tmp_path):
    """unet.fine_level=true: the table's attributes in the fine level layout reach the UNet, whose projection is
    that wide."""
    from accelerate import Accelerator

    from dallebrain.data.dataset import SliceDataset
    from dallebrain.models.conditioning import feature_width, fine_level_of

    config = load_config(ldm.LdmTrainConfig, CONFIGS / "ldm.tiny.json", ["unet.fine_level=true", "attribute_dropout=0"])
    dataset = SliceDataset(tiny_prepared, "train", max_rows=8, seed=0)
    stage = ldm.LdmStage(config, dataset, tiny_vae, None, tmp_path, progress=False)
    assert stage.attributes.shape == (len(dataset), feature_width(True)) and fine_level_of(stage.unet)
    levels = {round(float(v), 1) for v in dataset.table["slice_mm"]}
    assert len({tuple(r[-4:].tolist()) for r in stage.attributes}) >= min(len(levels), 2)
    stage.setup(Accelerator(cpu=True))
    assert all(torch.isfinite(v).all() for v in stage.loss(step=0, micro=0).values())
    assert isinstance(stage.trainable_parameters(), list) and not isinstance(stage.trainable_parameters()[0], dict)


def test_the_attribute_projection_can_train_at_its_own_rate(tiny_prepared, tiny_vae, tmp_path):
    """attribute_learning_rate_scale: the class embedding's parameters in their own AdamW group at the scaled
    rate, every other UNet parameter at learning_rate; a scale that is not positive is refused in one line."""
    from dallebrain.data.dataset import SliceDataset

    config = load_config(ldm.LdmTrainConfig, CONFIGS / "ldm.tiny.json", ["attribute_learning_rate_scale=10"])
    stage = ldm.LdmStage(config, SliceDataset(tiny_prepared, "train", max_rows=8, seed=0), tiny_vae, None, tmp_path,
                         progress=False)
    rest, projection = stage.trainable_parameters()
    assert projection["lr"] == pytest.approx(10 * config.learning_rate) and rest["lr"] == config.learning_rate
    assert {id(p) for p in projection["params"]} == {id(p) for p in stage.unet.class_embedding.parameters()}
    assert len(rest["params"]) + len(projection["params"]) == len(list(stage.unet.parameters()))
    with pytest.raises(ValueError, match="attribute_learning_rate_scale must be a positive number"):
        load_config(ldm.LdmTrainConfig, CONFIGS / "ldm.tiny.json", ["attribute_learning_rate_scale=0"]).check()


def test_unet_architecture_is_nested_and_set_by_dotted_keys(tmp_path):
    tiny = load_config(ldm.LdmTrainConfig, CONFIGS / "ldm.tiny.json", ["unet.attention_head_dim=2"])
    assert tiny.unet.block_out_channels == [8, 16] and tiny.unet.attention_head_dim == 2
    assert load_config(ldm.LdmTrainConfig, CONFIGS / "ldm.base.json").unet.block_out_channels == [64, 128, 256]
    unet = ldm.unet_config_of(tiny, latent_channels=3, sample_size=16)
    assert (unet.latent_channels, unet.sample_size, unet.norm_num_groups) == (3, 16, 4)
    with pytest.raises(ValueError, match=r"now unet\.block_out_channels"):
        load_config(ldm.LdmTrainConfig, None, ["block_out_channels=[8,16]"])
    flat = tmp_path / "flat.json"
    flat.write_text('{"layers_per_block": 2}')
    with pytest.raises(ValueError, match=r"layers_per_block \(now unet\.layers_per_block\)"):
        load_config(ldm.LdmTrainConfig, flat)
    with pytest.raises(ValueError, match="taken from the VAE"):
        load_config(ldm.LdmTrainConfig, None, ["unet.sample_size=8"])


def test_resume_without_flag_is_refused(tiny_prepared, tiny_vae, tiny_pipeline):
    with pytest.raises(ValueError, match="--resume"):
        ldm.main(["--data", str(tiny_prepared), "--out", str(tiny_pipeline), "--vae", str(tiny_vae), "--config",
                  str(CONFIGS / "ldm.tiny.json"), "--no-progress"])


def test_a_v_prediction_ldm_trains_on_velocity_and_exports_its_scheduler(tiny_prepared, tiny_vae, tmp_path):
    """prediction_type=v_prediction: the training loss targets the velocity, and the exported scheduler (ours
    and a stock diffusers client read the same file) samples with it, so generation reads the UNet's output
    as what it was trained to predict."""
    from diffusers import DPMSolverMultistepScheduler

    from dallebrain.data.dataset import SliceDataset
    from dallebrain.pipelines.text2mri import Text2MRIPipeline

    config = load_config(ldm.LdmTrainConfig, CONFIGS / "ldm.tiny.json", ["prediction_type=v_prediction"])
    stage = ldm.LdmStage(config, SliceDataset(tiny_prepared, "train", max_rows=8, seed=0), tiny_vae, None,
                         tmp_path, progress=False)
    assert stage.noise.config.prediction_type == "v_prediction"
    ldm.main(["--data", str(tiny_prepared), "--out", str(tmp_path), "--vae", str(tiny_vae), "--config",
              str(CONFIGS / "ldm.tiny.json"), "--no-progress", "--max-steps", "2", "--set",
              "prediction_type=v_prediction"])
    written = json.loads((tmp_path / "scheduler" / "scheduler_config.json").read_text())
    assert written["prediction_type"] == "v_prediction" and written["algorithm_type"] == "dpmsolver++"
    assert DPMSolverMultistepScheduler.from_pretrained(tmp_path / "scheduler").config.prediction_type == "v_prediction"
    pipe = Text2MRIPipeline.from_pretrained(tmp_path)
    assert pipe.scheduler_config["prediction_type"] == "v_prediction"
    images = pipe("axial T1-weighted MRI slice", n=1, seed=0, steps=3).images
    assert images.shape == (1, 64, 64) and np.isfinite(images).all()


def test_an_epsilon_ldm_exports_an_epsilon_scheduler(tiny_pipeline):
    written = json.loads((tiny_pipeline / "scheduler" / "scheduler_config.json").read_text())
    assert written["prediction_type"] == "epsilon"


@pytest.mark.parametrize("setting, message", [("block_out_channels=[8,16]", "now unet.block_out_channels"),
                                              ("unet.sample_size=8", "taken from the VAE"),
                                              ("unet.layers_per_block=two", "unet.layers_per_block=two"),
                                              ("prediction_type=sample", "prediction_type must be one of"),
                                              ("modality_weights=FLAIR", "modality_weights: expected"),
                                              ("modality_weights=FLAIR=-1", "'FLAIR=-1'"),
                                              ("modality_weights=FLAIR=nan", "'FLAIR=nan'")])
def test_a_bad_architecture_setting_is_one_line_and_exit_2(setting, message, tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "dallebrain.cli", "train", "ldm", "--data", str(tmp_path),
                             "--out", str(tmp_path / "out"), "--vae", str(tmp_path), "--set", setting],
                            capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not (tmp_path / "out").exists()


def test_modality_weights_draw_each_contrast_as_often_as_asked(tiny_prepared):
    """modality_weights=FLAIR=3: FLAIR rows are drawn three times as often as each other contrast's, from each
    step's own generator (a resumed run draws the same rows); no weights: every row alike (the old draws)."""
    import pandas as pd

    from dallebrain.data.dataset import batch_indices
    from dallebrain.training.diffusion import SeedStream, micro_batch

    table = pd.DataFrame({"modality": ["T1w"] * 300 + ["T2w"] * 300 + ["FLAIR"] * 300})
    weights = ldm.row_weights(table, "FLAIR=3")
    assert weights.sum() == pytest.approx(1.0)
    assert weights[600] == pytest.approx(3 * weights[0])
    drawn = np.concatenate([micro_batch(900, 64, 0, step, 0, 0, SeedStream.CAPTIONS, weights)[0]
                            for step in range(200)])
    share = np.bincount(np.asarray(table["modality"].iloc[drawn].map({"T1w": 0, "T2w": 1, "FLAIR": 2})),
                        minlength=3) / len(drawn)
    assert share == pytest.approx([0.2, 0.2, 0.6], abs=0.02)
    again = micro_batch(900, 64, 0, 7, 0, 0, SeedStream.CAPTIONS, weights)[0]
    assert np.array_equal(again, micro_batch(900, 64, 0, 7, 0, 0, SeedStream.CAPTIONS, weights)[0])
    assert ldm.row_weights(table, "") is None
    assert np.array_equal(batch_indices(900, 8, 0, 3), batch_indices(900, 8, 0, 3, weights=None))
    with pytest.raises(ValueError, match="names PDw, not in the data"):
        ldm.row_weights(table, "PDw=2")
    assert ldm.parse_modality_weights("FLAIR=2, PDw=0.5") == {"FLAIR": 2.0, "PDw": 0.5}
