"""The brain-outline head (models/brain_outline.py): it learns a decoder's halo and removes it, keeps the brain and
the holes inside it, round-trips through its file, refuses bad files and records, and the pipeline trims only the
contrasts its model names, recording it in the sidecar."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from scipy import ndimage

from cli_inprocess import run_cli
from dallebrain.api import load_pipeline
from dallebrain.models import brain_outline as B


def halo_pairs(n: int, side: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(real, decoded): skull-stripped ellipses with a bright rim and a zero background, and the same blurred by
    a 1-px Gaussian, as a decoder's upsampling smears them: a ring of faint pixels outside each brain."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side].astype(np.float32)
    real = np.zeros((n, side, side), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(side * 0.4, side * 0.6, 2)
        ry, rx = rng.uniform(side * 0.2, side * 0.35, 2)
        r = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        brain = r <= 1
        rim = brain & ~ndimage.binary_erosion(brain, iterations=2)
        real[i][brain] = 0.5 + 0.05 * rng.standard_normal(int(brain.sum()))
        real[i][rim] = 0.8
    decoded = np.stack([ndimage.gaussian_filter(x, 1.0) for x in real]).clip(0, 1).astype(np.float32)
    return real, decoded


def threshold_head(level: float = 0.05) -> B.BrainOutline:
    """A hand-set head that keeps exactly the pixels above `level`: logit = SiLU(20 (x - level))."""
    head = B.BrainOutline(width=1, layers=1)
    with torch.no_grad():
        first, last = head.net[0], head.net[2]
        first.weight.zero_()
        first.weight[0, 0, 1, 1] = 10.0  # the net sees 2x - 1: 10 (2x - 1) + 10 - 20 level = 20 (x - level)
        first.bias.fill_(10.0 - 20.0 * level)
        last.weight.fill_(1.0)
        last.bias.zero_()
    return head.eval()


def test_a_trained_head_removes_the_halo_and_keeps_the_brain():
    real, decoded = halo_pairs(40)
    halo = (decoded > 0.05) & (real == 0)
    assert halo.sum() / len(real) > 20  # the blur does leave a ring to remove
    head = B.fit_brain_outline(decoded[:32], real[:32], steps=300, batch_size=8, crop=32, log=None)
    errors = B.outline_errors(head, decoded[32:], real[32:])
    assert errors["halo_removed"] > 0.8
    brain_px = float(((real[32:] > 0) & (decoded[32:] > 0.05)).sum() / 8)
    assert errors["brain_px_cut"] < 0.02 * brain_px
    trimmed = head.trim(decoded[32:])
    assert trimmed.dtype == np.float32 and (trimmed <= decoded[32:]).all()  # it only removes


def test_keep_fills_the_holes_inside_the_brain():
    image = np.zeros((1, 32, 32), np.float32)
    image[0, 6:26, 6:26] = 0.5
    image[0, 14:18, 14:18] = 0.0  # a dark ventricle: below the level, but inside the brain
    kept = threshold_head().keep(image)
    assert kept[0, 15, 15] and kept[0, 6, 6] and not kept[0, 2, 2]
    np.testing.assert_array_equal(threshold_head().trim(image), image)


def test_the_file_round_trips_and_bad_files_are_refused(tmp_path):
    real, decoded = halo_pairs(8, seed=1)
    head = B.fit_brain_outline(decoded, real, steps=20, batch_size=4, crop=32, width=4, layers=2, log=None)
    path = tmp_path / B.FILENAME
    head.save(path)
    again = B.load_brain_outline(path)
    assert (again.width, again.layers) == (4, 2)
    with torch.no_grad():  # stored in fp16: the logits agree to fp16's precision
        a, b = head(torch.from_numpy(decoded[:, None])), again(torch.from_numpy(decoded[:, None]))
    assert torch.allclose(a, b, atol=2e-2)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(B.BrainOutlineError, match="not readable"):
        B.load_brain_outline(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"format": "something else",
                                                                                   "width": "4", "layers": "2"})
    with pytest.raises(B.BrainOutlineError, match="format"):
        B.load_brain_outline(tmp_path / "other.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "shape.safetensors"), metadata={"format": B.FORMAT,
                                                                                   "width": "4", "layers": "2"})
    with pytest.raises(B.BrainOutlineError, match="do not make a head"):
        B.load_brain_outline(tmp_path / "shape.safetensors")


def test_the_record_is_checked():
    assert B.outline_contrasts_of({}) == ()
    assert B.outline_contrasts_of({B.INFO_KEY: {"contrasts": ["T2w"]}}) == ("T2w",)
    with pytest.raises(B.BrainOutlineError, match="list of contrast names"):
        B.outline_contrasts_of({B.INFO_KEY: {"contrasts": "T2w"}})
    assert B.brain_outline_of(None, ("T2w",)) is None


@pytest.fixture(scope="module")
def outlined_model(tiny_pipeline, tmp_path_factory):
    """The tiny pipeline with a head that keeps pixels above 0.3, trimming FLAIR only."""
    model = tmp_path_factory.mktemp("outline") / "model"
    shutil.copytree(tiny_pipeline, model)
    threshold_head(0.3).save(model / "vae" / B.FILENAME)
    info = json.loads((model / "dallebrain.json").read_text())
    info.setdefault("sampling", {})[B.INFO_KEY] = B.record(["FLAIR"], {"note": "test"})
    (model / "dallebrain.json").write_text(json.dumps(info))
    return model


def test_the_pipeline_trims_the_contrasts_its_model_names(outlined_model):
    pipe = load_pipeline(outlined_model)
    prompt = "axial FLAIR slice of a healthy 60-year-old woman"
    made = pipe(prompt, n=2, seed=3, steps=2)
    assert made.settings["outline"].startswith("trimmed")
    pipe.trim_outline = False
    raw = pipe(prompt, n=2, seed=3, steps=2)
    assert raw.settings["outline"] == "as decoded (trimming turned off)"
    np.testing.assert_array_equal(made.images, threshold_head(0.3).trim(raw.images))
    pipe.trim_outline = True
    np.testing.assert_array_equal(pipe.sample([prompt, prompt], [3, 4], steps=2), made.images)  # evaluate's path
    other = pipe("axial T1-weighted slice", n=1, seed=3, steps=2)
    assert other.settings["outline"] == "as decoded"


def test_a_model_naming_a_missing_head_is_refused_in_one_line(outlined_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(outlined_model, model)
    (model / "vae" / B.FILENAME).unlink()
    with pytest.raises(ValueError, match="brain_outline.safetensors is missing"):
        load_pipeline(model)
    B.drop_brain_outline(model)  # what a recipe replacing the VAE does
    assert "outline" not in load_pipeline(model)("axial FLAIR", n=1, seed=0, steps=2).settings


def test_evaluate_reconstructions_are_trimmed_like_the_pipeline(outlined_model):
    from dallebrain.evaluation.reconstruction import reconstruct, reconstruct_reference

    pipe = load_pipeline(outlined_model)
    real, _ = halo_pairs(2, side=32)  # a multiple of the VAE's downsampling
    plain = reconstruct(pipe.vae, real)
    both = reconstruct_reference(pipe.vae, real, [], pipe, ["FLAIR", "T1w"])
    np.testing.assert_array_equal(both[0], threshold_head(0.3).trim(plain[:1])[0])
    np.testing.assert_array_equal(both[1], plain[1])


def test_a_stock_client_gets_the_same_trim_and_generate_can_keep_the_outline(outlined_model, tmp_path):
    """The export carries the head (vae/) and its record; `standardise_stock_images` with the export's folder gives
    our slices; `generate --keep-outline` writes them as decoded and says so in the sidecar."""
    from dallebrain.pipelines.grey_levels import standardise_stock_images

    assert run_cli("export", "--model", outlined_model, "--out", tmp_path / "stock").returncode == 0
    assert (tmp_path / "stock" / "vae" / B.FILENAME).is_file()
    pipe = load_pipeline(outlined_model)
    pipe.trim_outline = False
    raw = pipe("coronal FLAIR", n=1, seed=1, steps=2).images
    pipe.trim_outline = True
    ours = pipe("coronal FLAIR", n=1, seed=1, steps=2).images
    sampling = json.loads((tmp_path / "stock" / "dallebrain.json").read_text())["sampling"]
    np.testing.assert_array_equal(standardise_stock_images(raw, "coronal FLAIR", sampling, tmp_path / "stock"), ours)
    for flag, expected in (([], "trimmed"), (["--keep-outline"], "as decoded (trimming turned off)")):
        out = tmp_path / f"out{len(flag)}"
        done = run_cli("generate", "axial FLAIR", "--model", outlined_model, "--steps", "2", "--out", out, *flag)
        assert done.returncode == 0, done.stderr
        assert json.loads((out / "seed-000000.json").read_text())["outline"].startswith(expected)
