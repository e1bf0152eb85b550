"""Per-column metrics against known answers: a set identical to the held-out slices scores the best possible
distances, pure noise scores worse than the real floor, copies of training slices are caught as memorised and
one image repeated is caught as mode collapse."""

import numpy as np
import pytest

from dallebrain.evaluation.features import EncoderConfig

TINY_ENCODER = EncoderConfig(input_size=32, widths=(8, 16), feature_dim=16, steps=12, batch_size=16)


@pytest.fixture(scope="module")
def measured(tiny_prepared):
    """Features of the held-out slices ("real"), the train slices matched to them ("floor"), an identical copy of
    the held-out slices ("same") and uniform noise ("noise"), in the encoder's and a Brain-CLIP's spaces."""
    import pandas as pd
    import torch

    from dallebrain.evaluation.columns import SetFeatures
    from dallebrain.evaluation.features import Targets, load_slices, train_encoder
    from dallebrain.evaluation.reference import match_train, sample_heldout
    from dallebrain.models.clip import BrainCLIP, BrainCLIPConfig

    table = pd.read_parquet(tiny_prepared / "metadata.parquet")
    train = table[table["split"] == "train"].reset_index(drop=True)
    heldout = sample_heldout(table, "test", 12, 0, [])
    real = load_slices(tiny_prepared, heldout["image_path"])
    floor = load_slices(tiny_prepared, train.loc[match_train(train, heldout, 0), "image_path"])
    train_images = load_slices(tiny_prepared, train["image_path"], size=TINY_ENCODER.input_size)
    encoder = train_encoder(train_images, Targets.from_table(train), TINY_ENCODER)
    torch.manual_seed(0)
    clip = BrainCLIP(BrainCLIPConfig(image_width=8, image_blocks_per_stage=1, image_stages=2, embed_dim=16,
                                     tuned_text_layers=1, image_size=64)).eval()
    noise = np.random.default_rng(0).uniform(0, 1, real.shape).astype(np.float32)
    images = {"real": real, "floor": floor, "same": real.copy(), "noise": noise}
    return SetFeatures.measure(images, encoder, clip), heldout, train_images, encoder


def test_a_set_identical_to_the_real_one_scores_the_best_distances(measured):
    from dallebrain.evaluation.columns import distances

    sets, heldout, _, _ = measured
    same = distances(sets, "same", heldout["modality"].tolist())
    for space in ("encoder", "brain_clip"):
        block = same["realism"][space]
        assert block["frechet"] < 1e-6, space
        assert block["precision"] == block["recall"] == block["coverage"] == 1.0, space
        assert block["one_nn_accuracy"] == 0.0, space  # every slice's nearest neighbour is its twin
        assert block["nn_cosine_to_real_median"] == pytest.approx(1.0, abs=1e-5), space
    assert all(g["wasserstein1"] == g["jensen_shannon"] == 0.0 for g in same["grey_levels"].values())
    real = sets.images["real"]
    assert same["grey_levels"]["all"]["top_share"] == pytest.approx((real[real > 0.05] >= 0.99).mean())
    assert same["texture"]["frechet"] < 1e-6 and same["texture"]["ks_max"] == 0.0


def test_noise_scores_worse_than_the_real_floor_in_every_distance(measured):
    from dallebrain.evaluation.columns import distances

    sets, heldout, _, _ = measured
    modality = heldout["modality"].tolist()
    floor, noise = distances(sets, "floor", modality), distances(sets, "noise", modality)
    for space in ("encoder", "brain_clip"):
        f, n = floor["realism"][space], noise["realism"][space]
        assert n["frechet"] > 3 * f["frechet"] and n["kid"] > f["kid"], space
        assert n["one_nn_accuracy"] > f["one_nn_accuracy"] + 0.3, space  # noise is told apart from real slices
        assert n["coverage"] < f["coverage"] and n["recall"] < f["recall"], space
    for metric in ("wasserstein1", "jensen_shannon"):
        assert noise["grey_levels"]["all"][metric] > floor["grey_levels"]["all"][metric], metric
    assert noise["texture"]["frechet"] > 10 * floor["texture"]["frechet"]
    assert noise["texture"]["ks_mean"] > 0.9 > floor["texture"]["ks_mean"]


