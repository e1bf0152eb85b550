"""Weight-space interpolation (WiSE-FT) between a UNet and its fine-tune."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from dallebrain.training.weight_interpolation import WEIGHTS_NAME, interpolate_folder, interpolate_state


def _state(seed: int, dtype=torch.float16) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"conv.weight": torch.randn(4, 3, 3, 3, generator=g).to(dtype),
            "norm.bias": torch.randn(4, generator=g).to(dtype),
            "steps": torch.tensor([7, 9])}


def test_ends_are_the_two_models_and_the_middle_their_mean():
    base, tuned = _state(0), _state(1)
    assert all(torch.equal(interpolate_state(base, tuned, 0.0)[k], base[k]) for k in base)
    assert all(torch.equal(interpolate_state(base, tuned, 1.0)[k], tuned[k]) for k in base)
    mid = interpolate_state(base, tuned, 0.25)
    for k in ("conv.weight", "norm.bias"):
        assert mid[k].dtype == torch.float16  # stored back in the base's dtype
        expected = 0.75 * base[k].float() + 0.25 * tuned[k].float()
        assert torch.allclose(mid[k].float(), expected, atol=2e-3)
        assert not torch.equal(mid[k], base[k]) and not torch.equal(mid[k], tuned[k])
    assert torch.equal(mid["steps"], base["steps"])  # integer buffers are carried, not averaged


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), "0.5", True])
def test_bad_alpha_is_refused(alpha):
    with pytest.raises(ValueError, match="alpha must be a number in"):
        interpolate_state(_state(0), _state(1), alpha)


def test_different_models_are_refused():
    base, tuned = _state(0), _state(1)
    extra = {**tuned, "new.weight": torch.zeros(2)}
    with pytest.raises(ValueError, match="hold different tensors"):
        interpolate_state(base, extra, 0.5)
    reshaped = {**tuned, "norm.bias": torch.zeros(5, dtype=torch.float16)}
    with pytest.raises(ValueError, match="norm.bias is"):
        interpolate_state(base, reshaped, 0.5)
    counted = {**tuned, "steps": torch.tensor([7, 10])}
    with pytest.raises(ValueError, match="integer tensor steps differs"):
        interpolate_state(base, counted, 0.5)


def _unet(seed: int):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=8,
                                norm_num_groups=4, attention_head_dim=2)


def test_folder_interpolation_makes_a_unet_between_the_two(tmp_path):
    from diffusers import UNet2DConditionModel

    base, tuned = _unet(0), _unet(1)
    base.save_pretrained(tmp_path / "base")
    tuned.save_pretrained(tmp_path / "tuned")
    x, t, text = torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.randn(1, 3, 8)
    out = interpolate_folder(tmp_path / "base", tmp_path / "tuned", 0.0, tmp_path / "mix0")
    with torch.no_grad():
        same = UNet2DConditionModel.from_pretrained(out)(x, t, text).sample
        assert torch.allclose(same, base(x, t, text).sample, atol=1e-6)
        interpolate_folder(tmp_path / "base", tmp_path / "tuned", 0.5, tmp_path / "mix")
        mixed = UNet2DConditionModel.from_pretrained(tmp_path / "mix")(x, t, text).sample
        assert not torch.allclose(mixed, same, atol=1e-4)
    assert not list((tmp_path / "mix").glob(".tmp-*"))  # written through a temporary name
    # mixed weights are the mean of the two files'
    a, b, m = (load_file(tmp_path / f / WEIGHTS_NAME) for f in ("base", "tuned", "mix"))
    k = next(iter(a))
    assert torch.allclose(m[k], (a[k] + b[k]) / 2, atol=1e-6)


def test_folder_interpolation_refuses_other_architectures_and_missing_weights(tmp_path):
    _unet(0).save_pretrained(tmp_path / "base")
    (tmp_path / "other").mkdir()
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    (tmp_path / "other" / "config.json").write_text(json.dumps({**config, "layers_per_block": 2}))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other" / WEIGHTS_NAME))
    with pytest.raises(ValueError, match="different architectures .*layers_per_block"):
        interpolate_folder(tmp_path / "base", tmp_path / "other", 0.5, tmp_path / "mix")
    with pytest.raises(ValueError, match="holds no"):
        interpolate_folder(tmp_path / "base", tmp_path / "nothing", 0.5, tmp_path / "mix")
    assert not (tmp_path / "mix").exists()
