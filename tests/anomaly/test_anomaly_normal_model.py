"""The normal model: pooled per-position statistics, safe save/load, refusals."""

import json

import numpy as np
import pytest

from dallebrain.anomaly.attributes import SliceAttributes
from dallebrain.anomaly.normal_model import STD_FLOOR, NormalModel, NormalModelBuilder


def _fit() -> NormalModel:
    builder = NormalModelBuilder(pool_mm=3.0)
    for level, values in ((0.0, (1.0, 3.0)), (3.0, (5.0,)), (9.0, (100.0,))):
        for v in values:
            builder.add(SliceAttributes("axial", level, "T2w"), {"pixel": np.full((4, 4), v),
                                                                 "latent": np.full((2, 2, 2), v)})
    return builder.build({"note": "test"})


def test_levels_within_pool_mm_are_pooled_and_farther_ones_are_not():
    model = _fit()
    mean, std = model.stats(SliceAttributes("axial", 0.0, "T2w"), "pixel")
    assert mean == pytest.approx(np.full((4, 4), 3.0))  # 1, 3 and the 5 at 3 mm
    assert std == pytest.approx(np.full((4, 4), np.std([1.0, 3.0, 5.0])))
    mean, std = model.stats(SliceAttributes("axial", 9.0, "T2w"), "latent")
    assert mean == pytest.approx(np.full((2, 2, 2), 100.0))
    assert std == pytest.approx(np.full((2, 2, 2), STD_FLOOR["latent"]))  # one slice: the floor, not zero
    assert model.counts == {"T2w/axial/+0.0": 3, "T2w/axial/+3.0": 3, "T2w/axial/+9.0": 1}


def test_a_position_the_model_never_saw_is_refused_in_one_line():
    model = _fit()
    for attributes in (SliceAttributes("axial", 30.0, "T2w"), SliceAttributes("coronal", 0.0, "T2w"),
                       SliceAttributes("axial", 0.0, "FLAIR")):
        with pytest.raises(ValueError, match="no healthy") as info:
            model.stats(attributes, "pixel")
        assert "\n" not in str(info.value)


def test_save_and_load_round_trip_without_pickle(tmp_path):
    model = _fit()
    model.thresholds = {"diffusion": {"T2w": {"pixel": 0.5, "slice": 0.7, "n_slices": 3}}}
    model.save(tmp_path / "normal")
    loaded = NormalModel.load(tmp_path / "normal")
    assert sorted(p.name for p in (tmp_path / "normal").iterdir()) == ["normal_model.json", "positions.safetensors"]
    assert loaded.thresholds == model.thresholds and loaded.counts == model.counts
    assert loaded.settings == {"note": "test"}
    for key, value in model.means.items():
        assert loaded.means[key] == pytest.approx(value, rel=1e-3)


def test_a_damaged_or_missing_model_is_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="not a normal model folder"):
        NormalModel.load(tmp_path)
    _fit().save(tmp_path / "normal")
    (tmp_path / "normal" / "positions.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="cannot read the normal model") as info:
        NormalModel.load(tmp_path / "normal")
    assert "\n" not in str(info.value)
    # a record that is not an object, or lacks what the model is made of (hand-edited, cut short)
    _fit().save(tmp_path / "edited")
    record = tmp_path / "edited" / "normal_model.json"
    whole = json.loads(record.read_text())
    for text, words in (("[1]", "not a JSON object"),
                        (json.dumps({k: v for k, v in whole.items() if k != "counts"}), "lacks or garbles 'counts'"),
                        (json.dumps({**whole, "pool_mm": "wide"}), "lacks or garbles")):
        record.write_text(text)
        with pytest.raises(ValueError, match=words) as info:
            NormalModel.load(tmp_path / "edited")
        assert "\n" not in str(info.value)


def test_fitting_nothing_is_refused():
    with pytest.raises(ValueError, match="no healthy slice"):
        NormalModelBuilder().build()