def test_copies_of_training_slices_are_counted_as_memorised(measured):
    from dallebrain.evaluation.columns import privacy, privacy_neighbours

    sets, _, train_images, encoder = measured
    neighbours = privacy_neighbours(sets, ["real", "floor", "noise"], train_images, encoder.run(train_images)[0],
                                    None)
    assert set(neighbours) == {"pixel", "encoder_embedding"}  # no Brain-CLIP embeddings of the train split given
    copies, noise = privacy(neighbours, "floor"), privacy(neighbours, "noise")  # the floor slices are train slices
    assert copies["pixel"]["near_copies"] == 12 and copies["pixel"]["memorisation_rate"] == 1.0
    assert copies["pixel"]["near_copies_real_heldout"] == 0
    assert copies["pixel"]["closer_than_heldout_median"] == 1.0
    assert noise["pixel"]["near_copies"] == 0 and noise["pixel"]["closer_than_heldout_median"] == 0.0
    assert "near_copies" not in copies["encoder_embedding"]  # the near-copy rule is calibrated in pixels only


def test_one_image_repeated_is_caught_as_mode_collapse(measured):
    from dallebrain.evaluation.columns import diversity

    real = measured[0].images["real"]
    noise = np.random.default_rng(1).uniform(0, 1, (3, *real.shape[1:])).astype(np.float32)
    groups = [{"real": real[:3], "synthetic": {"collapsed": np.repeat(real[:1], 3, axis=0), "noise": noise}}]
    assert diversity(groups, "collapsed")["ms_ssim"] == pytest.approx(1.0)
    assert diversity(groups, "real")["ms_ssim"] < 0.999
    assert diversity(groups, "noise")["ms_ssim"] < diversity(groups, "real")["ms_ssim"]


def test_texture_per_contrast_finds_the_contrast_that_carries_the_pooled_distance():
    """One contrast's GLCM features spread 5x wider (clipped flat slices among them): its own distance is large,
    the untouched contrast's stays at the floor's scale, and a contrast with too few rows is left out."""
    from dallebrain.evaluation.columns import MIN_TEXTURE_ROWS, texture

    rng = np.random.default_rng(0)
    real = rng.normal(size=(80, 18))
    other = rng.normal(size=(80, 18))
    other[:40] *= 5  # the first contrast's rows
    few = MIN_TEXTURE_ROWS // 2
    modality = ["PDw"] * 40 + ["T1w"] * (40 - 2 * few) + ["T2w"] * few + ["FLAIR"] * few
    out = texture(real, other, modality)
    by = out["by_contrast"]
    assert set(by) == {"PDw", "T1w"}  # T2w and FLAIR have too few rows each: fewer than MIN_TEXTURE_ROWS
    assert by["PDw"]["frechet"] > 10 * by["T1w"]["frechet"]
    assert by["PDw"]["ks_mean"] > by["T1w"]["ks_mean"]
    assert "by_contrast" not in texture(real, other)  # without the contrasts: pooled only


def test_top_share_counts_the_clipped_white_part_of_the_brain():
    from dallebrain.evaluation.metrics import top_share

    slice_ = np.zeros((2, 10, 10), dtype=np.float32)
    slice_[:, 2:8, 2:8] = 0.8  # 72 brain pixels
    slice_[0, 2:5, 2:8] = 1.0  # 18 of them clipped white
    assert top_share(slice_) == pytest.approx(18 / 72)
    assert top_share(np.zeros((1, 4, 4))) == 0.0  # no brain: nothing clipped, no division by zero
