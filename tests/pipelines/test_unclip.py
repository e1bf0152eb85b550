"""The unCLIP pipeline on a folder of tiny untrained components: shapes, seeds, variations, interpolation,
refusals, and the API's generate_to_folder. (Trained components: tests/training/test_unclip_stages.py.)"""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from dallebrain.pipelines.unclip import UnCLIPPipeline, slerp

PROMPT = "axial T2-weighted slice of a healthy 70-year-old woman at the level of the lateral ventricles"
DIM = 32


@pytest.fixture(scope="module")
def folder(tiny_unclip):
    """clip/, vae/, prior/, decoder/ of random tiny models (64x64 slices, 4x16x16 latents)."""
    return tiny_unclip


@pytest.fixture(scope="module")
def pipe(folder):
    return UnCLIPPipeline.from_pretrained(folder)


def test_text_to_image_shapes_seeds_and_settings(pipe):
    a = pipe(PROMPT, n=2, seed=5, steps=2, prior_steps=3)
    assert a.images.shape == (2, 64, 64) and a.images.dtype == np.float32
    assert 0 <= a.images.min() and a.images.max() <= 1
    assert a.seeds == [5, 6]
    assert a.settings["route"] == "unclip" and a.settings["prior_steps"] == 3
    assert {"prompt", "negative_prompt", "steps", "guidance", "sampler", "model_hash"} <= set(a.settings)
    # "auto" on the decoder is DPM-Solver++ whatever the folder's per-contrast table says; the request is recorded
    assert (a.settings["sampler"], a.settings["sampler_requested"], a.settings["steps"]) == ("dpm", "auto", 2)
    assert pipe.sampler_table == {}
    again = pipe(PROMPT, n=2, seed=5, steps=2, prior_steps=3)
    np.testing.assert_array_equal(a.images, again.images)
    alone = pipe(PROMPT, n=1, seed=6, steps=2, prior_steps=3)  # image i depends only on seed + i, byte for byte
    np.testing.assert_array_equal(a.images[1], alone.images[0])
    assert not np.allclose(a.images[0], a.images[1])
    assert pipe.unet is not None and pipe.lora is None and pipe.folder is not None
    with pytest.raises(ValueError, match="prior_steps"):
        pipe(PROMPT, prior_steps=0)


def test_prior_embeddings_are_unit_vectors_and_guidance_one_runs_unbatched(pipe):
    embeds = pipe.image_embeds_of_prompt(PROMPT, [0, 1], prior_steps=2, prior_guidance=1.0)
    assert embeds.shape == (2, DIM)
    torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(2))
    assert pipe(PROMPT, steps=2, guidance=1.0, prior_steps=2, sampler="ddim").images.shape == (1, 64, 64)


def test_the_decoder_takes_its_own_unguided_steps_and_records_them(folder, tmp_path):
    """The decoder's steps below dallebrain.json's "unclip" -> "sampling" -> unguided_below_timestep run its
    conditional row alone (the LDM's own setting does not reach it); results record it; the prior is untouched."""
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    info = json.loads((copy / "dallebrain.json").read_text()) if (copy / "dallebrain.json").exists() else {}
    info.setdefault("sampling", {})["unguided_below_timestep"] = {"T2w": 999}  # the LDM's: not the decoder's
    (copy / "dallebrain.json").write_text(json.dumps(info))
    ldm_only = UnCLIPPipeline.from_pretrained(copy)
    assert ldm_only.unguided_table == {}
    before = ldm_only(PROMPT, seed=3, steps=3, prior_steps=2)
    assert "unguided_below_timestep" not in before.settings
    info.setdefault("unclip", {}).setdefault("sampling", {})["unguided_below_timestep"] = {"T2w": 999}
    (copy / "dallebrain.json").write_text(json.dumps(info))
    pipe = UnCLIPPipeline.from_pretrained(copy)
    rows = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    after = pipe(PROMPT, seed=3, steps=3, prior_steps=2)
    hook.remove()
    assert rows == [1, 1, 1] and after.settings["unguided_below_timestep"] == 999
    assert not np.allclose(before.images, after.images)


def test_kept_compares_contrast_plane_and_level_on_the_same_plane():
    from dallebrain.pipelines.variation_check import LEVEL_TOLERANCE_MM, kept

    source = {"contrast": "T1w", "orientation": "axial", "level_mm": 20.0}
    assert kept(source, dict(source)) == {"contrast": True, "orientation": True, "level": True}
    near = {**source, "level_mm": 20.0 + LEVEL_TOLERANCE_MM}
    assert kept(source, near)["level"] and not kept(source, {**near, "level_mm": 31.0})["level"]
    other_plane = {"contrast": "T2w", "orientation": "coronal", "level_mm": 20.0}  # same number, another axis
    assert kept(source, other_plane) == {"contrast": False, "orientation": False, "level": False}


