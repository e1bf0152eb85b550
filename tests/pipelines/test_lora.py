import re
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from dallebrain.api import load_pipeline
from dallebrain.pipelines.lora import WEIGHT_NAME, apply_lora, remove_lora

PROMPT = "axial T2-weighted slice of a healthy 70-year-old woman at the level of the lateral ventricles"


@pytest.fixture(scope="module")
def strong_lora(tiny_pipeline, tmp_path_factory):
    """A test-only adapter in the format `dallebrain train lora` writes, with large random weights (a few
    training steps barely move a LoRA, whose up matrices start at zero)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    out = tmp_path_factory.mktemp("strong_lora")
    unet = UNet2DConditionModel.from_pretrained(tiny_pipeline / "unet")
    torch.manual_seed(0)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                target_modules=["attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0"]))
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.5)
    StableDiffusionPipeline.save_lora_weights(
        out, unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)),
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(), safe_serialization=True)
    assert (out / WEIGHT_NAME).is_file()
    return out


def test_lora_changes_the_image_and_scale_zero_is_the_base(tiny_pipeline, strong_lora):
    pipe = load_pipeline(tiny_pipeline, device="cpu")
    base = pipe(PROMPT, seed=1, steps=3).images
    pipe._prompt_cache.clear()
    apply_lora(pipe.unet, strong_lora, 1.0)
    adapted = pipe(PROMPT, seed=1, steps=3).images
    assert np.abs(adapted - base).max() > 1e-3
    apply_lora(pipe.unet, strong_lora, 0.0)  # applying again replaces the adapter
    np.testing.assert_allclose(pipe(PROMPT, seed=1, steps=3).images, base, atol=1e-5)
    apply_lora(pipe.unet, strong_lora, 0.5)
    half = pipe(PROMPT, seed=1, steps=3).images
    assert not np.allclose(half, base, atol=1e-5) and not np.allclose(half, adapted, atol=1e-5)
    remove_lora(pipe.unet)
    np.testing.assert_allclose(pipe(PROMPT, seed=1, steps=3).images, base, atol=1e-5)
    # the API route the CLI takes
    via_api = load_pipeline(tiny_pipeline, device="cpu", lora=strong_lora, lora_scale=1.0)
    np.testing.assert_allclose(via_api(PROMPT, seed=1, steps=3).images, adapted, atol=1e-5)
    assert via_api.lora == {"path": str(strong_lora), "scale": 1.0}


def test_stock_pipeline_loads_the_adapter(tiny_pipeline, strong_lora, tmp_path):
    """On what `dallebrain export` writes for stock clients (attributes unstated, folded into the UNet)."""
    from diffusers import StableDiffusionPipeline

    from dallebrain.pipelines.export import export_stock_folder

    export_stock_folder(tiny_pipeline, tmp_path / "stock")
    pipe = StableDiffusionPipeline.from_pretrained(str(tmp_path / "stock"), safety_checker=None)

    def generate():
        return pipe(PROMPT, num_inference_steps=2, height=64, width=64, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images

    before = generate()
    pipe.load_lora_weights(str(strong_lora))
    after = generate()
    assert np.isfinite(after).all() and np.abs(after - before).max() > 1e-3


def test_bad_adapter_folders(tiny_pipeline, strong_lora, tmp_path):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_pipeline / "unet")
    with pytest.raises(ValueError, match="not found"):
        apply_lora(unet, tmp_path / "nowhere", 1.0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no LoRA weights"):
        apply_lora(unet, tmp_path / "empty", 1.0)
    pickled = tmp_path / "pickled"
    shutil.copytree(strong_lora, pickled)
    (pickled / "pytorch_lora_weights.bin").write_bytes(b"not allowed")
    with pytest.raises(ValueError, match="pickle"):
        apply_lora(unet, pickled, 1.0)
    with pytest.raises(ValueError, match="scale"):
        apply_lora(unet, strong_lora, -1.0)
    # an adapter made for another base: other feature sizes, or modules this UNet lacks
    state = load_file(strong_lora / WEIGHT_NAME)
    for name, edit in (("wider", lambda k, v: torch.zeros(v.shape[0], v.shape[1] + 8) if ".down." in k else v),
                       ("deeper", lambda k, v: v)):
        other = tmp_path / name
        other.mkdir()
        edited = {k: edit(k, v) for k, v in state.items()}
        if name == "deeper":
            edited = {re.sub(r"down_blocks\.\d+", "down_blocks.7", k): v for k, v in edited.items()}
        save_file(edited, other / WEIGHT_NAME)
        with pytest.raises(ValueError, match="does not fit this UNet") as info:
            apply_lora(unet, other, 1.0)
        assert "\n" not in str(info.value)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / WEIGHT_NAME).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="safetensors"):
        apply_lora(unet, garbage, 1.0)
    assert "dallebrain_lora" not in (getattr(unet, "peft_config", None) or {})  # nothing half-applied
