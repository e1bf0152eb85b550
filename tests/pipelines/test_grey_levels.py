"""Grey-level standardisation (pipelines/grey_levels.py): the maps, their checks, what the pipelines do with them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cli_inprocess import run_cli
from dallebrain.api import load_pipeline
from dallebrain.evaluation.metrics import histogram_distances
from dallebrain.pipelines.grey_levels import (
    ALL_PLANES,
    BRAIN_THRESHOLD,
    INFO_KEY,
    LANDMARKS,
    drop_grey_level_maps,
    fit_grey_level_map,
    grey_level_map_of,
    remap,
    routes_changed_by,
    standardise_stock_images,
)


def brains(n: int, seed: int = 0) -> np.ndarray:
    """n 32x32 "slices": a disc of intensities in [0.3, 1] on a zero background (squared, still above the brain cut)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    disc = (yy - 16) ** 2 + (xx - 16) ** 2 < 12 ** 2
    return np.where(disc, rng.uniform(0.3, 1.0, (n, 32, 32)), 0.0).astype(np.float32)


def test_a_fitted_map_undoes_a_monotone_distortion_and_keeps_the_background():
    real = brains(24)
    drawn = np.where(real > BRAIN_THRESHOLD, real ** 2, 0.0).astype(np.float32)  # a model too dark in the mid-tones
    table = fit_grey_level_map(real, drawn, ["T1w"] * 24, ["axial"] * 12 + ["coronal"] * 12)
    assert set(table.maps["T1w"]) == {ALL_PLANES, "axial", "coronal"}
    fixed, name = table.apply(drawn, "T1w", "axial")
    assert name == "T1w axial"
    before, after = histogram_distances(real, drawn), histogram_distances(real, fixed)
    assert before["wasserstein1"] > 0.1 and after["wasserstein1"] < 0.01
    assert np.abs(fixed - real)[real > 0].max() < 0.03  # piecewise linear between deciles of a square
    assert (fixed[real == 0] == 0).all()
    assert ((fixed > BRAIN_THRESHOLD) == (drawn > BRAIN_THRESHOLD)).all()  # the brain outline does not move


def test_which_map_a_request_gets():
    real = brains(16)
    table = fit_grey_level_map(real, real * 0.9, ["FLAIR"] * 16, ["axial"] * 16)
    assert table.curve_for("FLAIR", "axial")[0] == "FLAIR axial"
    assert table.curve_for("FLAIR", "sagittal")[0] == "FLAIR (all planes)"  # no sagittal pairs: the contrast's
    assert table.curve_for("FLAIR", None)[0] == "FLAIR (all planes)"
    assert table.curve_for("T1w", "axial") is None and table.curve_for(None, "axial") is None
    same, name = table.apply(real, "PDw", "axial")
    assert name is None and same is real