def test_variations_and_interpolation_of_real_slices(pipe, tiny_prepared):
    from dallebrain.data.dataset import SliceDataset

    data = SliceDataset(tiny_prepared, None)
    a, b = data.image(0), data.image(len(data) - 1)
    result = pipe.variations(a, n=3, seed=2, steps=2)
    assert result.images.shape == (3, 64, 64) and result.seeds == [2, 3, 4]
    assert set(result.settings["source_estimated"]) == {"contrast", "orientation", "level_mm"}
    assert len(result.per_image) == 3 and all({"estimated", "kept"} == set(r) for r in result.per_image)
    assert 0 <= result.images.min() and result.images.max() <= 1
    frames = pipe.interpolate(a, b, n_frames=3, seed=1, steps=2)
    assert frames.images.shape == (3, 64, 64) and frames.settings["fractions"] == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="2-D"):
        pipe.variations(np.zeros((2, 64, 64)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pipe.variations(np.full((64, 64), 3.0))


def test_slerp_stays_on_the_sphere_and_hits_both_ends():
    a, b = torch.nn.functional.normalize(torch.randn(2, DIM), dim=-1)
    path = slerp(a, b, torch.linspace(0, 1, 5))
    torch.testing.assert_close(path.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)


def test_generate_to_folder_writes_outputs(pipe, tmp_path):
    from dallebrain.api import generate_to_folder

    written = generate_to_folder(pipe, PROMPT, tmp_path, n=1, seed=0, steps=2)
    sidecar = json.loads(written[0]["json"].read_text())
    assert sidecar["route"] == "unclip" and sidecar["seed"] == 0 and written[0]["png"].is_file()


def test_incomplete_or_pickled_folders_are_refused(folder, tmp_path):
    broken = tmp_path / "no-prior"
    shutil.copytree(folder, broken)
    shutil.rmtree(broken / "prior")
    with pytest.raises(ValueError, match="prior"):
        UnCLIPPipeline.from_pretrained(broken)
    pickled = tmp_path / "pickled"
    shutil.copytree(folder, pickled)
    (pickled / "decoder" / "diffusion_pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="pickle"):
        UnCLIPPipeline.from_pretrained(pickled)


def _cli(*args, cwd):
    from cli_inprocess import run_cli

    return run_cli(*args, cwd=cwd)


def test_cli_unclip_route_and_variations(folder, tiny_prepared, tmp_path):
    import pandas as pd

    result = _cli("generate", PROMPT, "--route", "unclip", "--model", str(folder), "--steps", "2",
                  "--prior-steps", "2", "--out", "gen", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    sidecar = json.loads((tmp_path / "gen" / "seed-000000.json").read_text())
    assert sidecar["route"] == "unclip" and sidecar["prior_steps"] == 2
    slice_path = tiny_prepared / pd.read_parquet(tiny_prepared / "metadata.parquet")["image_path"].iloc[0]
    result = _cli("variations", str(slice_path), "--model", str(folder), "--n", "2", "--steps", "2", "--out", "var",
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    sidecar = json.loads((tmp_path / "var" / "variation-seed-000001.json").read_text())
    assert sidecar["source_image"] == slice_path.name and sidecar["placement"].startswith("unknown")
    assert sidecar["source_image_sha256"] == hashlib.sha256(slice_path.read_bytes()).hexdigest()
    # what the variation kept of its source: readings of both, and the comparison
    source, own = sidecar["source_estimated"], sidecar["estimated"]
    for reading in (source, own):
        assert reading["contrast"] in ("T1w", "T2w", "PDw", "FLAIR")
        assert reading["orientation"] in ("axial", "coronal", "sagittal") and np.isfinite(reading["level_mm"])
    from dallebrain.pipelines.variation_check import kept

    assert sidecar["kept"] == kept(source, own)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    result = _cli("variations", "bad.png", "--model", str(folder), "--out", "var2", cwd=tmp_path)
    assert result.returncode == 2 and "cannot read image" in result.stderr
    result = _cli("generate", PROMPT, "--route", "unclip", "--model", str(folder), "--prior-steps", "0", cwd=tmp_path)
    assert result.returncode == 2 and "--prior-steps" in result.stderr
