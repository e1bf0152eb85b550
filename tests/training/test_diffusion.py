"""The diffusion training mechanics on their own: targets and min-SNR weights against hand computations, the
loss of an oracle and of a zero denoiser, the EMA warm-up, and the seed streams of a micro-batch."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from dallebrain.models.unet import noise_scheduler_config
from dallebrain.training.diffusion import (
    MICRO_BATCH_STREAMS,
    SeedStream,
    denoising_loss,
    denoising_target,
    ema_copy,
    ema_decay,
    micro_batch,
    min_snr_weights,
    update_ema,
)


def _scheduler(prediction_type: str) -> DDPMScheduler:
    return DDPMScheduler.from_config({**noise_scheduler_config(), "prediction_type": prediction_type})


def _alpha_bar(t: torch.Tensor) -> torch.Tensor:
    """Stable Diffusion's scaled-linear schedule by hand (float64), per sample, shaped to broadcast."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)[t].view(-1, 1, 1, 1)


def _data(n: int = 3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, 2, 2, generator=g), torch.randn(n, 4, 2, 2, generator=g)


def test_epsilon_target_is_the_noise_and_velocity_target_is_sqrt_abar_noise_minus_sqrt_1_minus_abar_x0():
    x0, noise = _data()
    t = torch.tensor([0, 500, 999])
    assert torch.equal(denoising_target(_scheduler("epsilon"), x0, noise, t), noise)
    abar = _alpha_bar(t)
    by_hand = abar.sqrt() * noise.double() - (1 - abar).sqrt() * x0.double()  # Salimans & Ho 2022
    torch.testing.assert_close(denoising_target(_scheduler("v_prediction"), x0, noise, t).double(), by_hand,
                               rtol=1e-5, atol=1e-5)


def test_min_snr_weights():
    alphas_cumprod = torch.tensor([0.5, 0.9, 0.99])  # SNR 1, 9, 99
    t = torch.tensor([0, 1, 2])
    torch.testing.assert_close(min_snr_weights(alphas_cumprod, t, 5.0, velocity=False),
                               torch.tensor([1.0, 5 / 9, 5 / 99]))
    torch.testing.assert_close(min_snr_weights(alphas_cumprod, t, 5.0, velocity=True),
                               torch.tensor([0.5, 0.5, 5 / 100]))


class _Recorder:
    """A denoiser that predicts zeros and keeps what it was shown, so the test can recompute the target."""

    def __call__(self, noisy, t):
        self.noisy, self.t = noisy, t
        return torch.zeros_like(noisy)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_denoising_loss_weights_each_sample_by_min_snr(prediction_type):
    x0, _ = _data(64)
    scheduler = _scheduler(prediction_type)
    recorder = _Recorder()
    torch.manual_seed(1)
    losses = denoising_loss(recorder, scheduler, x0, snr_gamma=5.0)
    abar = _alpha_bar(recorder.t)
    noise = (recorder.noisy.double() - abar.sqrt() * x0) / (1 - abar).sqrt()
    target = noise if prediction_type == "epsilon" else abar.sqrt() * noise - (1 - abar).sqrt() * x0
    per_sample = (target ** 2).mean(dim=(1, 2, 3))  # the prediction is zero
    snr = abar.flatten() / (1 - abar.flatten())
    weights = snr.clamp(max=5.0) / (snr + 1 if prediction_type == "v_prediction" else snr)
    assert (weights < 0.99).any()  # some timesteps are early enough for the weighting to matter
    torch.testing.assert_close(losses["mse"].double(), per_sample.mean(), rtol=1e-4, atol=0)
    torch.testing.assert_close(losses["loss"].double(), (per_sample * weights).mean(), rtol=1e-4, atol=0)
    torch.manual_seed(1)
    unweighted = denoising_loss(_Recorder(), scheduler, x0, snr_gamma=0.0)
    assert torch.equal(unweighted["loss"], unweighted["mse"]) and torch.equal(unweighted["mse"], losses["mse"])


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_a_denoiser_that_knows_the_clean_latents_has_zero_loss(prediction_type):
    x0, _ = _data(8)
    scheduler = _scheduler(prediction_type)

    def oracle(noisy, t):
        abar = _alpha_bar(t)
        noise = (noisy.double() - abar.sqrt() * x0) / (1 - abar).sqrt()
        return denoising_target(scheduler, x0, noise.float(), t)

    assert float(denoising_loss(oracle, scheduler, x0, snr_gamma=5.0)["loss"]) < 1e-6


