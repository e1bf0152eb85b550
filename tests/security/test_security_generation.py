"""Generation cannot be made to exhaust the machine or to lie about seeds: passes of bounded size written as they
finish, model configs checked on load, --out checked before the model loads, seeds in [0, 2**63), image i the same
byte for byte whatever n is, and slices to vary checked from their header before decoding."""

import gzip
import json
import shutil
import struct
import zlib

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import dallebrain.api as api
from dallebrain.cli import app
from dallebrain.pipelines.text2mri import MAX_SEED

PROMPT = "axial T2-weighted slice of a healthy 70-year-old woman at the level of the lateral ventricles"


@pytest.fixture(scope="module")
def pipe(tiny_pipeline):
    return api.load_pipeline(tiny_pipeline, device="cpu")


@pytest.fixture(scope="module")
def unclip(tiny_unclip):
    return api.load_pipeline(tiny_unclip, route="unclip", device="cpu")


def _record_decodes(monkeypatch, pipe, out=None):
    """Wrap the VAE decoder: the batch size of each call and, with `out`, the PNGs already written at that moment."""
    calls = []
    decode = pipe.vae.decode

    def recording(z, *args, **kwargs):
        calls.append((z.shape[0], len(list(out.glob("*.png"))) if out is not None and out.exists() else 0))
        return decode(z, *args, **kwargs)

    monkeypatch.setattr(pipe.vae, "decode", recording)
    return calls


# --- memory bounded whatever n -------------------------------------------------------------------------------


def test_images_are_denoised_decoded_and_written_one_pass_at_a_time(pipe, monkeypatch, tmp_path):
    calls = _record_decodes(monkeypatch, pipe, tmp_path)
    written = api.generate_to_folder(pipe, PROMPT, tmp_path, n=4, seed=0, steps=1)
    assert len(written) == 4
    # the default pass is one image; each pass's files are on disk before the next pass is decoded
    assert calls == [(1, 0), (1, 1), (1, 2), (1, 3)]


def test_a_larger_pass_size_still_bounds_every_decode(pipe, monkeypatch):
    calls = _record_decodes(monkeypatch, pipe)
    monkeypatch.setattr(pipe, "images_per_pass", 3)
    assert pipe(PROMPT, n=7, seed=0, steps=1).images.shape == (7, 64, 64)
    assert [size for size, _ in calls] == [3, 3, 3]  # the short last pass padded to the pass size
    monkeypatch.setattr(pipe, "images_per_pass", 0)
    with pytest.raises(ValueError, match="images_per_pass"):
        pipe(PROMPT, n=2, steps=1)


def test_unclip_route_and_variations_decode_per_pass(unclip, monkeypatch):
    calls = _record_decodes(monkeypatch, unclip)
    unclip(PROMPT, n=3, seed=0, steps=1, prior_steps=1)
    unclip.variations(np.full((64, 64), 0.5, dtype=np.float32), n=2, seed=0, steps=1)
    assert [size for size, _ in calls] == [1] * 5


# --- model configs checked on load ---------------------------------------------------------------------------


def _copy_with_config(source, tmp_path, component, **changes):
    folder = tmp_path / "model"
    if not folder.exists():
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns("checkpoints", "cache"))
    path = folder / component / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))
    return folder, path


@pytest.mark.parametrize("changes, message, named", [
    ({"unet": {"sample_size": 1024}}, "sample_size", "unet"),
    ({"unet": {"sample_size": 100000}}, "sample_size", "unet"),
    ({"unet": {"sample_size": "16"}}, "sample_size", "unet"),
    # within the latent bound, but a VAE of factor 16 would make 1600 px images
    ({"vae": {"block_out_channels": [8, 16, 16, 16, 16]}, "unet": {"sample_size": 100}}, "1600 px", "unet"),
    ({"unet": {"in_channels": 8, "out_channels": 8}}, "latent_channels", "vae"),
    ({"unet": {"out_channels": 1}}, "out_channels", "unet"),
    ({"vae": {"scaling_factor": 0.0}}, "scaling_factor", "vae"),
    ({"vae": {"scaling_factor": float("inf")}}, "scaling_factor", "vae"),
    ({"vae": {"in_channels": 3}}, "in_channels", "vae"),
])
def test_out_of_bounds_ldm_configs_are_refused_naming_the_file(tiny_pipeline, tmp_path, changes, message, named):
    for component, values in changes.items():
        folder, _ = _copy_with_config(tiny_pipeline, tmp_path, component, **values)
    with pytest.raises(ValueError, match=message) as info:
        api.load_pipeline(folder, device="cpu")
    assert str(folder / named / "config.json") in str(info.value) and "\n" not in str(info.value)


