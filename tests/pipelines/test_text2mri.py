import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from cli_inprocess import run_cli
from dallebrain.api import load_pipeline

PROMPT = "axial T2-weighted slice of a healthy 70-year-old woman at the level of the lateral ventricles"


def test_same_seed_same_image_and_image_i_independent_of_n(tiny_pipeline):
    pipe = load_pipeline(tiny_pipeline, device="cpu")
    a = pipe(PROMPT, n=2, seed=5, steps=3)
    b = pipe(PROMPT, n=1, seed=6, steps=3)
    assert a.images.shape == (2, 64, 64) and a.images.dtype == np.float32
    assert 0 <= a.images.min() and a.images.max() <= 1
    # the same seed gives the same image whatever the batch, byte for byte (one image per pass)
    np.testing.assert_array_equal(a.images[1], b.images[0])
    np.testing.assert_array_equal(a.images, pipe(PROMPT, n=2, seed=5, steps=3).images)
    assert not np.array_equal(a.images[0], a.images[1])


@pytest.mark.parametrize("sampler", ["auto", "dpm", "dpm-sde", "ddim", "euler", "unipc"])
def test_every_sampler_runs(tiny_pipeline, sampler):
    result = load_pipeline(tiny_pipeline, device="cpu")(PROMPT, steps=2, sampler=sampler)
    assert np.isfinite(result.images).all()


def test_the_stochastic_sampler_draws_each_images_step_noise_from_its_own_seed(tiny_pipeline):
    """SDE DPM-Solver++ adds fresh noise at every step: from image i's own generator, so image i is the same
    whatever n and whatever else shares its pass, and it is not the ODE sampler's image."""
    pipe = load_pipeline(tiny_pipeline, device="cpu")
    a = pipe(PROMPT, n=3, seed=5, steps=4, sampler="dpm-sde").images
    np.testing.assert_array_equal(a[1], pipe(PROMPT, n=1, seed=6, steps=4, sampler="dpm-sde").images[0])
    pipe.images_per_pass = 3  # one pass of three: the rows' noise still comes from each row's seed
    np.testing.assert_allclose(pipe(PROMPT, n=3, seed=5, steps=4, sampler="dpm-sde").images, a, atol=1e-5)
    pipe.images_per_pass = 1
    ode = pipe(PROMPT, n=1, seed=5, steps=4, sampler="dpm").images[0]
    assert np.abs(a[0] - ode).mean() > 1e-4


def test_auto_takes_the_models_sampler_for_the_prompts_contrast(tiny_pipeline):
    """"auto" (the default) uses dallebrain.json's sampler_by_contrast: a FLAIR prompt gets the SDE sampler at
    twice the steps (recorded, with what was asked), the other contrasts DPM-Solver++ at the steps asked; a
    sampler named explicitly is used as named. In `sample`, prompts of different samplers in one call give each
    image its own prompt's image."""
    from dallebrain.pipelines import defaults as D

    assert D.SAMPLER == "auto"
    pipe = load_pipeline(tiny_pipeline, device="cpu")
    flair = PROMPT.replace("T2-weighted", "FLAIR")
    assert pipe.sampling_of(flair, "auto", 3) == ("dpm", 3)  # the tiny model records no table
    pipe.sampler_table = {"FLAIR": ("dpm-sde", 2)}
    assert pipe.sampling_of(flair, "auto", 3) == ("dpm-sde", 6)
    assert pipe.sampling_of(PROMPT, "auto", 3) == ("dpm", 3)
    # the factor never takes a request past 100 steps by itself; more asked are run as asked
    assert pipe.sampling_of(flair, "auto", 80) == ("dpm-sde", 100)
    assert pipe.sampling_of(flair, "auto", 150) == ("dpm-sde", 150)
    assert pipe.sampling_of(flair, "ddim", 3) == ("ddim", 3)
    with pytest.raises(ValueError, match="unknown sampler 'sde'"):
        pipe.sampling_of(flair, "sde", 3)
    auto = pipe(flair, seed=4, steps=3)
    assert auto.settings["sampler"] == "dpm-sde" and auto.settings["steps"] == 6
    assert auto.settings["sampler_requested"] == "auto" and auto.settings["steps_requested"] == 3
    np.testing.assert_array_equal(auto.images, pipe(flair, seed=4, steps=6, sampler="dpm-sde").images)
    named = pipe(flair, seed=4, steps=3, sampler="dpm")
    assert named.settings["sampler"] == "dpm" and "sampler_requested" not in named.settings
    t2 = pipe(PROMPT, seed=4, steps=3)
    assert t2.settings["sampler"] == "dpm" and t2.settings["steps"] == 3
    pipe.images_per_pass = 2
    mixed = pipe.sample([flair, PROMPT, flair], [4, 4, 7], steps=3, batch_size=2)
    for image, prompt, seed in zip(mixed, [flair, PROMPT, flair], [4, 4, 7], strict=True):
        np.testing.assert_allclose(image, pipe(prompt, seed=seed, steps=3).images[0], atol=1e-5)


