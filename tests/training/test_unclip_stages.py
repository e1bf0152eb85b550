"""The unCLIP stages end to end on the tiny data: a tiny Brain-CLIP and VAE trained by their own stages, then the
prior and the decoder (trained, stopped, resumed, exported, attached to a pipeline folder that then generates)."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dallebrain.training.common import check_pipeline_parts
from dallebrain.training.config import load_config
from dallebrain.training.decoder import DecoderTrainConfig
from dallebrain.training.decoder import main as decoder_main
from dallebrain.training.prior import PriorTrainConfig
from dallebrain.training.prior import main as prior_main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PROMPT = "axial T1-weighted slice of a healthy 30-year-old man at the level of the lateral ventricles"


@pytest.fixture(scope="module")
def parts(tiny_prepared, tmp_path_factory) -> Path:
    """clip/ and vae/ trained 3 steps each by their stages' main()."""
    from dallebrain.training.clip import main as clip_main
    from dallebrain.training.vae import main as vae_main

    root = tmp_path_factory.mktemp("unclip-stages")
    for name, main in (("clip", clip_main), ("vae", vae_main)):
        main(["--data", str(tiny_prepared), "--out", str(root / name), "--config", str(CONFIGS / f"{name}.tiny.json"),
              "--no-progress"])
    return root


def _steps(path: Path) -> list[int]:
    with open(path) as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_configs_load():
    for cls, stage in ((PriorTrainConfig, "prior"), (DecoderTrainConfig, "decoder")):
        assert load_config(cls, CONFIGS / f"{stage}.base.json").max_steps > 1000
        assert load_config(cls, CONFIGS / f"{stage}.tiny.json").max_steps == 3


def _train(main, args: list[str], pipeline: Path) -> tuple[dict, dict]:
    """Stop after 2 of 3 steps (as a preempted job), then resume to the end and attach to `pipeline`."""
    first = main(args + ["--max-steps", "2"])
    return first, main(args + ["--resume", "--max-steps", "3", "--into", str(pipeline)])


@pytest.fixture(scope="module")
def prior_run(parts, tiny_prepared):
    args = ["--data", str(tiny_prepared), "--clip", str(parts / "clip"), "--out", str(parts / "prior"),
            "--config", str(CONFIGS / "prior.tiny.json"), "--no-progress"]
    return _train(prior_main, args, parts / "pipeline")


@pytest.fixture(scope="module")
def decoder_run(parts, tiny_prepared, prior_run):
    args = ["--data", str(tiny_prepared), "--clip", str(parts / "clip"), "--vae", str(parts / "vae"),
            "--out", str(parts / "decoder"), "--config", str(CONFIGS / "decoder.tiny.json"), "--no-progress"]
    return _train(decoder_main, args, parts / "pipeline")


def test_prior_trains_resumes_exports_and_attaches(parts, prior_run):
    from dallebrain.models.prior import load_prior

    first, resumed = prior_run
    out, pipeline = parts / "prior", parts / "pipeline"
    assert first["steps"] == 2 and (resumed["resumed_from"], resumed["steps"]) == (2, 3)
    assert _steps(out / "losses.csv") == [1, 2, 3]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("cosine_prior_to_true", "cosine_random_pairs", "retrieval_top1", "retrieval_top1_chance"):
        assert math.isfinite(metrics[key]), key
    prior, _ = load_prior(out)
    assert prior.config.embedding_dim == 32 and float(prior.clip_std.min()) > 0
    assert (pipeline / "prior" / "diffusion_pytorch_model.safetensors").is_file()
    assert (pipeline / "clip" / "model.safetensors").is_file()


