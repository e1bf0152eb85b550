"""Partial noising and re-denoising: windows, context kept, intensity matching, settings checked."""

import numpy as np
import pytest
import torch

from dallebrain.anomaly.attributes import SliceAttributes
from dallebrain.anomaly.diffusion import PartialNoising, _scheduler, denoise_from, match_intensity, windows
from dallebrain.anomaly.methods import Batch, run_method


def test_windows_overlap_by_half_and_cover_every_latent_pixel():
    ws = windows(32, 16)
    assert len(ws) == 9
    cover = np.zeros((32, 32), int)
    for r, c in ws:
        assert r.stop - r.start == 16 and c.stop - c.start == 16
        cover[r, c] += 1
    assert cover.min() >= 1
    assert windows(10, 16) == [(slice(0, 10), slice(0, 10))]
    assert windows(20, 8)[-1] == (slice(12, 20), slice(12, 20))  # the last window ends at the edge


def test_intensity_matching_undoes_gain_and_offset_and_ignores_a_lesion():
    rng = np.random.default_rng(0)
    image = rng.uniform(0.2, 0.9, (40, 40)).astype(np.float32)
    recon = (image - 0.1) / 1.5
    lesion = np.zeros_like(image, bool)
    lesion[5:10, 5:10] = True  # 1.6 % of the brain, absent from the reconstruction
    image_with_lesion = np.where(lesion, 1.0, image)
    matched = match_intensity(recon, image_with_lesion, np.ones_like(image, bool))
    assert np.abs(matched - image)[~lesion].max() < 1e-3


@pytest.mark.parametrize("kwargs,words", [({"levels": (0.0,)}, "noise levels"), ({"levels": (1.0,)}, "noise levels"),
                                          ({"levels": ()}, "noise levels"), ({"steps": 0}, "steps"),
                                          ({"guidance": -1.0}, "guidance"), ({"patch": 1}, "patch")])
def test_bad_settings_are_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        PartialNoising(**kwargs)


@pytest.fixture(scope="module")
def pipe(tiny_pipeline):
    from dallebrain.api import load_pipeline

    return load_pipeline(tiny_pipeline, device="cpu")


def test_the_schedule_starts_at_the_noise_level_and_takes_the_steps_asked(pipe):
    for level, steps in ((0.3, 5), (0.7, 10), (0.5, 1)):
        _, timesteps = _scheduler(pipe, level, steps)
        assert len(timesteps) == steps
        assert int(timesteps.max()) <= level * 1000
        assert int(timesteps.max()) > (level - 0.2) * 1000  # it does start high: the noise really hides


def test_patch_wise_denoising_changes_only_its_window(pipe):
    z0 = torch.randn(2, pipe.unet.config.in_channels, 32, 32, generator=torch.Generator().manual_seed(0))
    cond = pipe.encode_prompt("axial T2-weighted slice of a healthy adult")[0].expand(2, -1, -1)
    uncond = pipe.encode_prompt("")[0].expand(2, -1, -1)
    window = (slice(8, 24), slice(0, 16))
    out = denoise_from(pipe, z0, cond, uncond, 0.5, PartialNoising(steps=3), window)
    outside = torch.ones_like(z0, dtype=torch.bool)
    outside[..., window[0], window[1]] = False
    assert torch.equal(out[outside], z0[outside])
    assert not torch.allclose(out[~outside], z0[~outside])


def test_a_guidance_distilled_model_is_refused_in_one_line(pipe, monkeypatch):
    """A student taught the default sampling (recipes/guidance_distill.py) is not the model of normal brains the
    healing needs."""
    z0 = torch.zeros(1, pipe.unet.config.in_channels, 32, 32)
    cond = pipe.encode_prompt("axial T2-weighted slice of a healthy adult")[0]
    monkeypatch.setattr(pipe, "guidance_distilled", 2.0)
    with pytest.raises(ValueError, match="guidance-distilled") as err:
        denoise_from(pipe, z0, cond, cond, 0.5, PartialNoising(steps=2))
    assert "\n" not in str(err.value)


def test_a_slice_map_does_not_depend_on_the_batch_it_is_in(pipe):
    rng = np.random.default_rng(0)
    images = np.zeros((2, 64, 64), np.float32)
    images[:, 12:52, 12:52] = rng.uniform(0.3, 0.9, (2, 40, 40))
    attributes = [SliceAttributes("axial", 18.0, "T2w"), SliceAttributes("axial", 0.0, "FLAIR")]
    setting = PartialNoising(levels=(0.4,), steps=2, normative=False)
    both = run_method("diffusion", pipe, Batch(images, attributes), setting=setting)
    alone = run_method("diffusion", pipe, Batch(images[1:], attributes[1:]), setting=setting)
    assert both.maps.shape == (2, 64, 64) and both.reconstructions.shape == (2, 64, 64)
    assert np.allclose(both.maps[1], alone.maps[0], atol=1e-4)
    assert both.maps[:, :12].max() == 0  # nothing outside the brain
    with pytest.raises(ValueError, match="needs a normal model"):
        run_method("diffusion", pipe, Batch(images, attributes))  # normative by default


def test_a_calibrated_map_is_zero_on_the_healthy_slice_it_learnt_from_and_finds_what_it_did_not(pipe):
    from dallebrain.anomaly.cases import Case
    from dallebrain.anomaly.fitting import fit_normal_model, fit_residuals

    rng = np.random.default_rng(1)
    healthy = np.zeros((64, 64), np.float32)
    healthy[10:54, 10:54] = rng.uniform(0.4, 0.6, (44, 44))
    attributes = SliceAttributes("axial", 18.0, "T2w")
    case = Case(healthy, np.zeros((64, 64), np.uint8), attributes, "s1", "none", "fit")
    normal = fit_normal_model(pipe, [case], pool_mm=4.5)
    setting = PartialNoising(levels=(0.5,), steps=2, calibrated=True)
    with pytest.raises(ValueError, match="reconstructions"):  # not calibrated yet: refused in one line
        run_method("diffusion", pipe, Batch(healthy[None], [attributes]), normal, setting)
    fit_residuals(pipe, normal, setting, [case])
    assert normal.stats(attributes, setting.residual_name(0.5))[0].shape == (64, 64)
    same = run_method("diffusion", pipe, Batch(healthy[None], [attributes]), normal, setting)
    assert np.abs(same.maps).max() < 1e-3  # its own residual is the healthy residual there
    lesioned = healthy.copy()
    lesioned[28:36, 28:36] = 1.0
    found = run_method("diffusion", pipe, Batch(lesioned[None], [attributes]), normal, setting).maps[0]
    assert found[28:36, 28:36].mean() > 10 * found[12:20, 40:52].mean()
