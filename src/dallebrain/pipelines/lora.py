"""Applying a LoRA adapter (`dallebrain train lora`, or any diffusers/peft Stable Diffusion LoRA in
safetensors) to a loaded UNet at a given strength, with one-line errors for folders that cannot be used."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from dallebrain.pipelines.folder import PICKLE_SUFFIXES
from dallebrain.vocab import LORA_WEIGHT_NAME as WEIGHT_NAME

ADAPTER_NAME = "dallebrain_lora"
# how the down (A) and up (B) matrices of a module are named in peft and in the diffusers formats
_DOWN = (".lora_A.", ".lora.down.", ".lora_linear_layer.down.")
_UP = (".lora_B.", ".lora.up.", ".lora_linear_layer.up.")


def find_lora_file(lora_dir: str | Path) -> Path:
    """The adapter's safetensors file in a folder; ValueError for a missing folder, pickle files, no weights."""
    folder = Path(lora_dir)
    if not folder.is_dir():
        raise ValueError(f"LoRA folder not found: {folder}")
    pickles = sorted(p for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ValueError(f"refusing pickle weights in LoRA folder {folder} ({pickles[0].relative_to(folder)}): "
                         "safetensors only")
    if (folder / WEIGHT_NAME).is_file():
        return folder / WEIGHT_NAME
    files = sorted(folder.glob("*.safetensors"))
    if len(files) == 1:
        return files[0]
    if not files:
        raise ValueError(f"no LoRA weights in {folder}: expected {WEIGHT_NAME}")
    raise ValueError(f"several safetensors files in {folder} and no {WEIGHT_NAME}: keep one adapter per folder")


def read_lora(path: Path) -> dict:
    """The adapter's tensors; ValueError when the file is not safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path} is not a readable safetensors file: {str(exc).splitlines()[0]}") from exc


def _module_shapes(state: dict, prefix: str) -> dict[str, list]:
    """{module path: [in_features, out_features]} the adapter expects, from its down/up matrices."""
    shapes: dict[str, list] = {}
    for key, tensor in state.items():
        if not key.startswith(prefix + "."):
            continue
        key = key[len(prefix) + 1:]
        for markers, slot in ((_DOWN, 0), (_UP, 1)):
            for marker in markers:
                if marker in key:
                    path = key.split(marker)[0]
                    size = tensor.shape[1] if slot == 0 else tensor.shape[0]
                    shapes.setdefault(path, [None, None])[slot] = int(size)
    return shapes


def check_lora_fits(model, state: dict, prefix: str, what: str) -> None:
    """ValueError unless every adapted module exists in `model` with the in/out sizes the adapter expects."""
    import torch

    shapes = _module_shapes(state, prefix)
    if not shapes:
        raise ValueError(f"no {what} LoRA weights (keys '{prefix}.*') in the adapter")
    for path, (n_in, n_out) in sorted(shapes.items()):
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise ValueError(f"LoRA does not fit this {what}: it has no module {path} (trained on another base?)") \
                from None
        module = getattr(module, "base_layer", module)  # a layer that already carries a peft adapter
        if isinstance(module, torch.nn.Linear):
            have = (module.in_features, module.out_features)
        elif isinstance(module, torch.nn.Conv2d):
            have = (module.in_channels, module.out_channels)
        else:
            raise ValueError(f"LoRA does not fit this {what}: {path} is a {type(module).__name__}, not a linear layer")
        if (n_in, n_out) != have:
            raise ValueError(f"LoRA does not fit this {what}: {path} maps {have[0]}->{have[1]} features, the adapter "
                             f"{n_in}->{n_out} (trained on another base?)")


def apply_lora(unet, lora_dir: str | Path, scale: float = 1.0, text_encoder=None) -> None:
    """Load the adapter of `lora_dir` into a diffusers UNet2DConditionModel at strength `scale` (0: the base
    model exactly); an adapter that also adapts the text encoder needs `text_encoder`. Applying again
    replaces the previous adapter."""
    from diffusers import StableDiffusionPipeline

    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
        raise ValueError(f"LoRA scale must be a non-negative number, got {scale}")
    path = find_lora_file(lora_dir)
    state = read_lora(path)
    has_text = any(k.startswith("text_encoder.") for k in state)
    if not any(k.startswith("unet.") for k in state):
        raise ValueError(f"{path} holds no UNet LoRA weights (keys 'unet.*'): not a Stable Diffusion LoRA")
    if has_text and text_encoder is None:
        raise ValueError(f"{path} also adapts the text encoder: pass text_encoder= to apply it")
    check_lora_fits(unet, state, "unet", "UNet")
    if has_text:
        check_lora_fits(text_encoder, state, "text_encoder", "text encoder")
    remove_lora(unet, text_encoder)
    # the same calls StableDiffusionPipeline.load_lora_weights makes, with the state dict checked above
    state, alphas, metadata = StableDiffusionPipeline.lora_state_dict(
        str(path.parent), weight_name=path.name, return_lora_metadata=True)
    StableDiffusionPipeline.load_lora_into_unet(state, alphas, unet, adapter_name=ADAPTER_NAME, metadata=metadata)
    unet.set_adapters([ADAPTER_NAME], weights=[float(scale)])
    if has_text:
        _load_text_encoder_lora(text_encoder, state, metadata, float(scale))


def _load_text_encoder_lora(text_encoder, state: dict, metadata: dict | None, scale: float) -> None:
    """peft's own injection: diffusers' load_lora_into_text_encoder goes through transformers' load_adapter,
    which transformers 5 refuses with peft < 0.22 (installed: 0.21)."""
    from diffusers.utils import convert_state_dict_to_peft
    from diffusers.utils.peft_utils import set_weights_and_activate_adapters
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    prefix = "text_encoder."
    weights = convert_state_dict_to_peft({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    config = {k[len(prefix):]: v for k, v in (metadata or {}).items() if k.startswith(prefix)}
    if config:
        fields = {f.name for f in dataclasses.fields(LoraConfig) if f.init}
        config = LoraConfig(**{k: v for k, v in config.items() if k in fields})
    else:  # no metadata: rank from the shapes, alpha = rank (what diffusers assumes too)
        modules = sorted({k.split(".lora_A.")[0] for k in weights if ".lora_A." in k})
        rank = next(v.shape[0] for k, v in weights.items() if ".lora_A." in k)
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=modules)
    inject_adapter_in_model(config, text_encoder, adapter_name=ADAPTER_NAME)
    set_peft_model_state_dict(text_encoder, weights, adapter_name=ADAPTER_NAME)
    text_encoder.requires_grad_(False)
    set_weights_and_activate_adapters(text_encoder, [ADAPTER_NAME], [scale])


def remove_lora(unet, text_encoder=None) -> None:
    """Take an adapter applied by `apply_lora` off again (no-op when none is applied)."""
    if ADAPTER_NAME in (getattr(unet, "peft_config", None) or {}):
        unet.delete_adapters(ADAPTER_NAME)
    if text_encoder is not None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        for module in text_encoder.modules():
            if isinstance(module, BaseTunerLayer) and ADAPTER_NAME in module.lora_A:
                module.delete_adapter(ADAPTER_NAME)
