"""The signal leak (pipelines/signal_leak.py): sampling starts from the noised per-channel mean of the training
latents that `train ldm` records, exactly as the scheduler's forward process would make it; a folder without
the record samples from pure noise as before; a bad record is refused when the model loads."""

import json
import shutil

import numpy as np
import pytest
import torch

from dallebrain.api import load_pipeline
from dallebrain.models.unet import make_scheduler
from dallebrain.pipelines.signal_leak import latent_mean_of, start_latents, training_latent_mean
from dallebrain.pipelines.text2mri import initial_noise

PROMPT = "axial T1-weighted slice of a healthy 40-year-old man at the level of the lateral ventricles"


def test_the_recorded_mean_is_read_and_a_bad_one_refused_in_one_line():
    assert latent_mean_of({}, 4) is None and latent_mean_of({"sampling": {"attribute_guidance": 6}}, 4) is None
    torch.testing.assert_close(latent_mean_of({"sampling": {"latent_mean": [1, -0.5, 0.25, 0]}}, 4),
                               torch.tensor([1.0, -0.5, 0.25, 0.0]))
    for bad in ([1.0, 2.0], [1.0, 2.0, float("nan"), 0.0], [1.0, True, 0.0, 0.0], "1,2,3,4", [1e9, 0, 0, 0]):
        with pytest.raises(ValueError, match="^dallebrain.json sampling.latent_mean must be 4 finite numbers"):
            latent_mean_of({"sampling": {"latent_mean": bad}}, 4)


@pytest.mark.parametrize("sampler", ["dpm", "dpm-karras", "dpm-sde", "ddim", "euler", "unipc"])
def test_start_latents_are_the_schedulers_forward_process_at_the_first_step(sampler):
    scheduler = make_scheduler(sampler)
    scheduler.set_timesteps(10)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(start_latents(scheduler, noise, None), noise * scheduler.init_noise_sigma)
    mean = torch.tensor([1.5, -1.0, 0.5, 0.0])
    alpha_bar = scheduler.alphas_cumprod[int(scheduler.timesteps[0])]
    m = mean[None, :, None, None]
    if sampler == "euler":  # x = x0 + sigma noise, sigma = sqrt((1 - alpha_bar) / alpha_bar)
        expected = m + ((1 - alpha_bar) / alpha_bar).sqrt() * noise
    else:  # x = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) noise
        expected = alpha_bar.sqrt() * m + (1 - alpha_bar).sqrt() * noise
    torch.testing.assert_close(start_latents(scheduler, noise, mean), expected, rtol=1e-4, atol=1e-4)


def test_training_latent_mean_is_the_per_channel_mean():
    latents = torch.randn(10, 4, 6, 6).half() + torch.tensor([2.0, -1.0, 0.0, 0.5])[None, :, None, None].half()
    expected = latents.double().mean(dim=(0, 2, 3))
    np.testing.assert_allclose(training_latent_mean(latents, chunk=3), expected.numpy(), atol=1e-9)


def test_train_ldm_records_the_mean_of_its_latent_cache(tiny_pipeline):
    info = json.loads((tiny_pipeline / "dallebrain.json").read_text())
    cached = torch.from_numpy(np.load(tiny_pipeline / "cache" / "latents.npy"))
    recorded = info["sampling"]["latent_mean"]
    assert len(recorded) == cached.shape[1]
    np.testing.assert_allclose(recorded, cached.double().mean(dim=(0, 2, 3)).numpy(), atol=1e-6)


def test_sampling_starts_from_the_recorded_mean(tiny_pipeline, tmp_path):
    pipe = load_pipeline(tiny_pipeline, device="cpu")
    assert pipe.latent_mean is not None
    first_inputs = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: first_inputs.append(args[0].clone()))
    with_leak = pipe(PROMPT, seed=4, steps=3, sampler="ddim").images
    hook.remove()
    scheduler = make_scheduler("ddim", pipe.scheduler_config)
    scheduler.set_timesteps(3)
    unet = pipe.unet.config
    noise = initial_noise((unet.in_channels, unet.sample_size, unet.sample_size), 4)
    torch.testing.assert_close(first_inputs[0][:1], start_latents(scheduler, noise, pipe.latent_mean))
    pipe.latent_mean = None  # what a folder without the record does: pure noise
    assert np.abs(pipe(PROMPT, seed=4, steps=3, sampler="ddim").images - with_leak).max() > 1e-3


def test_a_folder_with_a_bad_recorded_mean_is_refused_when_it_loads(tiny_pipeline, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_pipeline, bad, ignore=shutil.ignore_patterns("checkpoints", "cache"))
    info = json.loads((bad / "dallebrain.json").read_text())
    info["sampling"]["latent_mean"] = [0.0]
    (bad / "dallebrain.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="latent_mean must be 4 finite numbers"):
        load_pipeline(bad, device="cpu")
