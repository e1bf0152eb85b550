"""The shipped-model recipe end to end with tiny configs: every command of the chain, then generation from
the fp16 release folder on both routes. Slow (a few minutes): `pytest -m slow tests/test_recipe.py`."""

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def recipe_steps_in_process(request, monkeypatch):
    """Each recipe's `dallebrain` steps run in the test process (cli_inprocess.RecipeSubprocess): a fresh
    interpreter per step spent most of these tests' time importing torch and diffusers. The slow whole-chain test
    keeps real subprocesses, so shipped_model.run's own command line stays tested."""
    if request.node.get_closest_marker("slow"):
        return
    monkeypatch.syspath_prepend(str(ROOT / "recipes"))
    import shipped_model

    from cli_inprocess import RecipeSubprocess

    monkeypatch.setattr(shipped_model, "subprocess", RecipeSubprocess())


@pytest.mark.slow
def test_recipe_runs_the_whole_chain_and_the_release_generates(tmp_path):
    spec = importlib.util.spec_from_file_location("recipe", ROOT / "recipes" / "shipped_model.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    release = recipe.main(["--work", str(tmp_path), "--subjects", "4", "--configs", "tiny", "--size", "64"])
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "clip", "prior", "decoder"):
        assert (release / part).is_dir(), part
    assert not list(release.rglob("checkpoints")) and (release / "SHA256SUMS.json").exists()
    log = json.loads((tmp_path / "recipe_log.json").read_text())
    assert len(log["steps"]) == 7
    from dallebrain.api import load_pipeline

    for route in ("ldm", "unclip"):
        result = load_pipeline(release, route=route, device="cpu")("axial T1-weighted brain MRI", n=1, steps=2)
        assert result.images.shape == (1, 64, 64) and np.isfinite(result.images).all()
    # a rerun skips every finished step
    again = subprocess.run([sys.executable, str(ROOT / "recipes" / "shipped_model.py"), "--work", str(tmp_path),
                            "--subjects", "4", "--configs", "tiny", "--size", "64"], capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0 and "+ dallebrain" not in again.stdout


def test_attribute_recipe_refuses_an_attribute_conditioned_base(tiny_pipeline, tmp_path):
    """Its stages fine-tune the text-only v1; given a model that already takes attributes (as the installed
    default does once v2 is in), it stops at once, naming what to give instead, before simulating anything."""
    result = subprocess.run([sys.executable, str(ROOT / "recipes" / "attribute_finetune.py"), "--work",
                             str(tmp_path / "w"), "--base", str(tiny_pipeline)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0 and "already attribute-conditioned" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "w").exists()


def _v_recipe():
    spec = importlib.util.spec_from_file_location("v_recipe", ROOT / "recipes" / "v_prediction_finetune.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    return recipe


def test_v_prediction_recipe_replaces_only_the_unet_and_its_scheduler(tiny_pipeline, tiny_prepared, tmp_path):
    """The fine-tune starts from the noise-predicting base, and the release is the base with a velocity-predicting
    UNet whose scheduler says so; the VAE and the rest are the base's, and the stage is recorded."""
    import shutil

    from safetensors.torch import load_file

    base = tmp_path / "base"
    shutil.copytree(tiny_pipeline, base, ignore=shutil.ignore_patterns("checkpoints", "cache"))
    release = _v_recipe().main(["--work", str(tmp_path / "w"), "--base", str(base), "--data", str(tiny_prepared),
                                "--configs", "tiny", "--steps", "2", "--set", "max_rows=64", "--set", "compile=false",
                                *[a for s in ("warmup_steps=1", "learning_rate=1e-2", "ema_decay=0.5")
                                  for a in ("--set", s)]])  # two steps that move the weights
    scheduler = json.loads((release / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "v_prediction"
    weights = "diffusion_pytorch_model.safetensors"
    tuned, start = load_file(release / "unet" / weights), load_file(base / "unet" / weights)
    assert tuned.keys() == start.keys()
    assert any(not np.allclose(tuned[k].float().numpy(), start[k].float().numpy(), atol=1e-3) for k in tuned)
    vae, base_vae = load_file(release / "vae" / weights), load_file(base / "vae" / weights)
    assert all(np.array_equal(vae[k].numpy(), base_vae[k].half().numpy()) for k in vae)
    info = json.loads((release / "dallebrain.json").read_text())
    stage = info["prediction_stage"]
    assert stage["steps"] == 2 and "prediction_type=v_prediction" in stage["settings"]
    # the per-contrast attribute guidance measured for this UNet is recorded, and the pipeline uses it
    for key in ("attribute_guidance_by_contrast", "attribute_guidance_anchor"):
        assert info["sampling"][key] == _v_recipe().SAMPLING[key]
    from dallebrain.api import load_pipeline

    pipe = load_pipeline(release, device="cpu")
    result = pipe("axial T2-weighted brain MRI", n=1, steps=2)
    t2w = _v_recipe().SAMPLING["attribute_guidance_by_contrast"]["T2w"]
    assert np.isfinite(result.images).all() and result.settings["attribute_guidance"] == t2w
    # a release that already predicts v is refused as a base, in one line, before any work
    again = subprocess.run([sys.executable, str(ROOT / "recipes" / "v_prediction_finetune.py"), "--work",
                            str(tmp_path / "w2"), "--base", str(release)], capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "already predicts v_prediction" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and not (tmp_path / "w2").exists()
    _check_the_contrast_balance_stage(release, tiny_prepared, tmp_path)
    _check_the_long_stage(release, tiny_prepared, tmp_path)


def _check_the_contrast_balance_stage(v_release, tiny_prepared, tmp_path):
    """The next stage (v2.2) starts from the velocity-predicting release, draws FLAIR three times as often, and
    records itself and its own per-contrast guidance; the noise-predicting model and its own release are refused."""
    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("balance", ROOT / "recipes" / "contrast_balance_finetune.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    release = recipe.main(["--work", str(tmp_path / "b"), "--base", str(v_release), "--data", str(tiny_prepared),
                           "--configs", "tiny", "--steps", "2", "--set", "max_rows=64", "--set", "compile=false",
                           *[a for s in ("warmup_steps=1", "learning_rate=1e-2", "ema_decay=0.5")
                             for a in ("--set", s)]])
    weights = "diffusion_pytorch_model.safetensors"
    tuned, start = load_file(release / "unet" / weights), load_file(v_release / "unet" / weights)
    assert any(not np.allclose(tuned[k].float().numpy(), start[k].float().numpy(), atol=1e-3) for k in tuned)
    info = json.loads((release / "dallebrain.json").read_text())
    assert "modality_weights=FLAIR=3" in info[recipe.RECORD]["settings"] and "prediction_stage" in info
    assert info["sampling"]["attribute_guidance_by_contrast"] == recipe.SAMPLING["attribute_guidance_by_contrast"]
    assert "latent_mean" in info["sampling"]  # merged into the base's sampling, not replacing it
    # halfway between v2.1 and the fine-tune (WiSE-FT): the same trained stage, no new training, its own scales
    args = ["--work", str(tmp_path / "b"), "--base", str(v_release), "--data", str(tiny_prepared), "--configs", "tiny",
            "--steps", "2"]
    half = recipe.main([*args, "--interpolate", "0.5"])
    trained = load_file(tmp_path / "b" / "model_balance" / "unet" / weights)
    mixed = load_file(half / "unet" / weights)
    for k in mixed:
        expected = (start[k].float() + trained[k].float()) / 2
        assert np.allclose(mixed[k].float().numpy(), expected.numpy(), atol=2e-3, rtol=2e-3), k
    info = json.loads((half / "dallebrain.json").read_text())
    assert info[recipe.RECORD]["interpolated_with_base"]["alpha"] == 0.5
    assert info["sampling"]["attribute_guidance_by_contrast"] == \
        recipe.SAMPLING_INTERPOLATED[0.5]["attribute_guidance_by_contrast"]
    unmeasured = subprocess.run([sys.executable, str(ROOT / "recipes" / "contrast_balance_finetune.py"), *args,
                                 "--interpolate", "0.3"], capture_output=True, text=True, timeout=120)
    assert unmeasured.returncode == 2 and "0.3 has no measured attribute guidance" in unmeasured.stderr
    for base, message in ((release, "already had this stage"), (tmp_path / "base", "predicts epsilon")):
        result = subprocess.run([sys.executable, str(ROOT / "recipes" / "contrast_balance_finetune.py"), "--work",
                                 str(tmp_path / "b2"), "--base", str(base)], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode != 0 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "b2").exists()


def _check_the_long_stage(v_release, tiny_prepared, tmp_path):
    """The CPU stage trains the velocity UNet further on every row, keeps the base's sampling tables but its own
    guidance scales (the others are refitted apart), and records the steps it trained, which a budget cuts."""
    import shutil

    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("long", ROOT / "recipes" / "long_finetune.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    moving = [a for s in ("warmup_steps=1", "learning_rate=1e-2", "ema_decay=0.5", "compile=false")
              for a in ("--set", s)]
    common = ["--base", str(v_release), "--data", str(tiny_prepared), "--configs", "tiny", *moving]
    release = recipe.main(["--work", str(tmp_path / "long"), *common, "--steps", "2", "--budget-s", "0"])
    weights = "diffusion_pytorch_model.safetensors"
    tuned, start = load_file(release / "unet" / weights), load_file(v_release / "unet" / weights)
    assert any(not np.allclose(tuned[k].float().numpy(), start[k].float().numpy(), atol=1e-3) for k in tuned)
    info, base_info = (json.loads((f / "dallebrain.json").read_text()) for f in (release, v_release))
    stage = info[recipe.RECORD]
    assert stage["steps"] == 2 and "max_rows=0" in stage["settings"] and "phrasings=2" in stage["settings"]
    # the guidance scales measured for the longer-trained UNet replace the base's; every other table is the base's
    scales = "attribute_guidance_by_contrast"
    first_scales = {"T1w": 4.0, "T2w": 4.0, "FLAIR": 5.0}  # the default, ATTRIBUTE_GUIDANCE_BY_CONTRAST
    assert info["sampling"][scales] == first_scales != base_info["sampling"].get(scales)
    assert {k: v for k, v in info["sampling"].items() if k != scales} == \
        {k: v for k, v in base_info["sampling"].items() if k != scales}
    # the later stages here read the same slices, phrasings, VAE and text encoder: the first stage's latent and
    # caption cache, copied into their work folders, is reused as a rerun would reuse it (its meta.json matches)
    for work in ("long2", "long_cut"):
        shutil.copytree(tmp_path / "long" / "model_long" / "cache", tmp_path / work / "model_long" / "cache")
    # a second stage on the first's release, with its own guidance scales, keeps the first's record under "earlier"
    again = recipe.main(["--work", str(tmp_path / "long2"), *common[2:], "--base", str(release), "--steps", "1",
                         "--budget-s", "0", "--attribute-guidance-by-contrast", "T1w=2.5, T2w=2,FLAIR=3"])
    second_info = json.loads((again / "dallebrain.json").read_text())
    second = second_info[recipe.RECORD]
    assert second["steps"] == 1 and second["earlier"] == [stage] and "earlier" not in stage
    assert second_info["sampling"][scales] == {"T1w": 2.5, "T2w": 2.0, "FLAIR": 3.0}
    # a budget that the cache alone uses up: the stage stops at the probe's last step and records that
    cut = recipe.main(["--work", str(tmp_path / "long_cut"), *common, "--steps", "400", "--budget-s", "0.01"])
    steps = json.loads((cut / "dallebrain.json").read_text())[recipe.RECORD]["steps"]
    from dallebrain.training.loop import BUDGET_PROBE_STEPS

    assert steps == BUDGET_PROBE_STEPS < 400


@pytest.mark.parametrize("args, message", [(["--base", "{tiny}"], "predicts epsilon"),
                                           (["--base", "{v}", "--budget-s", "-1"], "--budget-s must be 0 or more"),
                                           (["--base", "{v}", "--attribute-guidance-by-contrast", "T1w=x"],
                                            "--attribute-guidance-by-contrast takes CONTRAST=SCALE"),
                                           (["--base", "{v}", "--attribute-guidance-by-contrast", "CT=3"],
                                            "--attribute-guidance-by-contrast takes CONTRAST=SCALE")])
def test_the_long_recipe_refuses_a_base_or_budget_it_cannot_use(tiny_pipeline, tmp_path, args, message):
    """A noise-predicting base, or a negative budget: one line, non-zero, nothing made."""
    import shutil

    v = tmp_path / "v"
    shutil.copytree(tiny_pipeline, v, ignore=shutil.ignore_patterns("checkpoints", "cache"))
    config = v / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "prediction_type": "v_prediction"}))
    args = [a.replace("{tiny}", str(tiny_pipeline)).replace("{v}", str(v)) for a in args]
    result = subprocess.run([sys.executable, str(ROOT / "recipes" / "long_finetune.py"), "--work", str(tmp_path / "w"),
                             *args], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("bad", ["base", "data"])
def test_v_prediction_recipe_refuses_a_folder_that_is_not_what_it_needs(tiny_pipeline, tmp_path, bad):
    """A base that is not a pipeline folder, or --data that is not a prepared set: one line, non-zero, nothing made."""
    args = ["--base", str(tmp_path)] if bad == "base" else ["--base", str(tiny_pipeline), "--data", str(tmp_path)]
    result = subprocess.run([sys.executable, str(ROOT / "recipes" / "v_prediction_finetune.py"), "--work",
                             str(tmp_path / "w"), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1
    assert ("not a pipeline folder" if bad == "base" else "not a prepared data set") in result.stderr
    assert not (tmp_path / "w").exists()


def test_install_swaps_the_default_model_in_whole(tmp_path, monkeypatch):
    """The recipes' one way of installing: the release replaces the default folder, no staging folder is left."""
    sys.path.insert(0, str(ROOT / "recipes"))
    import shipped_model

    target, release = tmp_path / "default", tmp_path / "release"
    (target / "unet").mkdir(parents=True)
    (target / "unet" / "old.json").write_text("{}")
    (release / "unet").mkdir(parents=True)
    (release / "unet" / "config.json").write_text('{"new": 1}')
    sums = {"unet/config.json": hashlib.sha256(b'{"new": 1}').hexdigest()}
    monkeypatch.setattr(shipped_model, "SHIPPED", target)
    # a release that does not match its checksums is not installed: the default stays whole
    (release / "SHA256SUMS.json").write_text(json.dumps({**sums, "unet/config.json": "0" * 64}))
    with pytest.raises(SystemExit, match="does not match its SHA256SUMS.json"):
        shipped_model.install(release)
    assert [p.name for p in (target / "unet").iterdir()] == ["old.json"]
    (release / "SHA256SUMS.json").write_text(json.dumps(sums))
    assert shipped_model.install(release) == target
    assert [p.name for p in (target / "unet").iterdir()] == ["config.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["default", "release"]  # no staging or old folder left
    assert (release / "unet" / "config.json").exists()


def test_a_recipe_never_rebuilds_its_own_base_and_a_failed_step_is_one_line(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "recipes"))
    import shipped_model

    base = tmp_path / "work" / "model"  # where the recipe assembles its model: it was deleted, then copied from
    (base / "unet").mkdir(parents=True)
    with pytest.raises(SystemExit, match="which this recipe rebuilds"):
        shipped_model.model_with_parts(base, tmp_path / "work", {})
    assert (base / "unet").is_dir()
    with pytest.raises(SystemExit, match=r"^error: `dallebrain data simulate \.\.\.` failed \(exit 2\)"):
        shipped_model.run(["data", "simulate", "--subjects", "0", "--out", str(tmp_path / "c")], [])


def test_decoder_recipe_replaces_only_the_decoder_and_follows_the_ldm_objective(tiny_pipeline, tiny_unclip,
                                                                                  tiny_prepared, tmp_path):
    """The unCLIP decoder retrained from the base's own LDM UNet: a velocity LDM gives a velocity decoder (its
    folder's schedule says so), every other part is the base's, the stage and its rebuild command are recorded,
    and the release generates on the unCLIP route."""
    import shutil

    from safetensors.torch import load_file

    from dallebrain.models.unet import noise_scheduler_config

    base = tmp_path / "base"
    shutil.copytree(tiny_pipeline, base, ignore=shutil.ignore_patterns("checkpoints", "cache"))
    for part in ("clip", "prior", "decoder"):
        shutil.copytree(tiny_unclip / part, base / part)
    (base / "scheduler" / "scheduler_config.json").write_text(json.dumps(noise_scheduler_config("v_prediction")))
    spec = importlib.util.spec_from_file_location("decoder_recipe", ROOT / "recipes" / "unclip_decoder.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    release = recipe.main(["--work", str(tmp_path / "w"), "--base", str(base), "--data", str(tiny_prepared),
                           "--configs", "tiny", "--steps", "2", "--set", "max_rows=64", "--set", "compile=false",
                           "--attribute-guidance", "3", "--attribute-guidance-by-contrast", "T2w=5",
                           "--attribute-guidance-anchor", "modality,sex"])
    schedule = json.loads((release / "decoder" / "scheduler_config.json").read_text())
    assert schedule["prediction_type"] == "v_prediction"
    weights = "diffusion_pytorch_model.safetensors"
    new, old = load_file(release / "decoder" / weights), load_file(base / "decoder" / weights)
    assert new.keys() != old.keys() or any(new[k].shape != old[k].shape or not np.allclose(
        new[k].float().numpy(), old[k].float().numpy(), atol=1e-3) for k in new)
    unet, base_unet = load_file(release / "unet" / weights), load_file(base / "unet" / weights)
    assert all(np.array_equal(unet[k].numpy(), base_unet[k].half().numpy()) for k in unet)
    info = json.loads((release / "dallebrain.json").read_text())
    decoder = info["unclip"]["decoder"]
    assert decoder["decoder_steps"] == 2 and decoder["prediction_type"] == "v_prediction"
    assert "compile=false" in decoder["settings"]
    command = info["fixes"]["decoder"]["command"]
    assert "init_from={model}" in command and "decoder.tiny.json" in command and "max_steps=2" in command
    recorded = json.loads((release / "decoder" / "train_config.json").read_text())
    assert recorded["init_from"] == "base"  # by name: no path of the training machine travels with the model
    from dallebrain.api import load_pipeline

    result = load_pipeline(release, route="unclip", device="cpu")("axial T1-weighted brain MRI", n=1, steps=2)
    assert np.isfinite(result.images).all()
    # the decoder reads the attributes, at the attribute guidance the recipe recorded for it
    from dallebrain.models.conditioning import uses_attributes
    from dallebrain.models.decoder import load_decoder

    assert uses_attributes(load_decoder(release / "decoder")[0]) and "unet.attributes=true" in decoder["settings"]
    assert info["unclip"]["sampling"] == {"attribute_guidance": 3.0, "attribute_guidance_by_contrast": {"T2w": 5.0},
                                          "attribute_guidance_anchor": ["modality", "sex"]}
    assert result.settings["attribute_guidance"] == 3.0  # a T1w prompt: the model-wide scale
    t2 = load_pipeline(release, route="unclip", device="cpu")("axial T2-weighted brain MRI", n=1, steps=2)
    assert t2.settings["attribute_guidance"] == 5.0  # its contrast's own
    bad = subprocess.run([sys.executable, str(ROOT / "recipes" / "unclip_decoder.py"), "--work", str(tmp_path / "w3"),
                          "--base", str(base), "--attribute-guidance", "-1"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "--attribute-guidance must be 0 (none) or positive" in bad.stderr
    bad = subprocess.run([sys.executable, str(ROOT / "recipes" / "unclip_decoder.py"), "--work", str(tmp_path / "w3"),
                          "--base", str(base), "--attribute-guidance-anchor", "modality,colour"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--attribute-guidance-anchor takes attribute names" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "w3").exists()
    # a base without the unCLIP parts: one line, non-zero, nothing made
    refused = subprocess.run([sys.executable, str(ROOT / "recipes" / "unclip_decoder.py"), "--work",
                              str(tmp_path / "w2"), "--base", str(tiny_pipeline)], capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode != 0 and "not an unCLIP pipeline folder (no clip, prior)" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "w2").exists()


def test_vae_decoder_recipe_retrains_only_the_decoder_and_keeps_the_latent_space(tiny_pipeline, tiny_prepared,
                                                                                  tmp_path):
    """The VAE decoder retrained on the cohort: the encoder (so every latent model's space) is the base's to the
    last bit of fp16, the decoder moved, every other part is the base's, the stage and its rebuild command are
    recorded, and the release generates. Bad inputs: one line, non-zero, nothing made."""
    import shutil

    from safetensors.torch import load_file

    base = tmp_path / "base"
    shutil.copytree(tiny_pipeline, base, ignore=shutil.ignore_patterns("checkpoints", "cache"))
    spec = importlib.util.spec_from_file_location("vae_recipe", ROOT / "recipes" / "vae_decoder.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    release = recipe.main(["--work", str(tmp_path / "w"), "--base", str(base), "--data", str(tiny_prepared),
                           "--steps", "2", "--set", "batch_size=4", "--set", "adversarial_start=0",
                           "--set", "warmup_steps=0", "--set", "learning_rate=1e-2"])
    weights = "diffusion_pytorch_model.safetensors"
    new, old = load_file(release / "vae" / weights), load_file(base / "vae" / weights)
    assert new.keys() == old.keys()
    encoder = [k for k in new if k.startswith(("encoder.", "quant_conv."))]
    assert encoder and all(np.array_equal(new[k].numpy(), old[k].half().numpy()) for k in encoder)
    decoder = [k for k in new if k.startswith("decoder.")]
    assert any(not np.allclose(new[k].float().numpy(), old[k].float().numpy(), atol=1e-3) for k in decoder)
    assert json.loads((release / "vae" / "config.json").read_text())["scaling_factor"] == pytest.approx(
        json.loads((base / "vae" / "config.json").read_text())["scaling_factor"])
    unet, base_unet = load_file(release / "unet" / weights), load_file(base / "unet" / weights)
    assert all(np.array_equal(unet[k].numpy(), base_unet[k].half().numpy()) for k in unet)
    info = json.loads((release / "dallebrain.json").read_text())
    assert info["vae_decoder"]["decoder_steps"] == 2 and "batch_size=4" in info["vae_decoder"]["settings"]
    command = info["fixes"]["vae"]["command"]
    assert "init_from={model}/vae" in command and "train_encoder=false" in command and "vae.sharpen.json" in command
    assert "block_out_channels=[8,16]" in command  # the base's own architecture, not the sharpening config's
    assert not list(release.rglob("checkpoints")) and not (release / "vae" / "losses.csv").exists()
    from dallebrain.api import load_pipeline

    result = load_pipeline(release, device="cpu")("axial T1-weighted brain MRI", n=1, steps=2)
    assert np.isfinite(result.images).all()
    for args, message in ((["--steps", "0"], "--steps must be at least 1"),
                          (["--configs", "tiny"], "has no meaning here"),
                          (["--base", str(tmp_path / "nowhere")], "is not a pipeline folder (no vae/config.json)")):
        bad = subprocess.run([sys.executable, str(ROOT / "recipes" / "vae_decoder.py"), "--work", str(tmp_path / "w2"),
                              "--data", str(tiny_prepared), *args], capture_output=True, text=True, timeout=120)
        assert bad.returncode != 0 and message in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "w2").exists()


def test_the_vae_recipe_refuses_a_retrained_encoder(tmp_path):
    """The guard itself: a VAE whose encoder moved is refused in one line (its latents would be another space)."""
    from safetensors.torch import load_file, save_file

    spec = importlib.util.spec_from_file_location("vae_recipe", ROOT / "recipes" / "vae_decoder.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    name = "diffusion_pytorch_model.safetensors"
    shipped = ROOT / "src" / "dallebrain" / "weights" / "default" / "vae"
    tensors = load_file(shipped / name)
    moved = tmp_path / "moved"
    moved.mkdir()
    key = next(k for k in tensors if k.startswith("encoder."))
    save_file({**tensors, key: tensors[key] + 0.01}, str(moved / name))
    with pytest.raises(SystemExit, match="encoder differs from the base's \\(1 of"):
        recipe._check_same_encoder(shipped, moved)
    recipe._check_same_encoder(shipped, shipped)  # itself: passes


def test_the_shipped_unclip_sampling_is_what_the_decoder_recipe_writes_by_default():
    """One source for the decoder's guidance: rerunning recipes/unclip_decoder.py at its defaults records the
    unclip.sampling the installed model carries."""
    spec = importlib.util.spec_from_file_location("unclip_decoder", ROOT / "recipes" / "unclip_decoder.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    from dallebrain.api import default_model

    shipped = json.loads((default_model() / "dallebrain.json").read_text())["unclip"]["sampling"]
    # grey_level_map.py's curves and brain_outline.py's choice are measured after
    shipped = {k: v for k, v in shipped.items() if k not in ("grey_level_map", "brain_outline")}
    assert shipped == recipe.decoder_sampling(recipe.ATTRIBUTE_GUIDANCE, recipe.ATTRIBUTE_GUIDANCE_BY_CONTRAST,
                                              recipe.ATTRIBUTE_GUIDANCE_ANCHOR)
    assert shipped["attribute_guidance_by_contrast"] == {"T1w": 4.5, "T2w": 3.0, "PDw": 3.0, "FLAIR": 5.5}


def _grey_recipe():
    spec = importlib.util.spec_from_file_location("grey_level_map", ROOT / "recipes" / "grey_level_map.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    return recipe


@pytest.fixture(scope="module")
def grey_release(tiny_pipeline, tiny_prepared, tmp_path_factory):
    """recipes/grey_level_map.py --route ldm --n 16 on the tiny LDM: (its work folder, its release), fitted once
    for the tests below (sampling is most of its time)."""
    work = tmp_path_factory.mktemp("grey") / "w"
    release = _grey_recipe().main(["--work", str(work), "--base", str(tiny_pipeline), "--data", str(tiny_prepared),
                                   "--route", "ldm", "--n", "16"])
    return work, release


def test_the_grey_level_recipe_writes_maps_that_the_release_uses_and_a_weight_change_drops_them(
        tiny_pipeline, grey_release, tmp_path):
    """recipes/grey_level_map.py on the tiny LDM: only dallebrain.json changes, the release's LDM loads the maps
    and standardises with them; a recipe that replaces a part (model_with_parts) drops them as stale."""
    from dallebrain.api import load_pipeline
    from dallebrain.pipelines.grey_levels import INFO_KEY

    recipe = _grey_recipe()
    work, release = grey_release
    info = json.loads((release / "dallebrain.json").read_text())
    assert set(info["sampling"][INFO_KEY]["maps"]) <= {"T1w", "T2w", "PDw", "FLAIR"}
    assert set(info[INFO_KEY]) == {"ldm"} and info[INFO_KEY]["ldm"]["train_captions"] == 16
    assert not (release / ".dallebrain.json.lock").exists()
    pipe = load_pipeline(release)
    contrast = next(iter(info["sampling"][INFO_KEY]["maps"]))
    made = pipe(f"axial {contrast}", n=1, seed=0, steps=2)
    assert made.settings["grey_levels"].startswith(f"standardised: {contrast}")
    # the samples are kept: a second run refits without sampling (same captions and seeds)
    with np.load(work / "samples_ldm.npz") as saved:
        assert saved["images"].shape[0] == 16 and saved["trimmed"].tolist() == []  # the tiny model trims nothing
        stale = {k: saved[k] for k in saved.files}
    # samples drawn under another outline choice are drawn again, not refitted on
    np.savez_compressed(work / "samples_ldm.npz", **{**stale, "images": stale["images"] * 0,
                                                                "trimmed": np.array(["T2w"])})
    again = recipe.raw_samples(tiny_pipeline, "ldm", stale["prompts"].tolist(), stale["seeds"].tolist(),
                               work / "samples_ldm.npz")
    assert np.allclose(again, stale["images"].astype(np.float32), atol=2e-3)
    with np.load(work / "samples_ldm.npz") as saved:
        assert saved["trimmed"].tolist() == [] and saved["images"].any()
        assert "model" in saved.files
    # and so are samples another model drew (another --base in the same --work)
    np.savez_compressed(work / "samples_ldm.npz", **{**stale, "images": stale["images"] * 0, "model": np.array("x")})
    again = recipe.raw_samples(tiny_pipeline, "ldm", stale["prompts"].tolist(), stale["seeds"].tolist(),
                               work / "samples_ldm.npz")
    assert np.allclose(again, stale["images"].astype(np.float32), atol=2e-3)
    sys.path.insert(0, str(ROOT / "recipes"))
    import shipped_model

    kept = shipped_model.model_with_parts(release, tmp_path / "keep", {})
    assert INFO_KEY in json.loads((kept / "dallebrain.json").read_text())["sampling"]
    changed = shipped_model.model_with_parts(release, tmp_path / "change", {"vae": release / "vae"})
    after = json.loads((changed / "dallebrain.json").read_text())
    assert INFO_KEY not in after["sampling"] and INFO_KEY not in after
    assert after["sampling"].keys() == info["sampling"].keys() - {INFO_KEY}  # the rest of sampling stays


def test_the_grey_level_recipe_refits_the_contrasts_named_and_keeps_the_others(grey_release, tiny_prepared,
                                                                               tmp_path):
    """--contrasts refits those contrasts' curves from their rows alone; the base's other curves stay as they were."""
    from dallebrain.pipelines.grey_levels import INFO_KEY

    recipe = _grey_recipe()
    base = grey_release[1]
    maps = json.loads((base / "dallebrain.json").read_text())["sampling"][INFO_KEY]["maps"]
    assert len(maps) >= 2
    one, *others = sorted(maps)
    release = recipe.main(["--work", str(tmp_path / "one"), "--base", str(base), "--data", str(tiny_prepared),
                           "--route", "ldm", "--n", "32", "--contrasts", one])
    info = json.loads((release / "dallebrain.json").read_text())
    for contrast in others:
        assert info["sampling"][INFO_KEY]["maps"][contrast] == maps[contrast]
    assert info["sampling"][INFO_KEY]["maps"][one] != maps[one]  # other rows and seeds: another fit
    record = info[INFO_KEY]["ldm"]
    assert record["train_captions"] == 16 and record["refits"][0]["refitted"] == [one]  # the base's record kept
    assert f"--contrasts {one}" in record["refits"][0]["command"] and len(record["refits"]) == 1
    with np.load(tmp_path / "one" / "samples_ldm.npz") as saved:
        assert 2 <= saved["images"].shape[0] < 32


def test_refitting_one_route_keeps_the_other_routes_fit_record(tiny_pipeline, tiny_prepared, tmp_path):
    """The record of how each route's curves were fitted is per route: an LDM refit replaces the LDM's and keeps
    the unCLIP route's, also when the base wrote the older one-record form ("routes": both); a weight change to
    one route drops that route's record with its curves."""
    import shutil

    from dallebrain.pipelines.grey_levels import INFO_KEY, drop_grey_level_maps

    base = tmp_path / "base"
    shutil.copytree(tiny_pipeline, base)
    info = json.loads((base / "dallebrain.json").read_text())
    unclip_curves = {"maps": {}, "note": "stands in for the decoder's curves"}
    info.setdefault("unclip", {}).setdefault("sampling", {})[INFO_KEY] = unclip_curves
    info[INFO_KEY] = {"command": "python recipes/grey_level_map.py --route both", "train_captions": 768,
                      "routes": ["ldm", "unclip"], "refits": [{"refitted": ["PDw"], "routes": ["ldm"]}]}
    (base / "dallebrain.json").write_text(json.dumps(info))
    release = _grey_recipe().main(["--work", str(tmp_path / "w"), "--base", str(base), "--data", str(tiny_prepared),
                                   "--route", "ldm", "--n", "16"])
    records = json.loads((release / "dallebrain.json").read_text())[INFO_KEY]
    assert records["unclip"] == {"command": "python recipes/grey_level_map.py --route both", "train_captions": 768,
                                 "refits": [{"refitted": ["PDw"], "routes": ["ldm"]}]}
    assert records["ldm"]["train_captions"] == 16 and records["ldm"]["refits"] == []
    assert "--route ldm" in records["ldm"]["command"]
    drop_grey_level_maps(release, ("unclip",))
    after = json.loads((release / "dallebrain.json").read_text())
    assert set(after[INFO_KEY]) == {"ldm"} and INFO_KEY not in after["unclip"]["sampling"]
    drop_grey_level_maps(release, ("ldm",))
    assert INFO_KEY not in json.loads((release / "dallebrain.json").read_text())


def test_the_grey_level_recipe_refuses_bad_inputs_in_one_line(tiny_pipeline, tiny_prepared, tmp_path):
    script = str(ROOT / "recipes" / "grey_level_map.py")
    cases = [(["--data", str(tmp_path)], "is not a prepared data set"),
             (["--data", str(tiny_prepared), "--n", "3"], "--n must be at least 16"),
             (["--data", str(tiny_prepared), "--base", str(tmp_path)], "is not a pipeline folder"),
             (["--data", str(tiny_prepared), "--base", str(tiny_pipeline), "--route", "unclip"],
              "has no unCLIP decoder"),
             (["--data", str(tiny_prepared), "--base", str(tiny_pipeline), "--route", "ldm", "--contrasts", "CT"],
              "--contrasts 'CT' selects 0 of the")]
    for extra, message in cases:
        done = subprocess.run([sys.executable, script, "--work", str(tmp_path / "w"), *extra], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode != 0 and message in done.stderr, (extra, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()


def _level_recipe():
    spec = importlib.util.spec_from_file_location("level_map_recipe", ROOT / "recipes" / "level_map.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    return recipe


def test_the_level_map_recipe_measures_each_grid_caption_and_writes_a_map_the_release_uses(tiny_pipeline, tmp_path):
    """recipes/level_map.py: one entry of judged levels per contrast and plane, kept for a rerun; the map in the
    release's dallebrain.json moves a prompt's caption; the sampling itself is the level judge's on real model
    slices, stood in for here by a judge that draws every caption 2 mm low (the pipeline's part is
    tests/pipelines/test_level_map.py)."""
    from dallebrain.api import load_pipeline
    from dallebrain.data.prompts import parse_prompt

    recipe = _level_recipe()
    for plane in recipe.AXIS:
        for contrast in recipe.CONTRASTS:
            fields = parse_prompt(recipe.level_prompt(plane, contrast, 12.0, 1))
            assert (fields.orientation, fields.modality, fields.slice_mm) == (plane, contrast, 12.0)
    calls = []

    def fake_judge(pipe, plane, contrast, levels, seeds):
        assert pipe.level_map is None and seeds == 2  # each level's own caption
        calls.append((contrast, plane))
        return [[mm - 2.0, mm - 2.0] for mm in levels]

    recipe.judge_levels = fake_judge
    release = recipe.main(["--work", str(tmp_path / "w"), "--base", str(tiny_pipeline), "--seeds", "2"])
    assert len(calls) == 12 and (tmp_path / "w" / "judged.json").is_file()
    info = json.loads((release / "dallebrain.json").read_text())
    levels = recipe.grid_levels(info)
    assert min(levels["sagittal"]) >= 0
    curve = info["sampling"]["level_map"]["curves"]["T2w"]["axial"]
    assert curve["caption_mm"] == levels["axial"] and curve["judged_mm"] == [mm - 2.0 for mm in levels["axial"]]
    pipe = load_pipeline(release)
    asked = levels["axial"][3]
    made = pipe(f"axial T2-weighted MRI slice of a healthy 30-year-old man at z = {asked:g} mm", seed=0, steps=2)
    record = made.settings["level_map"]
    lower, upper = record["caption_mm"]
    assert lower <= asked + 2.0 <= upper  # the captions 2 mm higher, mixed to land at the level asked
    assert lower + record["weight_upper"] * (upper - lower) == pytest.approx(asked + 2.0, abs=1e-3)
    calls.clear()  # a rerun reads the judged levels kept
    recipe.main(["--work", str(tmp_path / "w"), "--base", str(tiny_pipeline), "--seeds", "2"])
    assert calls == []

    # --contrasts PDw on that release: PDw measured again (here 4 mm low), every other curve and the record kept
    recipe.judge_levels = lambda pipe, plane, contrast, levels, seeds: (
        calls.append((contrast, plane)) or [[mm - 4.0, mm - 4.0] for mm in levels])
    again = recipe.main(["--work", str(tmp_path / "pd"), "--base", str(release), "--seeds", "2", "--contrasts", "PDw"])
    assert sorted(calls) == [("PDw", plane) for plane in sorted(recipe.AXIS)]
    before, after = info["sampling"]["level_map"], json.loads((again / "dallebrain.json").read_text())["sampling"]
    after = after["level_map"]
    assert after["curves"]["PDw"]["axial"]["judged_mm"] == [mm - 4.0 for mm in levels["axial"]]
    assert {c: v for c, v in after["curves"].items() if c != "PDw"} == {
        c: v for c, v in before["curves"].items() if c != "PDw"}
    assert after["command"] == before["command"] and after["refits"] == [
        {**{k: v for k, v in before.items() if k not in ("curves", "command")},
         "command": "python recipes/level_map.py --seeds 2 --contrasts PDw", "measured_again": ["PDw"]}]
    made = load_pipeline(again)(f"axial PD-weighted MRI slice of a healthy 30-year-old man at z = {asked:g} mm",
                                seed=0, steps=2)
    lower, upper = made.settings["level_map"]["caption_mm"]
    assert lower <= asked + 4.0 <= upper


def test_the_level_map_recipe_refuses_bad_inputs_in_one_line(tiny_pipeline, tmp_path):
    script = str(ROOT / "recipes" / "level_map.py")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "judged.json").write_text(json.dumps({"seeds": 6, "base": "elsewhere"}))
    broken = tmp_path / "broken"  # a level map whose judged levels decrease
    shutil.copytree(tiny_pipeline, broken)
    info = json.loads((broken / "dallebrain.json").read_text())
    info.setdefault("sampling", {})["level_map"] = {"curves": {"PDw": {"axial": {"caption_mm": [0, 3],
                                                                                  "judged_mm": [2, 1]}}}}
    (broken / "dallebrain.json").write_text(json.dumps(info))
    cases = [(["--work", str(tmp_path / "w"), "--base", str(tmp_path)], "is not a pipeline folder"),
             (["--work", str(tmp_path / "w"), "--base", str(tiny_pipeline), "--seeds", "1"], "--seeds must be at"),
             (["--work", str(tmp_path / "used"), "--base", str(tiny_pipeline), "--seeds", "2"], "holds another run"),
             (["--work", str(tmp_path / "w"), "--base", str(tiny_pipeline), "--contrasts", "CT"], "choose from"),
             (["--work", str(tmp_path / "w"), "--base", str(tiny_pipeline), "--contrasts", "PDw"], "no level map"),
             (["--work", str(tmp_path / "w"), "--base", str(broken), "--contrasts", "PDw"], "cannot be kept")]
    for extra, message in cases:
        done = subprocess.run([sys.executable, script, *extra], capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and message in done.stderr, (extra, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()


def test_the_brain_outline_recipe_installs_the_head_only_for_the_contrasts_it_helps(tiny_pipeline, tiny_prepared,
                                                                                   tmp_path):
    """recipes/brain_outline.py on the tiny LDM: the head is trained, its measurements recorded per contrast, and the
    release trims exactly the contrasts chosen (none: no head and no record); replacing the VAE drops both."""
    from dallebrain.api import load_pipeline
    from dallebrain.models import brain_outline as B

    spec = importlib.util.spec_from_file_location("brain_outline_recipe", ROOT / "recipes" / "brain_outline.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    release = recipe.main(["--work", str(tmp_path / "w"), "--base", str(tiny_pipeline), "--data", str(tiny_prepared),
                           "--slices", "24", "--steps", "20", "--n", "12"])
    with np.load(tmp_path / "w" / "reconstructions.npz") as saved:
        assert saved["rec"].shape == saved["real"].shape and len(saved["rec"]) >= 20
    info = json.loads((release / "dallebrain.json").read_text())
    record = info["sampling"].get(B.INFO_KEY)
    head = release / "vae" / B.FILENAME
    if record is None:  # nothing was helped enough: nothing shipped
        assert not head.exists()
        assert "outline" not in load_pipeline(release)("axial T2-weighted", n=1, seed=0, steps=2).settings
    else:
        assert head.is_file() and record["contrasts"]
        texture = record["measured"]["train_captions_glcm_frechet"]
        assert all(texture[c]["trimmed"] < (1 - recipe.MARGIN) * texture[c]["as decoded"] for c in record["contrasts"])
        pipe = load_pipeline(release)
        assert pipe.trims(record["contrasts"][0])
        sys.path.insert(0, str(ROOT / "recipes"))
        import shipped_model

        changed = shipped_model.model_with_parts(release, tmp_path / "change", {"vae": tiny_pipeline / "vae"})
        assert B.INFO_KEY not in json.loads((changed / "dallebrain.json").read_text())["sampling"]
        assert not (changed / "vae" / B.FILENAME).exists()


def test_the_brain_outline_recipe_measures_the_unclip_route_with_the_ldms_head(tiny_unclip_pipeline, tiny_prepared,
                                                                                tmp_path):
    """--route unclip: the base's head (the LDM's choice was made with it) is measured on the decoder's samples, not
    retrained; the choice goes to unclip.sampling and the LDM's record and head file stay as they were. With no
    route keeping a record the head goes."""
    import shutil

    from dallebrain.models import brain_outline as B

    base = tmp_path / "base"
    shutil.copytree(tiny_unclip_pipeline, base)
    rng = np.random.default_rng(0)
    real = (rng.random((8, 64, 64)) > 0.5).astype(np.float32)
    B.fit_brain_outline(real + 0.05, real, steps=2, batch_size=4, crop=32, width=4, layers=2,
                        log=None).save(base / "vae" / B.FILENAME)
    info = json.loads((base / "dallebrain.json").read_text())
    ldm_choice = B.record(["T2w"], {"stands in for": "the LDM's measurements"})
    info["sampling"][B.INFO_KEY] = ldm_choice
    (base / "dallebrain.json").write_text(json.dumps(info))
    head_bytes = (base / "vae" / B.FILENAME).read_bytes()

    spec = importlib.util.spec_from_file_location("brain_outline_recipe", ROOT / "recipes" / "brain_outline.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    release = recipe.main(["--work", str(tmp_path / "w"), "--base", str(base), "--data", str(tiny_prepared),
                           "--slices", "24", "--steps", "20", "--n", "12", "--route", "unclip"])
    assert (tmp_path / "w" / "samples_unclip.npz").is_file() and not (tmp_path / "w" / "samples_ldm.npz").exists()
    info = json.loads((release / "dallebrain.json").read_text())
    assert info["sampling"][B.INFO_KEY] == ldm_choice
    assert (release / "vae" / B.FILENAME).read_bytes() == head_bytes
    choice = info.get("unclip", {}).get("sampling", {}).get(B.INFO_KEY)
    if choice is not None:
        texture = choice["measured"]["train_captions_glcm_frechet"]
        assert choice["measured"]["head"].startswith("the base's") and "--route unclip" in choice["measured"]["command"]
        assert all(texture[c]["trimmed"] < (1 - recipe.MARGIN) * texture[c]["as decoded"] for c in choice["contrasts"])
    recipe.write_choice(release, "unclip", None)
    assert (release / "vae" / B.FILENAME).is_file()  # the LDM still trims
    recipe.write_choice(release, "ldm", None)
    assert not (release / "vae" / B.FILENAME).exists()
    assert B.INFO_KEY not in json.loads((release / "dallebrain.json").read_text())["sampling"]


def test_the_brain_outline_recipe_refuses_bad_inputs_in_one_line(tiny_prepared, tiny_pipeline, tmp_path):
    script = str(ROOT / "recipes" / "brain_outline.py")
    cases = [(["--data", str(tmp_path)], "is not a prepared data set"),
             (["--data", str(tiny_prepared), "--base", str(tmp_path)], "is not a pipeline folder"),
             (["--data", str(tiny_prepared), "--n", "2"], "--n must be at least 8"),
             (["--data", str(tiny_prepared), "--steps", "0"], "--steps must be at least 1"),
             (["--data", str(tiny_prepared), "--base", str(tiny_pipeline), "--route", "unclip"],
              "has no unCLIP decoder")]
    for extra, message in cases:
        done = subprocess.run([sys.executable, script, "--work", str(tmp_path / "w"), *extra], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode != 0 and message in done.stderr, (extra, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1