def test_maps_round_trip_through_dallebrain_json_and_bad_ones_are_refused():
    real = brains(16)
    table = fit_grey_level_map(real, real ** 1.5, ["T2w"] * 16, ["coronal"] * 16)
    info = json.loads(json.dumps(table.to_info()))
    again = grey_level_map_of({INFO_KEY: info})
    for plane in (ALL_PLANES, "coronal"):
        for a, b in zip(table.maps["T2w"][plane], again.maps["T2w"][plane], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
    assert grey_level_map_of({}) is None
    curve = info["maps"]["T2w"]["coronal"]
    bad = [{"landmarks": [0, 0.5, 1], "maps": info["maps"]},
           {"landmarks": list(LANDMARKS), "maps": {"CT": info["maps"]["T2w"]}},
           {"landmarks": list(LANDMARKS), "maps": {"T2w": {"oblique": curve}}},
           {"landmarks": list(LANDMARKS), "maps": {"T2w": {"coronal": {**curve, "to": curve["to"][::-1]}}}},
           {"landmarks": list(LANDMARKS), "maps": {"T2w": {"coronal": {**curve, "from": curve["from"][:-1]}}}},
           {"landmarks": list(LANDMARKS), "maps": {"T2w": {"coronal": {"from": curve["from"]}}}},
           {"landmarks": list(LANDMARKS), "maps": {"T2w": {"coronal": {**curve, "to": [2.0] * len(LANDMARKS)}}}}]
    for table_info in bad:
        with pytest.raises(ValueError, match="grey_level_map") as caught:
            grey_level_map_of({INFO_KEY: table_info})
        assert "\n" not in str(caught.value)


def test_too_few_brain_pixels_or_unpaired_sets_are_refused():
    real = brains(4)
    with pytest.raises(ValueError, match="need at least"):
        fit_grey_level_map(real[:, :4, :4] + 0.5, real[:, :4, :4] + 0.5, ["T1w"] * 4, ["axial"] * 4)
    with pytest.raises(ValueError, match="as many real as synthetic"):
        fit_grey_level_map(real, real[:3], ["T1w"] * 4, ["axial"] * 4)


def test_remap_clips_into_the_brain_range():
    x = np.array([[0.0, 0.04, 0.06, 0.5, 1.0]], dtype=np.float32)
    out = remap(x, np.linspace(BRAIN_THRESHOLD, 1, len(LANDMARKS)), np.linspace(0.5, 1.5, len(LANDMARKS)))
    assert out[0, 0] == 0.0 and out[0, 1] == pytest.approx(0.04)  # background untouched
    assert out[0, 2:].min() >= BRAIN_THRESHOLD and out.max() <= 1.0


def darkening_map(contrast: str, plane: str) -> dict:
    """A map that sends the whole brain range into [0.05, 0.2]: impossible to miss in the output."""
    curve = {"from": list(np.linspace(BRAIN_THRESHOLD, 1.0, len(LANDMARKS))),
             "to": list(np.linspace(BRAIN_THRESHOLD, 0.2, len(LANDMARKS)))}
    return {"landmarks": list(LANDMARKS), "maps": {contrast: {plane: curve}}}


@pytest.fixture(scope="module")
def mapped_model(tiny_pipeline, tmp_path_factory):
    model = tmp_path_factory.mktemp("grey") / "model"
    shutil.copytree(tiny_pipeline, model)
    info = json.loads((model / "dallebrain.json").read_text())
    info.setdefault("sampling", {})[INFO_KEY] = darkening_map("FLAIR", ALL_PLANES)
    (model / "dallebrain.json").write_text(json.dumps(info))
    return model


def test_the_pipeline_standardises_a_stated_contrast_and_records_it(mapped_model):
    pipe = load_pipeline(mapped_model)
    prompt = "axial FLAIR slice of a healthy 60-year-old woman"
    made = pipe(prompt, n=2, seed=3, steps=2)
    assert made.settings["grey_levels"] == "standardised: FLAIR (all planes) map"
    pipe.standardise_grey_levels = False
    raw = pipe(prompt, n=2, seed=3, steps=2)
    assert raw.settings["grey_levels"] == "as sampled (standardisation turned off)"
    assert raw.images.max() > 0.3 and made.images.max() <= 0.2 + 1e-6
    np.testing.assert_array_equal(made.images, remap(raw.images, *pipe.grey_level_map.maps["FLAIR"][ALL_PLANES]))
    # evaluate's path (sample) gives the very slices generate gives
    pipe.standardise_grey_levels = True
    np.testing.assert_array_equal(pipe.sample([prompt, prompt], [3, 4], steps=2), made.images)
    other = pipe("axial T1-weighted slice", n=1, seed=3, steps=2)
    assert other.settings["grey_levels"] == "as sampled (no map for T1w)"
    silent = pipe("brain MRI", n=1, seed=3, steps=2)
    assert silent.settings["grey_levels"] == "as sampled (no map for a prompt that states no contrast)"


def test_a_lora_adapter_turns_standardisation_off(mapped_model):
    pipe = load_pipeline(mapped_model)
    mapped = pipe("axial FLAIR", n=1, seed=2, steps=2)
    pipe.lora = {"path": "adapter", "scale": 1.0}  # as load_pipeline records one (its weights do not matter here)
    raw = pipe("axial FLAIR", n=1, seed=2, steps=2)
    assert raw.settings["grey_levels"].startswith("as sampled (a LoRA adapter is loaded")
    assert raw.images.max() > mapped.images.max()
    np.testing.assert_array_equal(pipe.sample(["axial FLAIR"], [2], steps=2), raw.images)


def test_a_model_without_maps_records_nothing(tiny_pipeline):
    made = load_pipeline(tiny_pipeline)("axial FLAIR", n=1, seed=0, steps=2)
    assert "grey_levels" not in made.settings


def test_a_stock_client_gets_the_same_standardisation(mapped_model, tmp_path):
    """The export carries the maps (its dallebrain.json); applied to our raw slices they give our slices."""
    assert run_cli("export", "--model", mapped_model, "--out", tmp_path / "stock").returncode == 0
    pipe = load_pipeline(mapped_model)
    pipe.standardise_grey_levels = False
    raw = pipe("coronal FLAIR", n=1, seed=1, steps=2).images
    sampling = json.loads((tmp_path / "stock" / "dallebrain.json").read_text())["sampling"]
    pipe.standardise_grey_levels = True
    ours = pipe("coronal FLAIR", n=1, seed=1, steps=2).images
    np.testing.assert_array_equal(standardise_stock_images(raw, "coronal FLAIR", sampling), ours)


def test_generate_writes_the_standardised_slices_and_a_bad_map_is_one_line(mapped_model, tmp_path):
    out = tmp_path / "out"
    done = run_cli("generate", "axial FLAIR", "--model", mapped_model, "--steps", "2", "--out", out)
    assert done.returncode == 0, done.stderr
    sidecar = json.loads((out / "seed-000000.json").read_text())
    assert sidecar["grey_levels"] == "standardised: FLAIR (all planes) map"
    raw = run_cli("generate", "axial FLAIR", "--model", mapped_model, "--steps", "2", "--out", tmp_path / "raw",
                  "--raw-grey-levels")
    assert raw.returncode == 0, raw.stderr
    assert json.loads((tmp_path / "raw" / "seed-000000.json").read_text())["grey_levels"] == (
        "as sampled (standardisation turned off)")
    broken = tmp_path / "broken"
    shutil.copytree(mapped_model, broken)
    info = json.loads((broken / "dallebrain.json").read_text())
    info["sampling"][INFO_KEY]["maps"]["FLAIR"][ALL_PLANES]["to"].reverse()
    (broken / "dallebrain.json").write_text(json.dumps(info))
    failed = run_cli("generate", "axial FLAIR", "--model", broken, "--steps", "2", "--out", tmp_path / "never")
    assert failed.returncode == 2  # the CLI's exit for a bad input (cli/_common.fail)
    assert "grey_level_map" in failed.stderr and len(failed.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()


def test_the_unclip_route_reads_its_own_maps(tiny_unclip, tmp_path):
    model = tmp_path / "unclip"
    shutil.copytree(tiny_unclip, model)
    every = darkening_map("T2w", ALL_PLANES)
    every["maps"] = {c: every["maps"]["T2w"] for c in ("T1w", "T2w", "PDw", "FLAIR")}
    info = {"sampling": {INFO_KEY: darkening_map("T1w", "axial")},  # the LDM's: not the decoder's
            "unclip": {"sampling": {INFO_KEY: every}}}
    (model / "dallebrain.json").write_text(json.dumps(info))
    pipe = load_pipeline(model, route="unclip")
    assert set(pipe.grey_level_map.maps) == {"T1w", "T2w", "PDw", "FLAIR"}
    made = pipe("axial T2-weighted slice", n=1, seed=0, steps=2, prior_steps=2)
    assert made.settings["grey_levels"] == "standardised: T2w (all planes) map"
    assert made.images.max() <= 0.2 + 1e-6
    image = np.zeros((64, 64), dtype=np.float32)
    image[16:48, 16:48] = 0.8
    # a variation gets the map of the contrast and plane its source reads as (whatever this untrained CLIP reads)
    varied = pipe.variations(image, n=1, steps=2)
    assert varied.settings["grey_levels"].endswith("map (the source's contrast and plane as read)")
    assert varied.images.max() <= 0.2 + 1e-6
    frames = pipe.interpolate(image, image * 0.5 + 0.1 * (image > 0), n_frames=2, steps=2)
    assert frames.settings["grey_levels"] == "as sampled (interpolations are not standardised)"


def test_replaced_weights_drop_only_their_routes_curves(tmp_path):
    curves = darkening_map("T1w", ALL_PLANES)
    info = {"sampling": {INFO_KEY: curves, "attribute_guidance": 6.0}, "unclip": {"sampling": {INFO_KEY: curves}},
            INFO_KEY: {"ldm": {"train_captions": 768}, "unclip": {"train_captions": 512}}}
    assert routes_changed_by(["unet", "scheduler"]) == ("ldm",) and routes_changed_by(["decoder"]) == ("unclip",)
    assert routes_changed_by(["vae"]) == ("ldm", "unclip") and routes_changed_by([]) == ()
    (tmp_path / "dallebrain.json").write_text(json.dumps(info))
    drop_grey_level_maps(tmp_path, routes_changed_by(["unet"]))
    after = json.loads((tmp_path / "dallebrain.json").read_text())
    assert after["sampling"] == {"attribute_guidance": 6.0} and INFO_KEY in after["unclip"]["sampling"]
    assert after[INFO_KEY] == {"unclip": {"train_captions": 512}}  # each route's record goes with its curves
    drop_grey_level_maps(tmp_path, routes_changed_by(["decoder"]))
    after = json.loads((tmp_path / "dallebrain.json").read_text())
    assert INFO_KEY not in after["unclip"]["sampling"] and INFO_KEY not in after
