"""evaluation/spread.py: each draw's distances are the report columns' own computation, the spread over draws is
kept per distance with draw 0 first, and the report shows draw 0 with the range (or, with one draw, says so)."""

import numpy as np

from dallebrain.evaluation import columns as C
from dallebrain.evaluation import metrics as M
from dallebrain.evaluation import spread as SP

MODALITY = ["T1w"] * 20 + ["FLAIR"] * 20 + ["PDw"] * 4  # PDw: too few slices for its own GLCM distance


def _draw(rng, shift=0.0):
    return rng.normal(size=(44, 6)) + shift, rng.normal(size=(44, 18)) * (1 + shift)


def test_a_draws_distances_are_the_columns_own():
    rng = np.random.default_rng(2)
    real_enc, real_glcm = _draw(rng)
    enc, glcm = _draw(rng, 0.5)
    clip_real, clip = rng.normal(size=(44, 3)), rng.normal(size=(44, 3))
    got = SP.distances_of(real_enc, enc, real_glcm, glcm, MODALITY, clip_real, clip)
    texture = C.texture(real_glcm, glcm, MODALITY)
    assert got["encoder_frechet"] == C.feature_block(real_enc, enc)["frechet"]
    assert got["brain_clip_frechet"] == M.frechet_distance(clip_real, clip)
    assert got["glcm_frechet"] == texture["frechet"]
    assert {k.removeprefix("glcm_frechet_") for k in got if k.startswith("glcm_frechet_")} == \
        set(texture["by_contrast"]) == {"T1w", "FLAIR"}
    assert got["glcm_frechet_FLAIR"] == texture["by_contrast"]["FLAIR"]["frechet"]
    assert "brain_clip_frechet" not in SP.distances_of(real_enc, enc, real_glcm, glcm, MODALITY)
    assert "grey_wasserstein1" not in got  # without the slices: no grey levels
    real_images, images = rng.uniform(size=(44, 16, 16)), rng.uniform(size=(44, 16, 16)) ** 2
    with_images = SP.distances_of(real_enc, enc, real_glcm, glcm, MODALITY, real_images=real_images,
                                  fake_images=images)
    grey = C.grey_levels(real_images, images, MODALITY)["all"]
    assert with_images["grey_wasserstein1"] == grey["wasserstein1"] > 0
    assert with_images["grey_jensen_shannon"] == grey["jensen_shannon"] > 0
    assert SP.label("grey_wasserstein1") == "grey levels Wasserstein-1, all slices"


def test_the_spread_keeps_every_draw_and_a_shifted_model_lies_outside_it():
    rng = np.random.default_rng(3)
    real = _draw(rng)
    alike = [SP.distances_of(*real[:1], *_draw(rng)[:1], real[1], _draw(rng)[1], MODALITY) for _ in range(4)]
    out = SP.spread(alike)
    entry = out["encoder_frechet"]
    assert entry["draws"] == [d["encoder_frechet"] for d in alike]  # draw 0 first, as given
    assert entry["min"] <= entry["mean"] <= entry["max"] and entry["min"] < entry["max"]
    shifted = SP.distances_of(real[0], _draw(rng, 1.0)[0], real[1], _draw(rng, 1.0)[1], MODALITY)
    assert shifted["encoder_frechet"] > entry["max"]


def test_the_report_shows_draw_0_and_the_range_or_says_there_was_one_draw():
    spread = SP.spread([{"encoder_frechet": 0.53, "glcm_frechet_FLAIR": 15.1},
                        {"encoder_frechet": 0.46, "glcm_frechet_FLAIR": 8.4}])
    metrics = {"columns": {"real": {}, "ldm": {"spread": spread}}}
    lines = SP.summary_lines(metrics)
    assert "## How much the distances move with the synthetic draw" in lines
    assert "| distance | ldm: draw 0 [range over 2 draws] |" in lines  # the real column has no draws
    assert "| Frechet distance, evaluation encoder | 0.53 [0.46, 0.53] |" in lines
    assert "| GLCM Frechet distance, FLAIR | 15.1 [8.4, 15.1] |" in lines
    one = SP.summary_lines({"columns": {"real": {}, "ldm": {}}})
    assert one == ["", SP.ONE_DRAW_NOTE] and "--draws 2" in SP.ONE_DRAW_NOTE
    assert "range over 2 draws" in SP.html_section(metrics, lambda header, rows, left: " ".join(header))
