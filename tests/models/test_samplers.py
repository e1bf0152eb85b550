"""The sampler names (vocab.SAMPLERS) and the diffusers schedulers make_scheduler builds for them."""

import numpy as np
import pytest

from dallebrain.models.unet import make_scheduler, noise_scheduler_config
from dallebrain.vocab import SAMPLER_CHOICES, SAMPLERS


def test_every_sampler_name_builds_its_scheduler_on_the_models_noise_schedule():
    base = {**noise_scheduler_config(), "prediction_type": "v_prediction"}
    import diffusers

    for name, cls in SAMPLERS.items():
        scheduler = make_scheduler(name, base)
        assert isinstance(scheduler, getattr(diffusers, cls))
        assert scheduler.config.prediction_type == "v_prediction"  # the training schedule travels
        np.testing.assert_allclose(scheduler.alphas_cumprod.numpy(),
                                   make_scheduler("ddim", base).alphas_cumprod.numpy(), rtol=1e-6)
    assert SAMPLER_CHOICES[0] == "auto" and set(SAMPLER_CHOICES[1:]) == set(SAMPLERS)


@pytest.mark.parametrize("steps", [8, 12, 20, 50])
def test_dpm_karras_starts_where_the_spaced_steps_start_and_spends_the_rest_near_the_image(steps):
    """dpm-karras (models/karras.py): DPM-Solver++ whose first step is the evenly spaced schedule's (so the
    signal leak's start is the same) and whose later steps follow Karras et al.'s levels, finer near the image
    than the evenly spaced ones; plain dpm keeps the model's config as it is (Karras levels if it asks)."""
    karras, plain = make_scheduler("dpm-karras"), make_scheduler("dpm")
    for s in (karras, plain):
        s.set_timesteps(steps)
    k, p = karras.timesteps.numpy(), plain.timesteps.numpy()
    assert karras.config.use_karras_sigmas and not plain.config.use_karras_sigmas
    assert karras.config.algorithm_type == plain.config.algorithm_type == "dpmsolver++"
    assert len(k) == len(p) == steps and k[0] == p[0]
    assert k[-2] < p[-1] and k[len(k) // 2] < p[len(p) // 2]  # denser at low noise: below the spaced ones
    stock = make_scheduler("dpm", {**noise_scheduler_config(), "use_karras_sigmas": True})
    stock.set_timesteps(steps)
    assert stock.config.use_karras_sigmas and stock.timesteps[0] == 999  # diffusers' own: from the top


@pytest.mark.parametrize("name", ["unipc", "dpm-karras"])
def test_a_sampler_follows_the_exact_path_of_an_oracle_model(name):
    """An oracle that predicts the true velocity of a fixed x0 makes every step land exactly on the forward
    process of that x0 and the start's noise, sqrt(a) x0 + sqrt(1 - a) noise at the next timestep (a constant
    data prediction is what these data-prediction solvers integrate exactly); so the scheduler reads the
    v-prediction as the model was trained, at every step and not only at the end."""
    import torch

    scheduler = make_scheduler(name, {**noise_scheduler_config(), "prediction_type": "v_prediction"})
    scheduler.set_timesteps(8)
    x0 = torch.linspace(-1, 1, 2 * 4 * 4 * 4).reshape(2, 4, 4, 4)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    # alpha_bar of each step's noise level as the solver holds it (sigma = sqrt((1 - a) / a); Karras levels fall
    # between integer timesteps)
    alphas = 1.0 / (1.0 + scheduler.sigmas.double() ** 2)
    x = scheduler.add_noise(x0, noise, scheduler.timesteps[:1])
    timesteps = scheduler.timesteps.tolist()
    for i, t in enumerate(timesteps):
        a = alphas[i].float()
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()  # the noise that x holds at t, for this x0
        x = scheduler.step(a.sqrt() * eps - (1 - a).sqrt() * x0, t, x).prev_sample
        if i + 1 < len(timesteps):
            a_next = alphas[i + 1].float()
            torch.testing.assert_close(x, a_next.sqrt() * x0 + (1 - a_next).sqrt() * noise, atol=1e-3, rtol=0)
    torch.testing.assert_close(x, x0, atol=2e-3, rtol=0)
