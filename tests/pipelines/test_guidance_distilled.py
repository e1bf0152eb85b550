"""A guidance-distilled model (dallebrain.json sampling.guidance_distilled, recipes/guidance_distill.py): one UNet
row per step, the conditional inputs, no other guidance accepted; and the recipe that makes one."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_text2mri import PROMPT, attribute_guided

from cli_inprocess import run_cli, run_script
from dallebrain.api import load_pipeline
from dallebrain.pipelines.request import guidance_distilled

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "guidance_distill.py"
RECORD = {"guidance": 2.0, "steps": 10}


def test_the_record_is_read_and_a_malformed_one_refused_in_one_line():
    assert guidance_distilled({}) is None and guidance_distilled({"sampling": {}}) is None
    assert guidance_distilled({"sampling": {"guidance_distilled": {"guidance": 2}}}) == 2.0
    for bad in (2.0, {"guidance": "2"}, {"guidance": True}, {"guidance": 0.5}, {"steps": 3}):
        with pytest.raises(ValueError, match="sampling.guidance_distilled must be") as err:
            guidance_distilled({"sampling": {"guidance_distilled": bad}})
        assert "\n" not in str(err.value)


def distilled(pipe, monkeypatch):
    """`pipe` read as a guidance-distilled model (its own UNet: the plumbing, not a trained student)."""
    monkeypatch.setitem(pipe.info["sampling"], "guidance_distilled", RECORD)
    pipe.guidance_distilled = guidance_distilled(pipe.info)
    return pipe


def test_a_distilled_model_runs_the_conditional_row_alone_and_records_it(tiny_pipeline, monkeypatch):
    """Every step one UNet row with the caption and the attributes: the images of the same UNet at guidance 1 and
    attribute guidance 1 (its conditional prediction), whatever the model's tables say (per-contrast attribute
    guidance, unguided steps); the settings name the distillation instead of the scales it replaced."""
    pipe = attribute_guided(tiny_pipeline, monkeypatch)
    pipe.unguided_table = {"T2w": 500}
    pipe.attribute_guidance = 1.0
    conditional = pipe(PROMPT, n=2, seed=3, steps=4, guidance=1.0).images
    pipe.attribute_guidance = None
    guided = pipe(PROMPT, n=2, seed=3, steps=4)
    assert "attribute_guidance" in guided.settings
    distilled(pipe, monkeypatch)
    rows = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    result = pipe(PROMPT, n=2, seed=3, steps=4)
    hook.remove()
    assert rows == [1] * 8
    np.testing.assert_array_equal(result.images, conditional)
    assert np.abs(result.images - guided.images).mean() > 1e-4
    assert result.settings["guidance_distilled"] == RECORD
    assert not {"attribute_guidance", "unguided_below_timestep"} & set(result.settings)
    np.testing.assert_array_equal(pipe.sample([PROMPT], [4], steps=4), pipe(PROMPT, seed=4, steps=4).images)


@pytest.mark.parametrize("setting", ["guidance", "attribute_guidance", "unguided_below"])
def test_a_distilled_model_refuses_other_guidance_in_one_line(tiny_pipeline, monkeypatch, setting):
    pipe = distilled(attribute_guided(tiny_pipeline, monkeypatch), monkeypatch)
    guidance = 3.0 if setting == "guidance" else 2.0
    if setting != "guidance":
        setattr(pipe, setting, 4.0 if setting == "attribute_guidance" else 0)
    for call in (lambda: pipe(PROMPT, steps=2, guidance=guidance), lambda: pipe.sample([PROMPT], [0], 2, guidance)):
        with pytest.raises(ValueError, match="this model's UNet holds its guidance") as err:
            call()
        assert "\n" not in str(err.value)


def test_generate_refuses_another_guidance_on_a_distilled_model(tiny_pipeline, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_pipeline, model)
    info = json.loads((model / "dallebrain.json").read_text())
    info.setdefault("sampling", {})["guidance_distilled"] = RECORD
    (model / "dallebrain.json").write_text(json.dumps(info))
    bad = run_cli("generate", PROMPT, "--model", str(model), "--steps", "2", "--guidance", "4", "--out",
                  str(tmp_path / "bad"), cwd=tmp_path)
    assert bad.returncode == 2 and "guidance must be 2" in bad.stderr and not (tmp_path / "bad").exists()
    done = run_cli("generate", PROMPT, "--model", str(model), "--steps", "2", "--out", str(tmp_path / "o"),
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "o" / "seed-000000.json").read_text())["guidance_distilled"] == RECORD


def _recipe(*args):
    """The recipe run in this process (cli_inprocess.run_script: a fresh interpreter per run paid ~8 s of imports);
    its bad-input test runs the script itself."""
    return run_script(RECIPE, *args)


def _recipe_process(*args):
    return subprocess.run([sys.executable, str(RECIPE), *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_the_teacher_target_is_the_sampling_prediction(tiny_pipeline, tiny_prepared, monkeypatch):
    """The recipe's target for a prompt is what sampling's guided step computes: where the prompt's contrast is
    unguided at that timestep it is the conditional prediction, so the untrained student (the teacher's copy) has
    zero loss there; where guided it differs from it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("guidance_distill", RECIPE)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    pipe = attribute_guided(tiny_pipeline, monkeypatch)
    pipe.precision = "fp32"  # the student below runs in fp32
    noisy = torch.randn(2, 4, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    t = torch.tensor(400)
    prompts = [PROMPT, PROMPT.replace("70-year-old woman", "25-year-old man")]
    guided, inputs = recipe.teacher_targets(pipe, prompts, noisy, t)
    with torch.no_grad():
        student = pipe.unet(noisy, t, **inputs).sample.float()
    assert inputs["encoder_hidden_states"].shape[0] == 2 and inputs["class_labels"].shape[0] == 2
    assert (guided - student).abs().mean() > 1e-4
    pipe.unguided_table = {"T2w": 999}
    alone, _ = recipe.teacher_targets(pipe, prompts, noisy, t)
    torch.testing.assert_close(alone, student, atol=1e-5, rtol=0)


def test_the_recipe_trains_resumes_and_releases_a_model_that_samples_one_row(tiny_pipeline, tiny_prepared,
                                                                              tmp_path):
    work = tmp_path / "work"
    first = _recipe("--work", work, "--data", tiny_prepared, "--base", tiny_pipeline, "--steps", 2, "--batch", 2,
                    "--rows", 8)
    assert first.returncode == 0, first.stderr
    assert (work / "state.safetensors").is_file() and (work / "cache" / "latents.npy").is_file()
    done = _recipe("--work", work, "--data", tiny_prepared, "--base", tiny_pipeline, "--steps", 3, "--batch", 2,
                   "--rows", 8, "--release")
    assert done.returncode == 0, done.stderr
    losses = (work / "losses.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in losses] == ["step", "1", "2", "3"]  # resumed at step 2, not again
    straight = _recipe("--work", tmp_path / "straight", "--data", tiny_prepared, "--base", tiny_pipeline, "--steps", 3,
                       "--batch", 2, "--rows", 8)
    assert straight.returncode == 0, straight.stderr
    from safetensors.torch import load_file

    resumed, whole = load_file(work / "state.safetensors"), load_file(tmp_path / "straight" / "state.safetensors")
    assert resumed.keys() == whole.keys() and int(resumed["step"]) == 3
    for name in resumed:  # the batches are drawn per step, the optimiser's moments kept: as if never stopped
        torch.testing.assert_close(resumed[name], whole[name], atol=1e-6, rtol=1e-5)
    release = work / "release"
    info = json.loads((release / "dallebrain.json").read_text())
    assert info["sampling"]["guidance_distilled"]["steps"] == 3
    assert [(r["from_step"], r["to_step"]) for r in info["sampling"]["guidance_distilled"]["runs"]] == [(0, 2), (2, 3)]
    assert not list(release.rglob("*.ckpt")) and not list(release.rglob("*.bin"))
    pipe = load_pipeline(release, device="cpu")
    assert pipe.guidance_distilled == 2.0
    rows = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    result = pipe(PROMPT, steps=2)
    hook.remove()
    assert rows == [1, 1] and np.isfinite(result.images).all()
    again = _recipe("--work", tmp_path / "w2", "--data", tiny_prepared, "--base", release, "--steps", 1)
    assert again.returncode == 1 and "already guidance-distilled" in again.stderr


@pytest.mark.parametrize("bad, message", [
    (["--steps", "0"], "--steps must be at least 1"),
    (["--lr", "2"], "--lr must be in (0, 1)"),
    (["--data", "NOWHERE"], "is not a prepared data set"),
    (["--base", "NOWHERE"], "is not a dallebrain model folder"),
    (["--device", "tpu"], "--device must be cpu or cuda"),
])
def test_the_recipe_refuses_bad_inputs_in_one_line(tiny_pipeline, tiny_prepared, tmp_path, bad, message):
    args = {"--work": str(tmp_path / "w"), "--data": str(tiny_prepared), "--base": str(tiny_pipeline)}
    args.update({bad[0]: str(tmp_path / bad[1]) if bad[1] == "NOWHERE" else bad[1]})
    done = _recipe_process(*[x for kv in args.items() for x in kv])
    assert done.returncode == 1 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()


def hybrid(tiny_pipeline, tmp_path, below, steps=4, student=True):
    """The tiny model with a student for the steps below `below` (unet_distilled/: the teacher's own weights, so the
    plumbing shows, not a trained student), taught at the default sampler (dpm here) and `steps`."""
    model = tmp_path / "hybrid"
    shutil.copytree(tiny_pipeline, model)
    if student:
        shutil.copytree(model / "unet", model / "unet_distilled")
    info = json.loads((model / "dallebrain.json").read_text())
    info.setdefault("sampling", {})["guidance_distilled"] = {"guidance": 2.0, "below_timestep": below,
                                                             "sampler": "dpm", "sampler_steps": steps}
    (model / "dallebrain.json").write_text(json.dumps(info))
    return model


def test_a_student_beside_its_teacher_takes_the_low_noise_steps_of_the_setting_it_was_taught(tiny_pipeline, tmp_path):
    """Steps at or above below_timestep: the teacher's guided rows; below it: the student, one row. Any other setting
    (caption guidance, sampler, steps, negative prompt, attribute guidance set) runs the teacher throughout, as the
    model without a student does; the sidecar says when the student ran."""
    from test_text2mri import pipe_timesteps

    teacher = load_pipeline(tiny_pipeline, device="cpu")
    timesteps = pipe_timesteps(teacher, 4)
    pipe = load_pipeline(hybrid(tiny_pipeline, tmp_path, below=int(timesteps[1])), device="cpu")
    assert pipe.student_unet is not None and pipe.student_below == int(timesteps[1]) and pipe.guidance_distilled is None
    rows = {"teacher": [], "student": []}
    hooks = [pipe.unet.register_forward_pre_hook(lambda m, a: rows["teacher"].append(a[0].shape[0])),
             pipe.student_unet.register_forward_pre_hook(lambda m, a: rows["student"].append(a[0].shape[0]))]
    result = pipe(PROMPT, n=2, seed=3, steps=4)
    assert rows == {"teacher": [2, 2] * 2, "student": [1, 1] * 2}  # two passes of one image: 2 guided steps, 2 not
    assert result.settings["distilled_below_timestep"] == int(timesteps[1])
    assert "guidance_distilled" not in result.settings  # the teacher's guidance is recorded as usual
    # the student here is the teacher's copy: its steps are the teacher's conditional prediction
    assert np.abs(result.images - teacher(PROMPT, n=2, seed=3, steps=4).images).mean() > 1e-5
    np.testing.assert_array_equal(pipe.sample([PROMPT, PROMPT], [3, 4], steps=4), result.images)
    for kwargs in ({"guidance": 3.0}, {"steps": 3}, {"sampler": "ddim"}, {"negative_prompt": "a child"}):
        rows["teacher"].clear(), rows["student"].clear()
        other = pipe(PROMPT, seed=3, **{"steps": 4, **kwargs})
        assert rows["student"] == [] and "distilled_below_timestep" not in other.settings, kwargs
        np.testing.assert_array_equal(other.images, teacher(PROMPT, seed=3, **{"steps": 4, **kwargs}).images)
    for hook in hooks:
        hook.remove()


def test_a_model_naming_a_student_it_lacks_or_a_bad_timestep_is_refused_in_one_line(tiny_pipeline, tmp_path):
    with pytest.raises(ValueError, match="'unet_distilled/' is missing") as err:
        load_pipeline(hybrid(tiny_pipeline, tmp_path, below=500, student=False), device="cpu")
    assert "\n" not in str(err.value)
    for bad in (0, 1000, 2.5, True):
        with pytest.raises(ValueError, match="below_timestep in 1..999"):
            guidance_distilled({"sampling": {"guidance_distilled": {"guidance": 2, "below_timestep": bad}}})


def test_the_recipe_below_a_timestep_releases_the_teacher_with_its_student(tiny_pipeline, tiny_prepared, tmp_path):
    work = tmp_path / "work"
    done = _recipe("--work", work, "--data", tiny_prepared, "--base", tiny_pipeline, "--steps", 2, "--batch", 2,
                   "--rows", 8, "--below", 600, "--release")
    assert done.returncode == 0, done.stderr
    release = work / "release"
    record = json.loads((release / "dallebrain.json").read_text())["sampling"]["guidance_distilled"]
    assert record["below_timestep"] == 600 and record["sampler"] == "dpm-karras" and record["sampler_steps"] == 20
    from safetensors.torch import load_file

    name = "diffusion_pytorch_model.safetensors"
    kept, base = load_file(release / "unet" / name), load_file(tiny_pipeline / "unet" / name)
    assert all(torch.equal(kept[k].float(), base[k].half().float()) for k in base)  # the teacher, as it was
    pipe = load_pipeline(release, device="cpu")
    assert pipe.student_unet is not None and pipe.student_below == 600
    other = _recipe("--work", work, "--data", tiny_prepared, "--base", tiny_pipeline, "--steps", 3, "--batch", 2,
                    "--rows", 8)  # a resume must teach the same timesteps
    assert other.returncode == 1 and "taught with --below 600, got --below 0" in other.stderr
    assert _recipe("--work", tmp_path / "w", "--data", tiny_prepared, "--base", tiny_pipeline, "--below",
                   1000).returncode == 1
