"""The ageing network: starts as the copy of its input, saves and loads pickle-free, learns from session pairs,
and `dallebrain train ageing` refuses data that are not longitudinal with a one-line error."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from dallebrain.ageing.network import AgeingNet, AgeingNetConfig, load_ageing_net, save_ageing_net, warp
from dallebrain.ageing.pairs import load_images, longitudinal_table, session_pairs
from dallebrain.ageing.predict import age_sequence, age_slices

SMALL = AgeingNetConfig(channels=(8, 16), image_size=32)


def test_untrained_network_copies_its_input():
    net = AgeingNet(SMALL).eval()
    images = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    out = age_slices(net, images, [30, 50, 70], [80, 20, 70])
    np.testing.assert_array_equal(out, images)


def test_save_load_round_trip_fp16_and_refusals(tmp_path):
    net = AgeingNet(SMALL)
    torch.nn.init.normal_(net.unet.conv_out.weight, std=0.01)  # a network whose output is not its input
    save_ageing_net(net, tmp_path / "m")
    loaded = load_ageing_net(tmp_path / "m")
    x = torch.rand(2, 1, 32, 32)
    ages = torch.tensor([30.0, 60.0]), torch.tensor([70.0, 40.0])
    with torch.no_grad():
        assert not torch.allclose(net(x, *ages), x)
        torch.testing.assert_close(loaded(x, *ages), net.eval()(x, *ages), atol=5e-3, rtol=5e-3)  # fp16 weights
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "model.bin").write_bytes(b"not read")
    with pytest.raises(ValueError, match="not an ageing model folder"):
        load_ageing_net(tmp_path / "pickled")


def test_bad_ages_are_refused():
    net = AgeingNet(SMALL)
    with pytest.raises(ValueError, match="between 0 and 110"):
        age_sequence(net, np.zeros((32, 32), np.float32), 40, [50, 130])
    with pytest.raises(ValueError, match="as many"):
        age_slices(net, np.zeros((2, 32, 32), np.float32), [40], [50, 60])


def test_pairs_are_one_person_one_position_two_sessions(tiny_long_prepared):
    table = longitudinal_table(tiny_long_prepared)
    pairs = session_pairs(table, ("train",))
    assert set(pairs["subject_id"]) <= set(table.loc[table["split"] == "train", "subject_id"])
    assert (pairs["source_session_id"] != pairs["target_session_id"]).all()
    assert (pairs["years"] > 0).any() and (pairs["years"] < 0).any()  # ageing and rejuvenating
    np.testing.assert_allclose(pairs["years"].abs().max(), 10.0, atol=0.051)
    first = session_pairs(table, ("test",), from_first=True)
    assert (first["source_session_id"] == "ses-01").all() and (first["years"] > 0).all()


def _toy_longitudinal(folder, people=6, size=32, labels=False):
    """A prepared-like longitudinal set whose change with age is known: a bright disc (the brain) around a dark
    one (the ventricles) whose radius grows 1.5 pixels a decade; the last person is held out. With `labels`,
    tissue label PNGs as prepare writes them (0 outside, 2 grey matter, 5 ventricles)."""
    from PIL import Image

    from dallebrain.data.slicing import save_png16

    rows, yy, xx = [], *np.mgrid[0:size, 0:size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    rng = np.random.default_rng(0)
    for p in range(people):
        for s, years in enumerate((0, 10, 20)):
            age = 30 + 6 * p + years
            image = np.where(r < 13, 0.7, 0.0) * np.where(r < 3 + 0.15 * (age - 30), 0.2, 1.0)
            path = f"slices/{p}_{s}.png"
            (folder / "slices").mkdir(parents=True, exist_ok=True)
            save_png16(np.clip(image + rng.normal(0, 0.01, image.shape) * (image > 0), 0, 1), folder / path)
            label_path = None
            if labels:
                label_path = f"slices/{p}_{s}_label.png"
                tissue = np.where(r < 13, 2, 0) * np.where(r < 3 + 0.15 * (age - 30), 2.5, 1)
                Image.fromarray(tissue.astype(np.uint8)).save(folder / label_path)
            rows.append({"subject_id": f"toy-{p}", "modality": "T1w", "orientation": "axial", "slice_index": 0,
                         "slice_mm": 0.0, "sex": "F", "session_id": f"ses-0{s + 1}", "age": float(age),
                         "image_path": path, "label_path": label_path, "split": "test" if p == people - 1 else "train"})
    pd.DataFrame(rows).to_parquet(folder / "metadata.parquet")
    return folder


# Full resolution (downsample 1) takes ~55 s a run here, 2-3x the pooled ones: those two are in the slow set, the
# same four settings of warp / labels / intensity are tested fast at downsample 2.
@pytest.mark.parametrize("warp, downsample, label_weight, intensity",
                         [(False, 2, 0, True), (True, 2, 0, True), (True, 2, 1, False),
                          pytest.param(False, 1, 0, True, marks=pytest.mark.slow),
                          pytest.param(True, 1, 0, True, marks=pytest.mark.slow)])
def test_training_learns_a_known_change(tmp_path, warp, downsample, label_weight, intensity):
    from dallebrain.training.ageing import AgeingTrainOptions, train

    data = _toy_longitudinal(tmp_path / "toy", labels=label_weight > 0)
    record = train(AgeingTrainOptions(data, tmp_path / "m", steps=150, batch=8, crop=32, lr=3e-3, channels=(8, 16),
                                      warp=warp, downsample=downsample, label_weight=label_weight,
                                      intensity=intensity), progress=False)
    assert record["label_weight"] == label_weight
    assert load_ageing_net(tmp_path / "m").config.intensity == intensity
    assert record["people"] == 5 and record["steps"] == 150
    pairs = session_pairs(longitudinal_table(data), ("test",), from_first=True)
    images, index = load_images(data, [*pairs["source_image_path"], *pairs["target_image_path"]])
    source = images[pairs["source_image_path"].map(index)]
    target = images[pairs["target_image_path"].map(index)]
    predicted = age_slices(load_ageing_net(tmp_path / "m"), source, pairs["source_age"], pairs["target_age"])
    # a held-out person: the ventricles grew and the network grew them
    assert ((predicted - target) ** 2).mean() < 0.5 * ((source - target) ** 2).mean()


def test_dropping_the_intensity_change_keeps_the_displacement():
    from dallebrain.ageing.network import without_intensity

    net = AgeingNet(AgeingNetConfig(channels=(8, 16), image_size=32, warp=True))
    torch.nn.init.normal_(net.unet.conv_out.weight, std=0.05)
    torch.nn.init.normal_(net.unet.conv_out.bias, std=0.05)
    slim = without_intensity(net).eval()
    x, ages = torch.rand(2, 1, 32, 32), (torch.tensor([30.0, 60.0]), torch.tensor([50.0, 80.0]))
    with torch.no_grad():
        displacement, change = net.eval().fields(x, *ages)
        slim_displacement, slim_change = slim.fields(x, *ages)
    torch.testing.assert_close(slim_displacement, displacement)
    assert change.abs().max() > 0 and slim_change.abs().max() == 0
    torch.testing.assert_close(slim(x, *ages), warp(x, displacement))
    assert slim.unet.conv_out.out_channels == 2
    with pytest.raises(ValueError, match="only a warp model"):
        without_intensity(AgeingNet(SMALL))


def test_label_loss_pulls_the_displacement_towards_the_moved_tissue():
    from dallebrain.training.ageing import _label_loss

    source = torch.zeros(1, 16, 16, dtype=torch.long)
    source[:, 4:12, 4:8] = 2  # a ventricle ...
    target = torch.roll(source, 2, dims=2)  # ... two pixels to the right at follow-up
    still = torch.zeros(1, 2, 16, 16)
    assert _label_loss(still, source, source).item() < 1e-6  # the same maps: no loss (float rounding)
    toward, away = still.clone(), still.clone()
    toward[:, 0], away[:, 0] = -2.0, 2.0  # output pixel p samples the source at p + displacement
    # (the two columns the moved maps draw from outside the slice are all zeros: not exactly 0)
    assert _label_loss(toward, source, target) < 0.1 * _label_loss(still, source, target)
    assert _label_loss(still, source, target) < _label_loss(away, source, target)


def test_label_weight_refusals(tmp_path):
    from dallebrain.training.ageing import AgeingTrainOptions, train

    unlabelled = _toy_longitudinal(tmp_path / "toy")
    with pytest.raises(ValueError, match="needs tissue labels"):
        train(AgeingTrainOptions(unlabelled, tmp_path / "m", steps=1, crop=32, warp=True, label_weight=1.0),
              progress=False)
    with pytest.raises(ValueError, match="needs a warp model"):
        train(AgeingTrainOptions(_toy_longitudinal(tmp_path / "lab", labels=True), tmp_path / "m", steps=1, crop=32,
                                 label_weight=1.0), progress=False)
    with pytest.raises(ValueError, match="--no-intensity needs a warp model"):
        train(AgeingTrainOptions(unlabelled, tmp_path / "m", steps=1, crop=32, intensity=False), progress=False)
    with pytest.raises(ValueError, match="0 or more"):
        train(AgeingTrainOptions(unlabelled, tmp_path / "m", steps=1, crop=32, warp=True, label_weight=-1),
              progress=False)
    assert not (tmp_path / "m").exists()


def test_cli_refuses_cross_sectional_data(tiny_prepared, tmp_path):
    run = subprocess.run([sys.executable, "-m", "dallebrain.cli", "train", "ageing", "--data", str(tiny_prepared),
                          "--out", str(tmp_path / "m"), "--steps", "1"], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [f"error: {tiny_prepared}: not longitudinal (no session_id): simulate "
                                               "with --timepoints, then prepare"]
    assert not (tmp_path / "m").exists()
    assert pd.read_parquet(tiny_prepared / "metadata.parquet").shape[0] > 0