def test_unclip_decoder_config_is_checked_too(tiny_unclip, tmp_path):
    folder, path = _copy_with_config(tiny_unclip, tmp_path, "decoder", sample_size=100000)
    with pytest.raises(ValueError, match="sample_size") as info:
        api.load_pipeline(folder, route="unclip", device="cpu")
    assert str(path) in str(info.value)


def test_unreadable_config_is_refused_naming_the_file(tiny_pipeline, tmp_path):
    folder, path = _copy_with_config(tiny_pipeline, tmp_path, "unet")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON") as info:
        api.load_pipeline(folder, device="cpu")
    assert str(path) in str(info.value)


# --- CLI: --out and seeds refused before the model loads -----------------------------------------------------


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the request was checked")

    monkeypatch.setattr(api, "load_pipeline", refuse)


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _assert_one_line_error(result, *words):
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    for word in words:
        assert word in lines[0], lines[0]


def test_bad_out_is_refused_before_the_model_loads(no_model_load, tmp_path, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    _assert_one_line_error(_cli("generate", PROMPT, "--out", a_file), "not a folder")
    _assert_one_line_error(_cli("generate", PROMPT, "--out", a_file / "sub"), "not a folder")
    assert a_file.read_text() == "keep me"

    done = tmp_path / "done"
    done.mkdir()
    (done / "seed-000003.json").write_text("{}")
    _assert_one_line_error(_cli("generate", PROMPT, "--out", done, "--n", "2", "--seed", "2"), "seed-000003.json",
                           "--overwrite")
    slice_png = tmp_path / "slice.png"
    Image.fromarray(np.full((64, 64), 128, dtype=np.uint8)).save(slice_png)
    _assert_one_line_error(_cli("variations", slice_png, "--out", a_file), "not a folder")
    (done / "variation-seed-000000.png").write_bytes(b"")
    _assert_one_line_error(_cli("variations", slice_png, "--out", done), "variation-seed-000000.png")
    assert (done / "seed-000003.json").read_text() == "{}"

    # permission bits mean nothing to root (these tests may run as root), so the folder is made unwritable to the
    # permission check itself
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    _assert_one_line_error(_cli("generate", PROMPT, "--out", locked / "new"), "not writable")
    assert not (locked / "new").exists()


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64, 2**64 + 5])
def test_out_of_range_seeds_are_refused_by_the_cli(no_model_load, tmp_path, seed):
    _assert_one_line_error(_cli("generate", PROMPT, "--seed", seed, "--out", tmp_path / "o"), "seed", str(seed))
    _assert_one_line_error(_cli("variations", tmp_path, "--seed", seed, "--out", tmp_path / "v"), "seed")
    assert not (tmp_path / "o").exists()


def test_the_last_seed_of_a_request_must_fit_too(no_model_load, tmp_path):
    _assert_one_line_error(_cli("generate", PROMPT, "--seed", MAX_SEED, "--n", "2", "--out", tmp_path), "seed")


def test_out_of_range_seeds_are_refused_by_every_route(pipe, unclip, tmp_path):
    for seed in (-1, 2**63, 2**64, True, 1.5):
        with pytest.raises(ValueError, match="seed"):
            pipe(PROMPT, seed=seed, steps=1)
        with pytest.raises(ValueError, match="seed"):
            unclip(PROMPT, seed=seed, steps=1, prior_steps=1)
        with pytest.raises(ValueError, match="seed"):
            unclip.variations(np.full((64, 64), 0.5, dtype=np.float32), seed=seed, steps=1)
        with pytest.raises(ValueError, match="seed"):
            api.generate_to_folder(pipe, PROMPT, tmp_path, seed=seed, steps=1)
    with pytest.raises(ValueError, match="seed"):
        pipe(PROMPT, n=2, seed=MAX_SEED, steps=1)
    assert list(tmp_path.iterdir()) == []


# --- image i is a function of (prompt, seed + i) alone --------------------------------------------------------


