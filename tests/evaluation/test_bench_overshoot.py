"""benchmarks/bench_overshoot.py on a tiny pipeline: the decoder tap sees exactly what the pipeline decodes (the
clamped image is its unclamped output clamped), it leaves the VAE as it found it, and the rows carry the held-out
slices' own numbers."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_overshoot")


def test_the_tap_records_the_unclamped_output_of_every_generated_slice(bench, tiny_pipeline):
    from dallebrain.api import load_pipeline

    pipe = load_pipeline(tiny_pipeline)
    tap = bench.DecoderTap(pipe.vae)
    images = pipe.sample(["axial T1-weighted MRI slice", "coronal FLAIR MRI slice"], [3, 4], steps=2)
    latents, raw = tap.take(len(images))
    tap.close()
    assert raw.shape == images.shape and latents.shape[0] == 2 and latents.shape[1] == pipe.vae.config.latent_channels
    assert np.allclose(np.clip(raw, 0, 1), images, atol=1e-5)  # the pipeline's slices are the tap's, clamped
    assert "decode" not in vars(pipe.vae)  # closed: the class's decode again
    assert tap.latents == [] and tap.raw == []


def test_rows_per_contrast_carry_the_real_slices_numbers(bench, tiny_pipeline, tiny_prepared):
    from dallebrain.api import load_pipeline
    from dallebrain.evaluation.metrics import top_share

    sets = bench.held_out_by_contrast(tiny_prepared, 8, 2, 0)
    assert sets and all(len(real) <= 2 for _, _, real in sets.values())
    pipe = load_pipeline(tiny_pipeline)
    pipe.attribute_guidance = 3.0
    rows = bench.measure(pipe, sets, 0)
    assert pipe.attribute_guidance == 3.0  # the pipeline's own setting back, not reset to the model's
    assert [r["contrast"] for r in rows] == list(sets)
    for row in rows:
        real = sets[row["contrast"]][2]
        assert row["real"][0] == top_share(real)
        for name in ("default", "no guidance"):
            share, median, p99, std_ratio = row[name]
            assert 0 <= share <= 1 and 0 <= median <= 1 and np.isfinite(p99)
            assert std_ratio.shape == (4,) and (std_ratio > 0).all()
    assert "| contrast (n) |" in bench.markdown(rows)


def test_the_trajectory_decodes_the_estimate_each_step_heads_for(bench, tiny_pipeline, tiny_prepared):
    """Every row holds the chosen steps (the last near t = 0) in sampling order with shares in [0, 1], and the
    pipeline's scheduler factory is put back."""
    import dallebrain.pipelines.text2mri as text2mri
    from dallebrain.api import load_pipeline

    made = text2mri.make_scheduler
    sets = bench.held_out_by_contrast(tiny_prepared, 8, 2, 0)
    pipe = load_pipeline(tiny_pipeline)
    rows = bench.trajectory(pipe, sets, 0, at=(0, 1, -1))
    assert text2mri.make_scheduler is made
    for row in rows:
        timesteps = [t for t, _ in row["shares"]]
        assert row["steps"] == [1, 2, 20] and timesteps == sorted(timesteps, reverse=True) and timesteps[-1] < 100
        assert all(0 <= share <= 1 for _, share in row["shares"]) and 0 <= row["final"] <= 1
    assert "| step 1 (t = " in bench.trajectory_markdown(rows)


def test_the_one_step_estimate_is_measured_per_timestep(bench, tiny_pipeline, tiny_prepared):
    from dallebrain.api import load_pipeline

    sets = bench.held_out_by_contrast(tiny_prepared, 8, 2, 0)
    rows = bench.one_step(load_pipeline(tiny_pipeline), sets, 0, timesteps=(900, 100))
    assert [r["contrast"] for r in rows] == list(sets)
    for row in rows:
        assert [t for t, _, _ in row["cells"]] == [900, 100]
        assert all(spread > 0 and np.isfinite(spread) and 0 <= share <= 1 for _, spread, share in row["cells"])
    assert "| t = 900 | t = 100 |" in bench.one_step_markdown(rows)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_the_clean_estimate_inverts_the_forward_process(bench, prediction_type):
    import torch
    from diffusers import DDPMScheduler

    from dallebrain.models.unet import noise_scheduler_config

    scheduler = DDPMScheduler.from_config(noise_scheduler_config(prediction_type))
    clean, noise, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([700])
    noisy = scheduler.add_noise(clean, noise, t)
    output = noise if prediction_type == "epsilon" else scheduler.get_velocity(clean, noise, t)
    assert torch.allclose(bench.clean_estimate(scheduler, output, 700, noisy), clean, atol=1e-4)


def test_a_folder_that_is_not_prepared_is_refused_in_one_line(bench, tmp_path, capsys):
    assert bench.main(["--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
