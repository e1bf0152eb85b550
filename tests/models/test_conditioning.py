"""Structured attribute conditioning (models/conditioning.py) with tiny UNets."""

import numpy as np
import pandas as pd
import pytest
import torch

from dallebrain.models.conditioning import (
    ATTRIBUTES,
    FINE_LEVEL_FREQUENCIES,
    attribute_features,
    descriptor_of,
    drop_attributes,
    feature_width,
    features_batch,
    fine_level_of,
    fold_unstated,
    prompt_attributes,
    table_attributes,
    training_dropout,
    unet_features,
    unstated_features,
    uses_attributes,
)
from dallebrain.models.unet import UnetConfig, build_unet, load_initial_weights

TINY = dict(sample_size=8, block_out_channels=[8, 16], attention_head_dim=4, cross_attention_levels=1,
            cross_attention_dim=16, norm_num_groups=4)
WOMAN_85 = {"orientation": "axial", "slice_mm": 23.0, "modality": "T1w", "field_strength": 3.0, "age": 85.0,
            "sex": "F", "ventricles": "large", "brain_volume": None}


def _attribute_unet(seed=0):
    torch.manual_seed(seed)
    unet = build_unet(UnetConfig(attributes=True, **TINY)).eval()
    with torch.no_grad():  # a trained embedding, not the zero start
        for p in unet.class_embedding.parameters():
            p.normal_(0, 0.5)
    return unet


def _run(unet, labels=None, seed=1):
    torch.manual_seed(seed)
    x, states = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 16)
    kw = {} if labels is None else {"class_labels": labels}
    with torch.no_grad():
        return unet(x, torch.tensor([500, 500]), encoder_hidden_states=states, **kw).sample


def test_every_attribute_has_its_own_slots_and_an_unstated_one():
    stated, silent = attribute_features(WOMAN_85), attribute_features({})
    assert stated.shape == silent.shape == (feature_width(),)
    for name in ATTRIBUTES:  # stating one attribute changes its slots only
        value = WOMAN_85[name] if WOMAN_85[name] is not None else "small"
        assert np.count_nonzero(attribute_features({name: value}) != silent) >= 2, name
    with pytest.raises(ValueError, match="unknown modality 'CT'"):
        attribute_features({"modality": "CT"})


def test_unstated_equals_dropout_and_dropout_is_per_attribute():
    full = features_batch([WOMAN_85, WOMAN_85])
    everything = drop_attributes(full, np.ones((2, len(ATTRIBUTES)), bool))
    torch.testing.assert_close(everything, unstated_features(2), rtol=0, atol=0)
    only_age = np.zeros((2, len(ATTRIBUTES)), bool)
    only_age[0, ATTRIBUTES.index("age")] = True
    dropped = drop_attributes(full, only_age)
    torch.testing.assert_close(dropped[0], features_batch([{**WOMAN_85, "age": None}])[0], rtol=0, atol=0)
    torch.testing.assert_close(dropped[1], full[1], rtol=0, atol=0)


def test_training_dropout_leaves_attributes_unstated_at_its_rate_and_all_of_them_where_the_condition_dropped():
    full = features_batch([WOMAN_85] * 400)
    dropped = np.zeros(400, bool)
    dropped[:100] = True
    out = training_dropout(full, np.random.default_rng(0), 0.3, dropped)
    torch.testing.assert_close(out[:100], unstated_features(100), rtol=0, atol=0)
    age = ATTRIBUTES.index("age")
    no_age = drop_attributes(full[:1], np.eye(len(ATTRIBUTES), dtype=bool)[age:age + 1])[0]
    slots = no_age != full[0]  # the age block's slots
    age_unstated = (out[100:, slots] == no_age[slots]).all(dim=1).float().mean()
    assert 0.2 < float(age_unstated) < 0.4  # about 30 % of the other rows
    sex = ATTRIBUTES.index("sex")
    no_sex = drop_attributes(full[:1], np.eye(len(ATTRIBUTES), dtype=bool)[sex:sex + 1])[0]
    sex_slots = no_sex != full[0]
    sex_unstated = (out[100:, sex_slots] == no_sex[sex_slots]).all(dim=1)
    both = (out[100:, slots] == no_age[slots]).all(dim=1) & sex_unstated
    assert float(both.float().mean()) < float(age_unstated)  # per attribute, not all together


def test_an_attribute_changes_the_unet_output():
    unet = _attribute_unet()
    assert uses_attributes(unet)
    young, old = features_batch([{**WOMAN_85, "age": 20.0}] * 2), features_batch([WOMAN_85] * 2)
    assert (_run(unet, young) - _run(unet, old)).abs().mean() > 1e-3
    torch.testing.assert_close(_run(unet, old), _run(unet, old))