def test_image_i_is_byte_identical_whatever_n(pipe, tmp_path):
    four = pipe(PROMPT, n=4, seed=3, steps=2)
    assert four.images[0].tobytes() == pipe(PROMPT, n=1, seed=3, steps=2).images[0].tobytes()
    assert four.images[2].tobytes() == pipe(PROMPT, n=1, seed=5, steps=2).images[0].tobytes()
    api.generate_to_folder(pipe, PROMPT, tmp_path / "four", n=4, seed=3, steps=2)
    api.generate_to_folder(pipe, PROMPT, tmp_path / "one", n=1, seed=3, steps=2)
    for suffix in (".png", ".nii.gz"):
        assert (tmp_path / "four" / f"seed-000003{suffix}").read_bytes() == \
            (tmp_path / "one" / f"seed-000003{suffix}").read_bytes()


def test_image_i_is_byte_identical_whatever_n_in_passes_of_several_images(pipe, unclip):
    # Bulk callers raise images_per_pass for throughput: every pass runs that many rows (a short last one padded),
    # so image i still depends on (prompt, seed + i) and the pass size alone.
    for p in (pipe, unclip):
        p.images_per_pass = 3
    try:
        four = pipe(PROMPT, n=4, seed=3, steps=2)
        for i in range(4):
            assert four.images[i].tobytes() == pipe(PROMPT, n=1, seed=3 + i, steps=2).images[0].tobytes(), i
        mixed = pipe.sample([PROMPT, "coronal T1-weighted slice", PROMPT, PROMPT], [3, 8, 5, 6], steps=2)
        assert mixed[2].tobytes() == four.images[2].tobytes()
        three = unclip(PROMPT, n=4, seed=3, steps=2, prior_steps=2)
        assert three.images[3].tobytes() == unclip(PROMPT, n=1, seed=6, steps=2, prior_steps=2).images[0].tobytes()
    finally:
        for p in (pipe, unclip):
            p.images_per_pass = 1


def test_unclip_image_i_is_byte_identical_whatever_n(unclip):
    three = unclip(PROMPT, n=3, seed=3, steps=2, prior_steps=2)
    alone = unclip(PROMPT, n=1, seed=4, steps=2, prior_steps=2)
    assert three.images[1].tobytes() == alone.images[0].tobytes()
    slice_ = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    assert unclip.variations(slice_, n=3, seed=7, steps=2).images[2].tobytes() == \
        unclip.variations(slice_, n=1, seed=9, steps=2).images[0].tobytes()


# --- slices to vary: dimensions checked from the header ------------------------------------------------------


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height but whose pixel data stops after a few bytes: only a reader that
    decodes it fails on the data; one that checks the header first refuses it for its size."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def _nifti_header_only(path, shape):
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape(shape)
    header["vox_offset"] = 352
    with gzip.open(path, "wb") as f:
        f.write(header.binaryblock + b"\0" * 4 + b"\0" * 64)  # 64 bytes of the 400 M the header promises
    return path


@pytest.mark.parametrize("width, height", [(12000, 12000), (20000, 20000), (5000, 5000)])
def test_oversize_png_is_refused_from_its_header(tmp_path, width, height):
    path = _png_header_only(tmp_path / "big.png", width, height)
    with pytest.raises(ValueError, match="too large|at most 2048"):
        api.load_slice(path, 64)


def test_a_real_png_over_the_side_limit_is_refused(tmp_path):
    path = tmp_path / "long.png"
    Image.fromarray(np.zeros((1, api.MAX_SLICE_SIDE + 1), dtype=np.uint8)).save(path)
    with pytest.raises(ValueError, match=f"at most {api.MAX_SLICE_SIDE}"):
        api.load_slice(path, 64)
    small = tmp_path / "small.png"
    Image.fromarray(np.full((80, 80), 128, dtype=np.uint8)).save(small)
    assert api.load_slice(small, 64).shape == (64, 64)


@pytest.mark.parametrize("shape, message", [((20000, 20000, 1), "at most 2048"), ((64, 64, 64), "3-D")])
def test_oversize_or_volume_nifti_is_refused_from_its_header(tmp_path, shape, message):
    path = _nifti_header_only(tmp_path / "big.nii.gz", shape)
    with pytest.raises(ValueError, match=message):
        api.load_slice(path, 64)


def test_cli_variations_of_an_oversize_slice_is_one_line(tiny_unclip, tmp_path):
    path = _nifti_header_only(tmp_path / "big.nii.gz", (20000, 20000, 1))
    _assert_one_line_error(_cli("variations", path, "--model", tiny_unclip, "--out", tmp_path / "v", "--steps", "1"),
                           "at most 2048")