def test_decoder_trains_resumes_exports_and_attaches(parts, decoder_run):
    from dallebrain.models.decoder import load_decoder

    first, resumed = decoder_run
    out, pipeline = parts / "decoder", parts / "pipeline"
    assert first["steps"] == 2 and (resumed["resumed_from"], resumed["steps"]) == (2, 3)
    assert _steps(out / "losses.csv") == [1, 2, 3]
    unet, schedule = load_decoder(out)
    assert unet.config.encoder_hid_dim == 32 and schedule["prediction_type"] == "epsilon"
    assert (pipeline / "decoder" / "diffusion_pytorch_model.safetensors").is_file()
    assert (pipeline / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    info = json.loads((pipeline / "dallebrain.json").read_text())
    assert info["image_size"] == 64
    assert info["unclip"] == {"prior": {"prior_steps": 3, "embed_dim": 32}, "decoder": {"decoder_steps": 3}}


def test_the_assembled_pipeline_generates(parts, decoder_run):
    from dallebrain.pipelines.unclip import UnCLIPPipeline

    pipe = UnCLIPPipeline.from_pretrained(parts / "pipeline")
    result = pipe(PROMPT, n=2, seed=0, steps=2, prior_steps=2)
    assert result.images.shape == (2, 64, 64) and 0 <= result.images.min() and result.images.max() <= 1
    np.testing.assert_array_equal(result.images, pipe(PROMPT, n=2, seed=0, steps=2, prior_steps=2).images)
    assert not np.array_equal(result.images, pipe(PROMPT, n=2, seed=1, steps=2, prior_steps=2).images)


def test_a_pipeline_with_another_vae_is_refused(parts, tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "vae").mkdir()
    save_file({"w": torch.zeros(2)}, str(tmp_path / "vae" / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(ValueError, match="other weights"):
        check_pipeline_parts(tmp_path, {"vae": parts / "vae"})
    (tmp_path / "ldm").mkdir()
    (tmp_path / "ldm" / "model_index.json").write_text("{}")
    check_pipeline_parts(tmp_path / "ldm", {"vae": parts / "vae"})  # a pipeline without a vae/ yet: fine
    check_pipeline_parts(tmp_path / "new", {"vae": parts / "vae"})  # a new folder: an unCLIP pipeline assembled
    # neither: the trained stage would be copied into it after all its training (was accepted)
    (tmp_path / "afile").write_text("x")
    for folder in (tmp_path / "vae", tmp_path / "afile"):
        with pytest.raises(ValueError, match="not a pipeline folder"):
            check_pipeline_parts(folder, {"vae": parts / "vae"})


def test_dallebrain_json_merges_key_by_key_and_none_never_erases(tmp_path):
    """The one writer's rule, in the order the recipe's lanes may reach it: the LDM export, the prior, the
    decoder (which may not know the grid), then the LDM again (a longer run)."""
    from dallebrain.pipelines.export import update_model_info

    grid = {"shape": [64, 64, 64], "spacing_mm": 3.0}
    update_model_info(tmp_path, {"image_size": 64, "grid": grid, "ldm_steps": 3, "trained_on": {"slices": 10}})
    update_model_info(tmp_path, {"unclip": {"prior": {"prior_steps": 3}}})
    update_model_info(tmp_path, {"image_size": 64, "grid": None, "unclip": {"decoder": {"decoder_steps": 2}}})
    merged = update_model_info(tmp_path, {"grid": None, "ldm_steps": 6, "trained_on": {"subjects": 2}})
    assert merged == {"image_size": 64, "grid": grid, "ldm_steps": 6, "trained_on": {"slices": 10, "subjects": 2},
                      "unclip": {"prior": {"prior_steps": 3}, "decoder": {"decoder_steps": 2}}}
    assert json.loads((tmp_path / "dallebrain.json").read_text()) == merged


def test_decoder_warm_starts_from_an_ldm_unet_with_the_same_blocks(parts, tiny_prepared, tmp_path, capsys):
    """The LDM's denoising blocks carry over; the cross-attention keys/values (text width 384, not the decoder's
    32) and the image projection start fresh."""
    from safetensors.torch import load_file

    from dallebrain.models.unet import UnetConfig, build_unet

    torch.manual_seed(1)
    ldm_unet = build_unet(UnetConfig(sample_size=16, block_out_channels=[16, 32], attention_head_dim=8,
                                     cross_attention_levels=1, norm_num_groups=8))
    ldm_unet.save_pretrained(tmp_path / "ldm" / "unet", safe_serialization=True)
    out = tmp_path / "decoder"
    decoder_main(["--data", str(tiny_prepared), "--clip", str(parts / "clip"), "--vae", str(parts / "vae"),
                  "--out", str(out), "--config", str(CONFIGS / "decoder.tiny.json"), "--no-progress",
                  "--max-steps", "2", "--set", f"init_from={tmp_path / 'ldm'}", "--set", "learning_rate=1e-12",
                  "--set", "ema_decay=0"])
    assert "tensors copied" in capsys.readouterr().err
    source = ldm_unet.state_dict()
    saved = load_file(str(out / "diffusion_pytorch_model.safetensors"))
    conv = "down_blocks.0.resnets.0.conv1.weight"
    assert torch.allclose(saved[conv].float(), source[conv], atol=1e-6)  # copied (a 1e-12 step moves nothing)
    key = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    assert saved[key].shape != source[key].shape  # fresh: another width
    # a bare UNet folder says nothing about its objective: the decoder predicts the noise, as before
    assert json.loads((out / "scheduler_config.json").read_text())["prediction_type"] == "epsilon"


def test_a_decoder_warm_started_from_a_velocity_ldm_predicts_the_velocity(parts, tiny_prepared, tmp_path):
    """The objective follows the warm start (the pipeline's scheduler/), so the copied blocks keep theirs; the
    exported schedule says so and the assembled unCLIP pipeline samples with it. A set prediction_type wins."""
    from dallebrain.models.decoder import load_decoder
    from dallebrain.models.unet import UnetConfig, build_unet, noise_scheduler_config

    build_unet(UnetConfig(sample_size=16, block_out_channels=[16, 32], attention_head_dim=8, cross_attention_levels=1,
                          norm_num_groups=8)).save_pretrained(tmp_path / "ldm" / "unet", safe_serialization=True)
    (tmp_path / "ldm" / "scheduler").mkdir()
    (tmp_path / "ldm" / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(noise_scheduler_config("v_prediction")))
    common = ["--data", str(tiny_prepared), "--clip", str(parts / "clip"), "--vae", str(parts / "vae"),
              "--config", str(CONFIGS / "decoder.tiny.json"), "--no-progress", "--max-steps", "1",
              "--set", f"init_from={tmp_path / 'ldm'}"]
    decoder_main(common + ["--out", str(tmp_path / "v")])
    assert load_decoder(tmp_path / "v")[1]["prediction_type"] == "v_prediction"
    decoder_main(common + ["--out", str(tmp_path / "eps"), "--set", "prediction_type=epsilon"])
    assert load_decoder(tmp_path / "eps")[1]["prediction_type"] == "epsilon"


def test_a_decoder_prediction_type_no_run_can_use_is_refused_before_any_work(parts, tmp_path):
    with pytest.raises(ValueError, match="prediction_type must be one of epsilon, v_prediction, got 'x0'"):
        decoder_main(["--data", str(tmp_path / "absent"), "--clip", str(parts / "clip"), "--vae", str(parts / "vae"),
                      "--out", str(tmp_path / "out"), "--config", str(CONFIGS / "decoder.tiny.json"),
                      "--set", "prediction_type=x0"])
    assert not (tmp_path / "out").exists()


def test_matching_weights_refuse_a_unet_sharing_nothing(tmp_path):
    from dallebrain.models.unet import UnetConfig, build_unet, load_matching_weights

    build_unet(UnetConfig(sample_size=8, block_out_channels=[8, 16], attention_head_dim=4, cross_attention_levels=1,
                          norm_num_groups=4, latent_channels=3)).save_pretrained(tmp_path / "a")
    other = build_unet(UnetConfig(sample_size=8, block_out_channels=[12, 24], attention_head_dim=4,
                                  cross_attention_levels=1, norm_num_groups=4, latent_channels=5))
    with pytest.raises(ValueError, match="shares no tensor"):
        load_matching_weights(other, tmp_path / "a")
    with pytest.raises(ValueError, match="no UNet weights"):
        load_matching_weights(other, tmp_path / "empty")


@pytest.mark.slow
def test_a_compiled_decoder_run_saves_what_an_eager_run_saves(parts, tiny_prepared, tmp_path):
    """compile=true on the decoder stage: trains through torch.compile's module, and the exported weights have the
    eager run's names and (within compiled kernels' rounding) values, every tensor moved from where it started (a
    compiled run whose weights never moved would also match an eager run that barely moves them)."""
    from safetensors.torch import load_file

    saved = {}
    for name, lr, compiled in (("start", "1e-12", False), ("eager", "1e-2", False), ("compiled", "1e-2", True)):
        out = tmp_path / name
        decoder_main(["--data", str(tiny_prepared), "--clip", str(parts / "clip"), "--vae", str(parts / "vae"),
                      "--out", str(out), "--config", str(CONFIGS / "decoder.tiny.json"), "--no-progress",
                      "--set", f"compile={str(compiled).lower()}", "--set", f"learning_rate={lr}",
                      "--set", "ema_decay=0", "--set", "weight_decay=0"])
        saved[name] = {k: v.float() for k, v in load_file(str(out / "diffusion_pytorch_model.safetensors")).items()}
    assert saved["compiled"].keys() == saved["eager"].keys()
    # the same updates: Adam's first steps at lr 1e-2 move every weight about lr whatever its gradient's size, so a
    # gradient near zero may round to the other sign compiled (measured: max difference 2e-3, the updates' cosine
    # 1.000); a run that trains nothing has no update to agree with
    updates = {run: torch.cat([(saved[run][k] - saved["start"][k]).ravel() for k in saved["start"]])
               for run in ("eager", "compiled")}
    assert float(torch.nn.functional.cosine_similarity(updates["eager"], updates["compiled"], dim=0)) > 0.999
    assert all(torch.allclose(saved["compiled"][k], saved["eager"][k], atol=1e-2) for k in saved["eager"])
    moved = [float((saved["compiled"][k] - saved["start"][k]).abs().max()) for k in saved["start"]]
    assert min(moved) > 1e-4 and sorted(moved)[len(moved) // 2] > 1e-2  # every tensor trained


def test_a_decoder_with_attributes_learns_them_from_the_table_and_the_route_reads_them(parts, tiny_prepared,
                                                                                     decoder_run, tmp_path,
                                                                                     monkeypatch):
    """unet.attributes: the warm start copies the LDM's attribute embedding; training feeds each row's
    ground-truth attributes (metadata.parquet), dropped per attribute and with the embedding; the assembled unCLIP
    route reads the prompt's attributes (an age changes the slice at a fixed seed), guided in three rows
    [zero embedding + unconditional attributes, zero embedding + attributes, embedding + attributes] when the
    attribute scale differs, and variations (nothing stated) run on the unstated row with plain guidance."""
    import shutil

    from safetensors.torch import load_file

    from dallebrain.data.dataset import SliceDataset
    from dallebrain.models.conditioning import (
        feature_width,
        features_batch,
        table_attributes,
        unstated_features,
        uses_attributes,
    )
    from dallebrain.models.decoder import load_decoder
    from dallebrain.models.unet import UnetConfig, build_unet
    from dallebrain.pipelines.unclip import UnCLIPPipeline
    from dallebrain.training import decoder as stage

    torch.manual_seed(2)
    ldm_unet = build_unet(UnetConfig(sample_size=16, block_out_channels=[16, 32], attention_head_dim=8,
                                     cross_attention_levels=1, norm_num_groups=8, attributes=True))
    with torch.no_grad():  # a trained LDM's attribute embedding is not zero: make this one say something
        ldm_unet.class_embedding.linear_2.weight.normal_(0, 0.5)
    ldm_unet.save_pretrained(tmp_path / "ldm" / "unet", safe_serialization=True)
    seen = []
    real_inputs = stage.decoder_inputs
    monkeypatch.setattr(stage, "decoder_inputs", lambda e, a=None: seen.append((e.clone(), a.clone())) or
                        real_inputs(e, a))
    truth = features_batch(table_attributes(SliceDataset(tiny_prepared, "train").table))
    unstated = unstated_features(1)

    def run(name: str, steps: int, *settings: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        seen.clear()
        decoder_main(["--data", str(tiny_prepared), "--clip", str(parts / "clip"), "--vae", str(parts / "vae"),
                      "--out", str(tmp_path / name), "--config", str(CONFIGS / "decoder.tiny.json"),
                      "--no-progress", "--max-steps", str(steps), "--set", f"init_from={tmp_path / 'ldm'}",
                      "--set", "unet.attributes=true", "--set", "ema_decay=0", "--set", "learning_rate=1e-12",
                      *[a for s in settings for a in ("--set", s)]])
        return list(seen)

    def from_table(attributes: torch.Tensor) -> bool:  # every row is some slice's ground truth, all stated
        return all(bool((truth == row).all(dim=1).any()) for row in attributes)

    # nothing dropped: every row's own attributes and embedding
    for embeds, attributes in run("decoder", 2, "attribute_dropout=0", "embed_dropout=0", "embed_only_dropout=0"):
        assert attributes.shape == (embeds.shape[0], feature_width()) and from_table(attributes)
        assert (embeds != 0).any(dim=1).all()
    # the embedding dropped: the attributes with it (the unconditional model)
    for embeds, attributes in run("drop-all", 1, "embed_dropout=1"):
        assert (embeds == 0).all() and torch.equal(attributes, unstated.expand_as(attributes))
    # the embedding alone dropped: the attributes stay (attribute guidance's "attributes alone" input)
    for embeds, attributes in run("drop-embed", 1, "attribute_dropout=0", "embed_dropout=0", "embed_only_dropout=1"):
        assert (embeds == 0).all() and from_table(attributes)
    # every attribute dropped, the embedding kept
    for embeds, attributes in run("drop-attributes", 1, "attribute_dropout=1", "embed_dropout=0"):
        assert (embeds != 0).any(dim=1).all() and torch.equal(attributes, unstated.expand_as(attributes))
    out = tmp_path / "decoder"
    unet, _ = load_decoder(out)
    assert uses_attributes(unet) and unet.config.projection_class_embeddings_input_dim == feature_width()
    saved = load_file(str(out / "diffusion_pytorch_model.safetensors"))
    key = "class_embedding.linear_2.weight"
    assert torch.allclose(saved[key].float(), ldm_unet.state_dict()[key], atol=1e-3)  # copied from the LDM

    pipeline = tmp_path / "pipeline"
    shutil.copytree(parts / "pipeline", pipeline)
    shutil.rmtree(pipeline / "decoder")
    shutil.copytree(out, pipeline / "decoder", ignore=shutil.ignore_patterns("checkpoints", "cache", "samples"))
    pipe = UnCLIPPipeline.from_pretrained(pipeline)
    young, old = (PROMPT.replace("30-year-old", f"{a}-year-old") for a in (20, 85))
    a = pipe(young, n=1, seed=0, steps=2, prior_steps=2)
    b = pipe(old, n=1, seed=0, steps=2, prior_steps=2)
    assert not np.allclose(a.images, b.images, atol=1e-4)  # the age reached the decoder
    np.testing.assert_array_equal(a.images, pipe(young, n=1, seed=0, steps=2, prior_steps=2).images)
    # the decoder's own attribute guidance (dallebrain.json unclip.sampling), recorded in the settings
    pipe.info = {**pipe.info, "unclip": {**pipe.info.get("unclip", {}), "sampling": {"attribute_guidance": 5.0}}}
    calls = []
    real_unet = pipe.unet.forward
    monkeypatch.setattr(pipe.unet, "forward", lambda x, t, **kw: calls.append(kw) or real_unet(x, t, **kw))
    result = pipe(young, n=1, seed=0, steps=1, prior_steps=1)
    assert result.settings["attribute_guidance"] == 5.0
    rows = calls[0]["added_cond_kwargs"]["image_embeds"]
    labels = calls[0]["class_labels"]
    assert rows.shape[0] == labels.shape[0] == 3 * pipe.images_per_pass
    k = pipe.images_per_pass
    assert (rows[:2 * k] == 0).all() and (rows[2 * k:] != 0).any()
    assert torch.equal(labels[:k], unstated.expand(k, -1)) and torch.equal(labels[k:2 * k], labels[2 * k:])
    assert not torch.equal(labels[k:2 * k], labels[:k])
    calls.clear()
    pipe.variations(np.full((64, 64), 0.5, np.float32), n=1, seed=0, steps=1)
    assert calls[0]["class_labels"].shape[0] == 2 * pipe.images_per_pass  # plain guidance: two rows
    assert torch.equal(calls[0]["class_labels"], unstated.expand(2 * pipe.images_per_pass, -1))