def test_a_model_folder_with_a_bad_sampler_table_does_not_load(tiny_pipeline, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_pipeline, bad, ignore=shutil.ignore_patterns("checkpoints", "cache"))
    info = json.loads((bad / "dallebrain.json").read_text())
    info.setdefault("sampling", {})["sampler_by_contrast"] = {"FLAIR": {"sampler": "plms"}}
    (bad / "dallebrain.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="sampling.sampler_by_contrast.FLAIR must be"):
        load_pipeline(bad, device="cpu")


@pytest.mark.parametrize("table", [{"CT": {"sampler": "dpm"}}, {"FLAIR": {"sampler": "auto"}},
                                   {"FLAIR": {"sampler": "dpm-sde", "step_factor": 3}},
                                   {"FLAIR": {"sampler": "dpm-sde", "step_factor": True}}, {"FLAIR": "dpm-sde"},
                                   ["dpm-sde"]])
def test_a_bad_sampler_table_is_refused_when_the_model_loads(table):
    from dallebrain.pipelines.request import sampler_by_contrast

    with pytest.raises(ValueError, match="sampler_by_contrast"):
        sampler_by_contrast({"sampling": {"sampler_by_contrast": table}})
    assert sampler_by_contrast({"sampling": {"sampler_by_contrast": {"FLAIR": {"sampler": "dpm-sde"}}}}) == {
        "FLAIR": ("dpm-sde", 1)}
    assert sampler_by_contrast({"sampling": {}}) == {}


def test_stock_stable_diffusion_pipeline_runs_the_export_with_attributes_unstated(tiny_pipeline, tmp_path):
    """A real client nobody here wrote: diffusers' own StableDiffusionPipeline, on what `dallebrain export`
    writes. It passes text only, so it gets our model with every attribute unstated: the same noise prediction
    as our UNet given the all-unstated attribute vector."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from dallebrain.models.conditioning import unstated_features, uses_attributes
    from dallebrain.pipelines.export import export_stock_folder

    ours = UNet2DConditionModel.from_pretrained(tiny_pipeline / "unet")
    assert uses_attributes(ours)  # the tiny LDM config trains with attributes, as the shipped one does
    export_stock_folder(tiny_pipeline, tmp_path / "stock")
    pipe = StableDiffusionPipeline.from_pretrained(str(tmp_path / "stock"), safety_checker=None)
    out = pipe(PROMPT, num_inference_steps=2, height=64, width=64, output_type="np",
               generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 64, 64, 1) and np.isfinite(out.images).all()
    torch.manual_seed(0)
    x, states = torch.randn(1, 4, 16, 16), torch.randn(1, 8, ours.config.cross_attention_dim)
    with torch.no_grad():
        expected = ours(x, 300, encoder_hidden_states=states, class_labels=unstated_features(1)).sample
        stock = pipe.unet(x, 300, encoder_hidden_states=states).sample
    torch.testing.assert_close(stock, expected, rtol=1e-4, atol=1e-5)


def test_the_words_reach_the_unet_as_attributes(tiny_pipeline):
    """Age, sex, plane, level, contrast: the prompt's attributes reach the UNet (same seed, one word changed)."""
    import torch

    pipe = load_pipeline(tiny_pipeline, device="cpu")
    with torch.no_grad():  # the 3-step tiny model has barely moved its zero-initialised attribute output
        pipe.unet.class_embedding.linear_2.weight.normal_(0, 0.5)
    young = pipe(PROMPT.replace("70-year-old", "20-year-old"), seed=2, steps=2).images
    old = pipe(PROMPT, seed=2, steps=2).images
    assert np.abs(young - old).mean() > 1e-4
    np.testing.assert_array_equal(old, pipe(PROMPT, seed=2, steps=2).images)


def test_guidance_with_equal_scales_is_plain_guidance():
    import torch

    from dallebrain.pipelines.text2mri import guide

    e0, e1, e2 = torch.randn(3, 2, 4, 8, 8)
    torch.testing.assert_close(guide((e0, e1, e2), 4.0, 4.0), guide((e0, e2), 4.0, 4.0))
    # the attributes' own scale moves the result along (e1 - e0) only
    torch.testing.assert_close(guide((e0, e1, e2), 4.0, 9.0) - guide((e0, e1, e2), 4.0, 4.0), 5.0 * (e1 - e0))


def test_attribute_guidance_steers_the_attributes_and_is_recorded(tiny_pipeline, monkeypatch):
    """Unset, the model's own scale (dallebrain.json "sampling"), else plain guidance: the images are those
    of before. Set apart from the text's, the attributes' direction is amplified, and the sidecar says so."""
    import torch

    from dallebrain.pipelines import defaults as D

    pipe = load_pipeline(tiny_pipeline, device="cpu")
    with torch.no_grad():  # the 3-step tiny model has barely moved its zero-initialised attribute output
        pipe.unet.class_embedding.linear_2.weight.normal_(0, 0.5)
    plain = pipe(PROMPT, seed=2, steps=2)
    assert plain.settings["attribute_guidance"] == plain.settings["guidance"] == D.GUIDANCE
    pipe.attribute_guidance = D.GUIDANCE
    np.testing.assert_array_equal(pipe(PROMPT, seed=2, steps=2).images, plain.images)
    pipe.attribute_guidance = 12.0
    steered = pipe(PROMPT, seed=2, steps=2)
    assert steered.settings["attribute_guidance"] == 12.0 and np.abs(steered.images - plain.images).mean() > 1e-4
    pipe.attribute_guidance = None
    monkeypatch.setitem(pipe.info, "sampling", {"attribute_guidance": 12.0})
    np.testing.assert_array_equal(pipe(PROMPT, seed=2, steps=2).images, steered.images)
    for bad in (-1.0, float("nan"), "8", 51.0):
        pipe.attribute_guidance = bad
        with pytest.raises(ValueError, match="attribute_guidance must be a number"):
            pipe(PROMPT, seed=2, steps=2)


def test_guidance_per_row_equals_each_rows_own_scale():
    import torch

    from dallebrain.pipelines.text2mri import guide

    e0, e1, e2 = torch.randn(3, 2, 4, 8, 8)
    mixed = guide((e0, e1, e2), 2.0, torch.tensor([6.0, 10.0]))
    torch.testing.assert_close(mixed[:1], guide((e0[:1], e1[:1], e2[:1]), 2.0, 6.0))
    torch.testing.assert_close(mixed[1:], guide((e0[1:], e1[1:], e2[1:]), 2.0, 10.0))


def test_attribute_guidance_by_contrast_from_the_model(tiny_pipeline, monkeypatch):
    """dallebrain.json may give each contrast its own attribute guidance: a T1w prompt gets the T1w scale, a
    contrast the table does not name the model-wide one, and a scale set on the pipeline wins over both. In
    `sample`, where one pass mixes contrasts, every image is the one its own prompt gives alone."""
    import torch

    pipe = load_pipeline(tiny_pipeline, device="cpu")
    with torch.no_grad():
        pipe.unet.class_embedding.linear_2.weight.normal_(0, 0.5)
    t1 = PROMPT.replace("T2-weighted", "T1-weighted")
    assert t1 != PROMPT
    monkeypatch.setitem(pipe.info, "sampling", {"attribute_guidance": 6.0})
    six = pipe(t1, seed=2, steps=2)
    pipe.attribute_guidance_table = {"T1w": 12.0}
    steered = pipe(t1, seed=2, steps=2)
    assert steered.settings["attribute_guidance"] == 12.0 and np.abs(steered.images - six.images).mean() > 1e-4
    other = pipe(PROMPT, seed=2, steps=2)  # T2w: not in the table, the model-wide 6
    assert other.settings["attribute_guidance"] == 6.0
    pipe.attribute_guidance = 6.0
    np.testing.assert_array_equal(pipe(t1, seed=2, steps=2).images, six.images)
    pipe.attribute_guidance = None
    pipe.images_per_pass = 2
    both = pipe.sample([t1, PROMPT], [2, 2], steps=2)
    np.testing.assert_allclose(both[0], pipe(t1, seed=2, steps=2).images[0], atol=1e-5)
    np.testing.assert_allclose(both[1], pipe(PROMPT, seed=2, steps=2).images[0], atol=1e-5)


def test_an_attribute_anchor_keeps_the_contrast_on_the_unconditional_side(tiny_pipeline, monkeypatch):
    """With "attribute_guidance_anchor": ["modality"] the attribute branch is guided against "this contrast, the
    rest unstated": each prompt's unconditional row states its own contrast and nothing else (a negative prompt's
    own statements win), the images change, and without the key they are those of before."""
    import torch

    from dallebrain.models.conditioning import anchored_unconditional, attribute_anchor_of, features_batch

    pipe = load_pipeline(tiny_pipeline, device="cpu")
    with torch.no_grad():
        pipe.unet.class_embedding.linear_2.weight.normal_(0, 0.5)
    pipe.attribute_guidance = 8.0
    plain = pipe(PROMPT, seed=2, steps=2).images
    t1 = PROMPT.replace("T2-weighted", "T1-weighted")
    rows = anchored_unconditional([PROMPT, t1], "", {None: ("modality",)})
    assert [r["modality"] for r in rows] == ["T2w", "T1w"]
    assert all(v is None for r in rows for k, v in r.items() if k != "modality")
    assert anchored_unconditional([PROMPT], "a 30-year-old", {None: ("modality",)})[0]["age"] == 30
    # by contrast: only the contrast named is anchored
    by_contrast = anchored_unconditional([PROMPT, t1], "", attribute_anchor_of(
        {"sampling": {"attribute_guidance_anchor": {"T1w": ["modality"]}}}))
    assert [r["modality"] for r in by_contrast] == [None, "T1w"]
    cond, uncond = (pipe._attribute_pair([PROMPT, t1], ""))
    assert uncond.shape[0] == 1  # no anchor: one all-unstated row
    pipe.attribute_anchor = attribute_anchor_of({"sampling": {"attribute_guidance_anchor": ["modality"]}})
    cond, uncond = pipe._attribute_pair([PROMPT, t1], "")
    torch.testing.assert_close(uncond, features_batch(rows))
    anchored = pipe(PROMPT, seed=2, steps=2).images
    assert np.abs(anchored - plain).mean() > 1e-4
    pipe.attribute_anchor = {}
    np.testing.assert_array_equal(pipe(PROMPT, seed=2, steps=2).images, plain)
    for bad in (["contrast"], "modality", [1], {"CT": ["modality"]}, {"T1w": "modality"}):
        with pytest.raises(ValueError, match="attribute_guidance_anchor must list attributes"):
            attribute_anchor_of({"sampling": {"attribute_guidance_anchor": bad}})


def attribute_guided(tiny_pipeline, monkeypatch):
    """The tiny pipeline with attributes that change its output (a random class embedding) and attribute guidance 4
    apart from the caption's: three UNet rows a guided step."""
    import torch

    pipe = load_pipeline(tiny_pipeline, device="cpu")
    with torch.no_grad():
        pipe.unet.class_embedding.linear_2.weight.normal_(0, 0.5)
    monkeypatch.setitem(pipe.info, "sampling", {"attribute_guidance": 4.0})
    return pipe


def test_early_attribute_guidance_applies_on_the_noisy_steps_only(tiny_pipeline, monkeypatch):
    """dallebrain.json's attribute_guidance_early gives a contrast a stronger attribute guidance on the steps at
    or above a timestep: from timestep 999 no step qualifies (the images of before), from timestep 1 every step
    does (the images of that scale throughout), in between the images differ from both. Other contrasts, a
    scale set on the pipeline, and `sample` with mixed contrasts keep their own; the sidecar records it."""
    pipe = attribute_guided(tiny_pipeline, monkeypatch)
    steps = 4
    timesteps = pipe_timesteps(pipe, steps)
    four = pipe(PROMPT, seed=2, steps=steps)
    pipe.attribute_guidance = 12.0
    twelve = pipe(PROMPT, seed=2, steps=steps).images
    pipe.attribute_guidance = None
    assert "attribute_guidance_early" not in four.settings

    def early_from(timestep):
        pipe.early_guidance_table = {"T2w": (12.0, timestep)}
        return pipe(PROMPT, seed=2, steps=steps)

    assert max(timesteps) < 999 and min(timesteps) >= 1
    np.testing.assert_allclose(early_from(999).images, four.images, atol=1e-6)
    np.testing.assert_allclose(early_from(1).images, twelve, atol=1e-6)
    half = early_from(int(timesteps[steps // 2 - 1]))  # the first two of four steps at 12
    assert half.settings["attribute_guidance_early"] == {"scale": 12.0, "from_timestep": int(timesteps[1])}
    assert half.settings["attribute_guidance"] == 4.0
    assert np.abs(half.images - four.images).mean() > 1e-5 and np.abs(half.images - twelve).mean() > 1e-5
    t1 = PROMPT.replace("T2-weighted", "T1-weighted")
    assert "attribute_guidance_early" not in pipe(t1, seed=2, steps=steps).settings  # T1w: not in the table
    pipe.images_per_pass = 2
    both = pipe.sample([t1, PROMPT], [2, 2], steps=steps)
    np.testing.assert_allclose(both[1], half.images[0], atol=1e-5)
    np.testing.assert_allclose(both[0], pipe(t1, seed=2, steps=steps).images[0], atol=1e-5)
    pipe.attribute_guidance = 4.0  # one scale set for every step: no early phase
    set_one = pipe(PROMPT, seed=2, steps=steps)
    assert "attribute_guidance_early" not in set_one.settings
    np.testing.assert_allclose(set_one.images, four.images, atol=1e-6)


def test_guidance_off_on_the_low_noise_steps(tiny_pipeline, monkeypatch):
    """dallebrain.json's unguided_below_timestep runs a contrast's steps below that timestep on the conditional rows
    alone: below 1 no step qualifies (the images of before), below 999 every step does (the images of guidance 1
    with attribute guidance 1, the conditional prediction throughout), in between the images differ from both;
    the UNet sees one row, not three, on those steps; other contrasts keep every step guided; the sidecar
    records it; `sample` with mixed contrasts gives each image as alone (to float rounding for the unguided ones)."""
    pipe = attribute_guided(tiny_pipeline, monkeypatch)
    steps = 4
    timesteps = pipe_timesteps(pipe, steps)
    guided = pipe(PROMPT, seed=2, steps=steps, sampler="dpm")
    pipe.attribute_guidance = 1.0
    conditional = pipe(PROMPT, seed=2, steps=steps, guidance=1.0, sampler="dpm").images
    pipe.attribute_guidance = None
    assert "unguided_below_timestep" not in guided.settings
    rows = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))

    def unguided_below(timestep, prompt=PROMPT):
        pipe.unguided_table = {"T2w": timestep}
        rows.clear()
        return pipe(prompt, seed=2, steps=steps, sampler="dpm")

    assert max(timesteps) < 999 and min(timesteps) >= 1
    np.testing.assert_allclose(unguided_below(1).images, guided.images, atol=1e-6)
    assert rows == [3] * steps
    np.testing.assert_allclose(unguided_below(999).images, conditional, atol=1e-6)
    assert rows == [1] * steps
    half = unguided_below(int(timesteps[1]))  # the last two of four steps alone
    assert rows == [3, 3, 1, 1]
    assert half.settings["unguided_below_timestep"] == int(timesteps[1])
    assert np.abs(half.images - guided.images).mean() > 1e-5 and np.abs(half.images - conditional).mean() > 1e-5
    t1 = PROMPT.replace("T2-weighted", "T1-weighted")
    t1_alone = unguided_below(int(timesteps[1]), t1)  # T1w: not in the table, every step guided
    assert rows == [3] * steps and "unguided_below_timestep" not in t1_alone.settings
    pipe.images_per_pass = 2  # passes of two rows; a pass mixing the contrasts runs the guided batch throughout
    rows.clear()
    mixed = pipe.sample([t1, PROMPT, t1], [2, 2, 2], steps=steps, sampler="dpm")
    assert rows == [6] * (2 * steps)  # [t1, T2w] and [t1, padding]: no padded pass of its own for T2w
    rows.clear()
    alone = pipe.sample([PROMPT, PROMPT], [2, 2], steps=steps, sampler="dpm")  # a pass of T2w alone saves rows
    assert rows == [6, 6, 2, 2]
    hook.remove()
    pairs = pipe(t1, n=2, seed=2, steps=steps, sampler="dpm").images
    np.testing.assert_array_equal(mixed[0], pairs[0])  # guided rows: the same batch as alone, byte for byte
    np.testing.assert_array_equal(mixed[2], pairs[0])
    np.testing.assert_array_equal(alone[0], pipe(PROMPT, seed=2, steps=steps, sampler="dpm").images[0])
    np.testing.assert_allclose(mixed[1], alone[0], atol=1e-5)  # from the guided batch's conditional chunk


def test_unguided_below_set_per_request_overrides_the_models_table(tiny_pipeline, tmp_path):
    """pipe.unguided_below (generate's --unguided-below) applies to every prompt whatever its contrast, 0 guides every
    step even where the model's table says otherwise, None gives the table back; the sidecar says what ran."""
    pipe = load_pipeline(tiny_pipeline, device="cpu")
    pipe.unguided_table = {"T2w": 999}
    t1 = PROMPT.replace("T2-weighted", "T1-weighted")
    rows = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    for below, prompt, expected in ((None, PROMPT, 1), (0, PROMPT, 3), (999, t1, 1), (None, t1, 3)):
        pipe.unguided_below = below
        rows.clear()
        result = pipe(prompt, seed=1, steps=2)
        assert (set(rows) == {1}) == (expected == 1) and len(set(rows)) == 1, (below, prompt, rows)
        assert result.settings.get("unguided_below_timestep") == (999 if expected == 1 else None)
    hook.remove()
    pipe.unguided_below = 1000
    with pytest.raises(ValueError, match="unguided_below must be a whole number"):
        pipe(PROMPT, steps=2)
    done = _generate(PROMPT, "--model", str(tiny_pipeline), "--steps", "2", "--unguided-below", "999", "--out",
                     str(tmp_path / "o"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "o" / "seed-000000.json").read_text())["unguided_below_timestep"] == 999


def test_a_pass_of_mixed_unguided_steps_takes_each_rows_own(tiny_pipeline):
    """denoise with rows of different unguided steps in one pass (a caller that mixes them): each row as it is
    alone, to float rounding (the guided batch runs, and the unguided rows take its conditional chunk)."""
    import torch

    pipe = load_pipeline(tiny_pipeline, device="cpu")
    pipe.images_per_pass = 2
    cond, _ = pipe.encode_prompt(PROMPT)
    uncond, _ = pipe.encode_prompt("")
    attributes = pipe._attribute_pair([PROMPT], "")
    timesteps = pipe_timesteps(pipe, 4)

    def run(below):
        return pipe.denoise(cond, uncond, [5, 6], 4, 2.0, "dpm", None, attributes, None, None, None,
                            torch.tensor(below, dtype=torch.float32))

    mixed = run([0.0, float(timesteps[1])])
    np.testing.assert_allclose(mixed[0], run([0.0, 0.0])[0], atol=1e-5)
    np.testing.assert_allclose(mixed[1], run([float(timesteps[1])] * 2)[1], atol=1e-5)
    assert np.abs(mixed[1] - run([0.0, 0.0])[1]).mean() > 1e-5


@pytest.mark.parametrize("table", [{"PDw": 0}, {"PDw": 1000}, {"PDw": 200.0}, {"PDw": True}, {"PDw": "200"},
                                   {"CT": 200}, 200, [200]])
def test_a_bad_unguided_table_is_refused_when_the_model_loads(tiny_pipeline, tmp_path, table):
    from dallebrain.pipelines.request import unguided_below_timestep

    with pytest.raises(ValueError, match="sampling.unguided_below_timestep"):
        unguided_below_timestep({"sampling": {"unguided_below_timestep": table}})
    assert unguided_below_timestep({"sampling": {"unguided_below_timestep": {"PDw": 400}}}) == {"PDw": 400}
    assert unguided_below_timestep({"sampling": {}}) == {}
    folder = tmp_path / "model"
    shutil.copytree(tiny_pipeline, folder)
    info = json.loads((folder / "dallebrain.json").read_text())
    info.setdefault("sampling", {})["unguided_below_timestep"] = table
    (folder / "dallebrain.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="sampling.unguided_below_timestep"):
        load_pipeline(folder, device="cpu")


def pipe_timesteps(pipe, steps: int) -> list[int]:
    from dallebrain.models.unet import make_scheduler

    scheduler = make_scheduler("dpm", pipe.scheduler_config)
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


def test_a_model_folder_with_a_bad_early_guidance_table_does_not_load(tiny_pipeline, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_pipeline, folder)
    info = json.loads((folder / "dallebrain.json").read_text())
    info.setdefault("sampling", {})["attribute_guidance_early"] = {"FLAIR": {"scale": 8.0, "from_timestep": 1000}}
    (folder / "dallebrain.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="sampling.attribute_guidance_early.FLAIR must be"):
        load_pipeline(folder, device="cpu")


@pytest.mark.parametrize("table", [{"CT": {"scale": 8, "from_timestep": 500}}, {"FLAIR": {"scale": 8}},
                                   {"FLAIR": {"scale": 8, "from_timestep": 0}},
                                   {"FLAIR": {"scale": 8, "from_timestep": 500.0}},
                                   {"FLAIR": {"scale": 8, "from_timestep": True}},
                                   {"FLAIR": {"scale": 60, "from_timestep": 500}},
                                   {"FLAIR": {"scale": 8, "from_timestep": 500, "until": 3}}, {"FLAIR": 8}, [8]])
def test_a_bad_early_guidance_table_is_refused(table):
    from dallebrain.pipelines.request import attribute_guidance_early

    with pytest.raises(ValueError, match="attribute_guidance_early"):
        attribute_guidance_early({"sampling": {"attribute_guidance_early": table}})
    assert attribute_guidance_early({"sampling": {"attribute_guidance_early": {
        "FLAIR": {"scale": 8, "from_timestep": 500}}}}) == {"FLAIR": (8.0, 500)}
    assert attribute_guidance_early({"sampling": {}}) == {}


@pytest.mark.parametrize("table", [{"CT": 6.0}, {"T1w": -1.0}, {"T1w": "10"}, [10.0]])
def test_a_bad_attribute_guidance_table_is_refused_when_the_model_loads(table):
    from dallebrain.pipelines.request import attribute_guidance_by_contrast

    with pytest.raises(ValueError, match="attribute_guidance"):
        attribute_guidance_by_contrast({"sampling": {"attribute_guidance_by_contrast": table}})
    assert attribute_guidance_by_contrast({"sampling": {"attribute_guidance": 6.0}}) == {}


def _generate(*args, cwd):
    return run_cli("generate", *args, cwd=cwd)


def test_generate_cli_writes_png_nifti_json_identically_for_a_seed(tiny_pipeline, tmp_path):
    for name in ("a", "b"):
        result = _generate(PROMPT, "--model", str(tiny_pipeline), "--n", "2", "--seed", "3", "--steps", "2",
                           "--out", name, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    for suffix in (".png", ".nii.gz", ".json"):
        a = (tmp_path / "a" / f"seed-000004{suffix}").read_bytes()
        assert a == (tmp_path / "b" / f"seed-000004{suffix}").read_bytes(), suffix
    img = nib.load(tmp_path / "a" / "seed-000003.nii.gz")
    assert img.shape == (64, 64, 1) and np.allclose(np.abs(img.header.get_zooms()), 3.0)
    centre = img.affine @ np.array([32, 32, 0, 1])
    assert centre[2] == pytest.approx(23.0)  # "at the level of the lateral ventricles" -> z = 23 mm
    assert int(img.header["sform_code"]) == int(img.header["qform_code"]) == 4  # NIfTI's "MNI152"
    sidecar = json.loads((tmp_path / "a" / "seed-000003.json").read_text())
    for key in ("prompt", "seed", "steps", "sampler", "guidance", "route", "lora", "model_hash",
                "dallebrain_version"):
        assert key in sidecar
    assert sidecar["seed"] == 3 and sidecar["route"] == "ldm" and "field_strength" in sidecar["unspecified_in_prompt"]
    # a rerun into the same folder refuses instead of overwriting
    again = _generate(PROMPT, "--model", str(tiny_pipeline), "--seed", "3", "--steps", "2", "--out", "a",
                      cwd=tmp_path)
    assert again.returncode == 2 and "exists" in again.stderr


def test_long_prompt_is_truncated_with_a_warning(tiny_pipeline, tmp_path):
    """Sent as written, a prompt past the text encoder's 64 tokens is truncated, and says so; in caption form
    (the default) the same prompt is encoded as its caption, which fits, and the sidecar shows that text."""
    long_prompt = PROMPT + " with a very detailed description" * 20
    result = _generate(long_prompt, "--model", str(tiny_pipeline), "--steps", "1", "--out", "o", "--literal-prompt",
                       cwd=tmp_path)
    assert result.returncode == 0 and "truncated" in result.stderr
    result = _generate(long_prompt, "--model", str(tiny_pipeline), "--steps", "1", "--out", "c", cwd=tmp_path)
    assert result.returncode == 0 and "truncated" not in result.stderr
    sidecar = json.loads((tmp_path / "c" / "seed-000000.json").read_text())
    assert sidecar["prompt"] == long_prompt and "detailed" not in sidecar["prompt_as_encoded"]


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "steps"),
    (["--guidance", "-1"], "guidance"),
    (["--guidance", "inf"], "guidance"),  # an unbounded range once let infinity through: NaN images, exit 0
    (["--n", "100000"], "number of images"),
    (["--sampler", "plms"], "sampler"),
    (["--attribute-guidance", "-1"], "--attribute-guidance must be a number"),
    (["--unguided-below", "1000"], "--unguided-below must be a whole number in 0..999"),
    (["--unguided-below", "-3"], "--unguided-below must be a whole number in 0..999"),
])
def test_bad_generation_settings(tiny_pipeline, tmp_path, args, message):
    result = _generate(PROMPT, "--model", str(tiny_pipeline), *args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "dallebrain-output").exists()


def test_bad_model_folders(tiny_pipeline, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_pipeline, broken, ignore=shutil.ignore_patterns("checkpoints", "cache"))
    shutil.rmtree(broken / "unet")
    result = _generate(PROMPT, "--model", str(broken), cwd=tmp_path)
    assert result.returncode == 2 and "unet" in result.stderr
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_pipeline, pickled, ignore=shutil.ignore_patterns("checkpoints", "cache"))
    (pickled / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not allowed")
    result = _generate(PROMPT, "--model", str(pickled), cwd=tmp_path)
    assert result.returncode == 2 and "pickle" in result.stderr
    result = _generate(PROMPT, "--model", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert result.returncode == 2 and "not found" in result.stderr


def test_a_slice_the_prompt_does_not_place_is_not_claimed_to_be_in_mni(tmp_path):
    from dallebrain.data.grid import prepared_grid
    from dallebrain.pipelines.output import save_outputs

    paths = save_outputs(tmp_path, "x", np.zeros((64, 64), np.float32), {"prompt": "a T1-weighted slice"},
                         prepared_grid(64))
    img = nib.load(paths["nifti"])
    assert int(img.header["sform_code"]) == int(img.header["qform_code"]) == 0  # unknown: spacing only
    assert np.allclose(np.abs(img.header.get_zooms()), 3.0)


def test_result_save_writes_what_the_cli_writes(tiny_pipeline, tmp_path):
    # in this process, so with the same thread count (float results on a CPU depend on it)
    cli = _generate(PROMPT, "--model", str(tiny_pipeline), "--n", "2", "--seed", "3", "--steps", "2",
                    "--out", "cli", cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr
    result = load_pipeline(tiny_pipeline, device="cpu")(PROMPT, n=2, seed=3, steps=2)
    written = result.save(tmp_path / "api")
    assert [p["png"].name for p in written] == ["seed-000003.png", "seed-000004.png"]
    for suffix in (".png", ".nii.gz"):
        assert (tmp_path / "api" / f"seed-000004{suffix}").read_bytes() == \
            (tmp_path / "cli" / f"seed-000004{suffix}").read_bytes(), suffix
    api_json = json.loads((tmp_path / "api" / "seed-000004.json").read_text())
    cli_json = json.loads((tmp_path / "cli" / "seed-000004.json").read_text())
    assert api_json.keys() == cli_json.keys() and api_json["index"] == 1 and api_json["n"] == 2
    assert {k: v for k, v in api_json.items() if k != "model"} == {k: v for k, v in cli_json.items() if k != "model"}
    with pytest.raises(FileExistsError, match="seed-000003"):  # never replaces without overwrite
        result.save(tmp_path / "api")
    assert len(result.save(tmp_path / "api", overwrite=True)) == 2


def test_rerunning_with_the_default_folder_writes_beside_the_first_run(tiny_pipeline, tmp_path):
    args = (PROMPT, "--model", str(tiny_pipeline), "--steps", "1", "--negative-prompt", "noise")
    first = _generate(*args, cwd=tmp_path)
    second = _generate(*args, cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert "writing to dallebrain-output-2" in second.stderr
    assert (tmp_path / "dallebrain-output" / "seed-000000.png").read_bytes() == \
        (tmp_path / "dallebrain-output-2" / "seed-000000.png").read_bytes()
    sidecar = json.loads((tmp_path / "dallebrain-output-2" / "seed-000000.json").read_text())
    assert sidecar["negative_prompt"] == "noise"
    chosen = _generate(*args, "--out", "dallebrain-output", cwd=tmp_path)  # an --out the user chose: never renumbered
    assert chosen.returncode == 2 and "exists" in chosen.stderr


def test_the_python_api_uses_what_it_checked_and_names_what_it_refuses(tiny_pipeline):
    from dallebrain.pipelines.text2mri import GenerationResult

    pipe = load_pipeline(tiny_pipeline, device="cpu")
    # numbers a caller may pass as floats or text are used as the ints they were checked to be (2.0 passed the
    # check, then failed in range())
    as_ints = pipe(PROMPT, n=2, seed=3, steps=1)
    loose = pipe(PROMPT, n=2.0, seed="3", steps="1")
    np.testing.assert_array_equal(loose.images, as_ints.images)
    for kwargs, words in (({"prompt": 123}, "the prompt must be text, got int"),
                          ({"prompt": PROMPT, "negative_prompt": 5}, "negative prompt must be text"),
                          ({"prompt": PROMPT, "n": 2.5}, "number of images must be a whole number")):
        with pytest.raises(ValueError, match=words) as info:
            pipe(**{"n": 1, "steps": 1, **kwargs})
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="batch_size must be a whole number"):
        pipe.sample([PROMPT], [0], steps=1, batch_size=1.5)
    with pytest.raises(ValueError, match="device 'tpu' is not a torch device|device takes cpu or cuda"):
        load_pipeline(tiny_pipeline, device="tpu")
    empty = GenerationResult(as_ints.images[:0], [], as_ints.settings)
    with pytest.raises(ValueError, match="nothing to save"):
        empty.save("unused")