def test_folding_unstated_gives_a_stock_unet_with_the_same_outputs():
    unet = _attribute_unet()
    expected = _run(unet, unstated_features(2))
    fold_unstated(unet)
    assert unet.class_embedding is None and unet.config.class_embed_type is None
    torch.testing.assert_close(_run(unet), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no attribute features"):
        fold_unstated(unet)


def test_a_text_only_unet_fine_tuned_with_attributes_starts_as_itself(tmp_path):
    torch.manual_seed(3)
    text_only = build_unet(UnetConfig(**TINY)).eval()
    text_only.save_pretrained(tmp_path / "unet", safe_serialization=True)
    unet = build_unet(UnetConfig(attributes=True, **TINY)).eval()
    left = load_initial_weights(unet, tmp_path)  # a pipeline folder holding unet/
    assert left and all(k.startswith("class_embedding.") for k in left)
    torch.testing.assert_close(_run(unet, features_batch([WOMAN_85] * 2)), _run(text_only), rtol=0, atol=0)
    wider = build_unet(UnetConfig(**{**TINY, "block_out_channels": [8, 24]}))
    with pytest.raises(ValueError, match="another architecture"):
        load_initial_weights(wider, tmp_path)


def test_the_fine_level_layout_appends_the_levels_finer_features_and_leaves_the_rest_as_it_was():
    fine, base = attribute_features(WOMAN_85, fine_level=True), attribute_features(WOMAN_85)
    extra = 2 * len(FINE_LEVEL_FREQUENCIES)
    assert fine.shape == (feature_width(True),) == (feature_width() + extra,)
    np.testing.assert_array_equal(fine[:-extra], base)
    # 1.5 mm apart (one slice step): the finest base slots move little, the fine ones by far more
    near = attribute_features({**WOMAN_85, "slice_mm": 24.5}, fine_level=True)
    base_move = np.abs(attribute_features({**WOMAN_85, "slice_mm": 24.5}) - base).max()
    assert np.abs(near[-extra:] - fine[-extra:]).max() > 2 * base_move
    assert not attribute_features({}, fine_level=True)[-extra:].any()  # unstated: zero, beside its unstated slot
    # dropping the level clears its fine slots too; dropping everything is the unstated row, in this layout as well
    full = features_batch([WOMAN_85, WOMAN_85], fine_level=True)
    level = np.zeros((2, len(ATTRIBUTES)), bool)
    level[0, ATTRIBUTES.index("slice_mm")] = True
    dropped = drop_attributes(full, level)
    torch.testing.assert_close(dropped[0], features_batch([{**WOMAN_85, "slice_mm": None}], True)[0], rtol=0, atol=0)
    torch.testing.assert_close(dropped[1], full[1], rtol=0, atol=0)
    everything = drop_attributes(full, np.ones((2, len(ATTRIBUTES)), bool))
    torch.testing.assert_close(everything, unstated_features(2, fine_level=True), rtol=0, atol=0)


def test_a_unet_widened_to_the_fine_level_starts_as_itself_and_then_hears_the_fine_slots(tmp_path):
    base = _attribute_unet()
    base.save_pretrained(tmp_path / "unet", safe_serialization=True)
    torch.manual_seed(5)
    fine = build_unet(UnetConfig(attributes=True, fine_level=True, **TINY)).eval()
    assert uses_attributes(fine) and fine_level_of(fine) and not fine_level_of(base)
    left = load_initial_weights(fine, tmp_path)
    assert left == []  # every tensor from the base, the projection widened with zero weights
    rows = [WOMAN_85, {**WOMAN_85, "slice_mm": 24.5}]
    torch.testing.assert_close(_run(fine, unet_features(fine, rows)), _run(base, unet_features(base, rows)),
                               rtol=0, atol=0)
    with torch.no_grad():  # once trained, the new inputs change the output
        fine.class_embedding.linear_1.weight[:, feature_width():].normal_(0, 0.5)
    assert (_run(fine, unet_features(fine, rows)) - _run(base, unet_features(base, rows))).abs().mean() > 1e-3
    expected = _run(fine, unstated_features(2, fine_level=True))
    fold_unstated(fine)  # stock clients: the fine layout folds as the base one does
    torch.testing.assert_close(_run(fine), expected, rtol=1e-5, atol=1e-6)


def test_training_attributes_come_from_the_table_not_the_captions():
    table = pd.DataFrame({"orientation": ["axial", "coronal"], "slice_mm": [23.0, -20.0], "modality": ["T1w", "FLAIR"],
                          "field_strength": [3.0, 1.5], "age": [85.0, np.nan], "sex": ["F", "M"],
                          "ventricles_z": [1.6, 0.2], "brain_volume_z": [np.nan, -1.4],
                          "caption": ["a 20-year-old man", "a woman"]})
    rows = table_attributes(table)
    assert rows[0]["age"] == 85.0 and rows[0]["sex"] == "F" and rows[0]["ventricles"] == "large"
    assert rows[1]["age"] is None and rows[1]["ventricles"] == "normal" and rows[1]["brain_volume"] == "small"
    assert descriptor_of(-1.2) == "small" and descriptor_of(float("nan")) is None


def test_a_prompt_states_what_the_parser_reads():
    attrs = prompt_attributes("axial FLAIR slice of a healthy 85-year-old woman at the level of the lateral "
                              "ventricles, 3T")
    assert attrs["orientation"] == "axial" and attrs["modality"] == "FLAIR" and attrs["age"] == 85.0
    assert attrs["sex"] == "F" and attrs["field_strength"] == 3.0 and attrs["slice_mm"] == pytest.approx(23.0)
    assert set(attrs) == set(ATTRIBUTES)
