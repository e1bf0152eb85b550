"""Sampling precision (pipelines/precision.py): bf16 autocast for the UNet and VAE decoder, parity with fp32, the
"auto" rule, the image layer kept fp32, and the precision used recorded in every sidecar."""

import json

import numpy as np
import pytest
import torch

from cli_inprocess import run_cli
from dallebrain.api import load_pipeline
from dallebrain.pipelines import precision as P

PROMPT = "axial T2-weighted slice of a healthy 70-year-old woman at the level of the lateral ventricles"


def test_bf16_and_fp32_give_nearly_the_same_image_for_a_seed(tiny_pipeline):
    pipe = load_pipeline(tiny_pipeline, device="cpu", precision="fp32")
    seen = set()
    pipe.unet.conv_out.register_forward_hook(lambda module, args, output: seen.add(output.dtype))
    fp32 = pipe(PROMPT, n=2, seed=5, steps=3).images
    assert seen == {torch.float32}
    pipe.precision = "bf16"
    seen.clear()
    bf16 = pipe(PROMPT, n=2, seed=5, steps=3).images
    assert seen == {torch.bfloat16}  # the UNet really computed in bf16
    assert bf16.dtype == np.float32 and 0 <= bf16.min() and bf16.max() <= 1
    # Only rounding differs: bf16 keeps 8 mantissa bits (0.4 % relative) in the UNet's and decoder's layers,
    # while the latents, the sampler's state and the image layer stay fp32, so the error does not compound over
    # the steps. Measured here: a mean absolute difference of about 0.001 (of 1) on this pipeline, 0.002 on the
    # shipped one; 0.01 (2.5 steps of an 8-bit PNG) is the bound, and the images must not be the same bytes.
    difference = np.abs(bf16 - fp32)
    assert difference.mean() < 0.01 and difference.max() < 0.1
    assert difference.max() > 0
    # still reproducible and image i independent of n, as in fp32
    np.testing.assert_array_equal(bf16, pipe(PROMPT, n=2, seed=5, steps=3).images)
    np.testing.assert_array_equal(bf16[1], pipe(PROMPT, n=1, seed=6, steps=3).images[0])


def test_the_image_layer_stays_fp32_so_bright_pixels_keep_their_precision(tiny_pipeline):
    """The decoder's last convolution is the image: in bf16 a pixel in [0.5, 1] could take only 128 values."""
    pipe = load_pipeline(tiny_pipeline, device="cpu", precision="bf16")
    seen = {}
    for name in ("conv_in", "conv_out"):
        def record(module, args, output, name=name) -> None:  # a hook returning a value would replace the output
            seen[name] = output.dtype

        getattr(pipe.vae.decoder, name).register_forward_hook(record)
    images = pipe(PROMPT, n=2, seed=1, steps=2).images
    assert seen == {"conv_in": torch.bfloat16, "conv_out": torch.float32}
    bright = images[images > 0.5]
    assert bright.size > 200 and len(np.unique(bright)) > 128


def test_auto_is_bf16_exactly_where_the_cpu_computes_it_natively(monkeypatch):
    for avx512_bf16, amx, expected in ((True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert P.resolve_precision("auto", "cpu") == expected
        assert P.resolve_precision("fp32", "cpu") == "fp32" and P.resolve_precision("bf16", "cpu") == "bf16"
        assert isinstance(P.compute_context("auto", "cpu"), torch.autocast) == (expected == "bf16")
    with pytest.raises(ValueError, match="unknown --precision 'fp16': choose from auto, bf16, fp32"):
        P.check_precision("fp16", "--precision")
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        load_pipeline("/nonexistent-model", precision="half")  # refused before the folder is even looked at


def _generate(*args, cwd):
    return run_cli("generate", PROMPT, *args, cwd=cwd)


def test_generate_records_the_precision_it_used_and_refuses_an_unknown_one(tiny_pipeline, tmp_path):
    done = _generate("--model", str(tiny_pipeline), "--steps", "2", "--precision", "fp32", "--out", "a", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "a" / "seed-000000.json").read_text())["precision"] == "fp32"
    # "auto" is recorded resolved, so a sidecar says what the image was computed in
    pipe = load_pipeline(tiny_pipeline, device="cpu")
    assert pipe(PROMPT, steps=1).settings["precision"] == P.resolve_precision("auto", "cpu")
    bad = _generate("--model", str(tiny_pipeline), "--precision", "fp8", "--out", "b", cwd=tmp_path)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and lines == ["error: unknown --precision 'fp8': choose from auto, bf16, fp32"]
    assert not (tmp_path / "b").exists()