def test_ema_warm_up_forgets_the_first_weights_quickly_then_holds_the_configured_decay():
    assert ema_decay(0, 0.999) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert ema_decay(1, 0.999) == pytest.approx(2 / 11)
    assert ema_decay(8, 0.9) == pytest.approx(0.5)
    assert ema_decay(90, 0.9) == 0.9  # 91 / 100 would exceed the configured decay
    assert ema_decay(10 ** 6, 0.999) == 0.999


def test_ema_update_moves_the_copy_toward_the_live_weights():
    live = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        live.weight.copy_(torch.tensor([[1.0, 2.0]]))
    ema = ema_copy(live, 0.9)
    assert ema is not live and not ema.weight.requires_grad and ema_copy(live, 0.0) is None
    with torch.no_grad():
        live.weight.copy_(torch.tensor([[3.0, -2.0]]))
    update_ema(ema, live, step=8, max_decay=0.9)  # decay 0.5 at step 8
    torch.testing.assert_close(ema.weight, torch.tensor([[2.0, 0.0]]))
    update_ema(ema, live, step=10 ** 6, max_decay=0.9)  # decay 0.9
    torch.testing.assert_close(ema.weight, torch.tensor([[2.1, -0.2]]))


def test_ema_update_covers_every_tensor_and_refuses_another_model():
    live = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.GroupNorm(2, 4), torch.nn.Linear(4, 2))
    ema = ema_copy(live, 0.9)
    with torch.no_grad():
        for p in live.parameters():
            p.add_(1.0)
    before = [e.clone() for e in ema.parameters()]
    update_ema(ema, live, step=8, max_decay=0.9)  # decay 0.5: halfway
    for b, e, p in zip(before, ema.parameters(), live.parameters(), strict=True):
        torch.testing.assert_close(e, (b + p) / 2)
    with pytest.raises(ValueError, match="EMA copy holds 6 tensors, the live model 2"):
        update_ema(ema, torch.nn.Linear(3, 4), step=8, max_decay=0.9)


def test_seed_streams_are_distinct():
    assert len({int(s) for s in SeedStream}) == len(SeedStream.__members__)  # an equal value would alias
    draws = {s: micro_batch(100, 4, 0, 3, 1, 0, s)[1].integers(10 ** 9) for s in SeedStream}
    assert len(set(draws.values())) == len(draws)
    rows = [tuple(micro_batch(1000, 8, 0, step, micro, rank, SeedStream.CAPTIONS)[0])
            for step, micro, rank in ((0, 0, 0), (0, 1, 0), (1, 0, 0), (0, 0, 1))]
    assert len(set(rows)) == len(rows)


def test_seed_streams_are_stable():
    """The draws of runs trained before the streams had names: a change here changes every such run (and
    breaks the exact resume of one in progress)."""
    rows, rng = micro_batch(100, 4, 0, 3, 1, 0, SeedStream.CAPTIONS)
    assert rows.tolist() == [59, 62, 49, 32] and rng.integers(1000, size=3).tolist() == [819, 682, 734]
    assert micro_batch(100, 4, 0, 3, 1, 0, SeedStream.PRIOR_CAPTIONS)[1].integers(1000, size=3).tolist() == [
        880, 202, 103]
    assert micro_batch(100, 4, 0, 3, 1, 0, SeedStream.DECODER_EMBEDS)[1].integers(1000, size=3).tolist() == [
        499, 717, 955]
    again, _ = micro_batch(100, 4, 0, 3, 1, 0, SeedStream.CAPTIONS)
    np.testing.assert_array_equal(rows, again)


def test_gradient_accumulation_beyond_the_streams_is_refused():
    micro_batch(10, 2, 0, 0, MICRO_BATCH_STREAMS - 1, 0, SeedStream.CAPTIONS)
    with pytest.raises(ValueError, match="gradient_accumulation"):
        micro_batch(10, 2, 0, 0, MICRO_BATCH_STREAMS, 0, SeedStream.CAPTIONS)
