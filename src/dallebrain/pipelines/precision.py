"""The compute precision of sampling, one rule for every caller (generate, the API, the web page, synthesize,
evaluate): "fp32", "bf16" (the UNet and the VAE decoder under bfloat16 autocast; weights, latents and the
sampler's state stay fp32), or "auto": bf16 where the hardware computes it natively, else fp32.

Kept import-free at module level (torch is imported inside) so the CLI can name the choices without loading torch.
"""

from __future__ import annotations

import contextlib

PRECISIONS = ("auto", "bf16", "fp32")
DEFAULT = "auto"


def check_precision(precision: str, option: str = "precision") -> str:
    """`precision` itself, or a one-line ValueError naming `option` (e.g. "--precision")."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown {option} {precision!r}: choose from {', '.join(PRECISIONS)}")
    return precision


def native_bf16(device_type: str = "cpu") -> bool:
    """Whether this device computes bfloat16 natively. On a CPU without AVX-512 BF16 or AMX, PyTorch emulates
    bf16 through fp32 with conversions on every op, which is slower than plain fp32 (so "auto" must not pick it)."""
    import torch

    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check is not None and check() for check in checks)


def resolve_precision(precision: str, device_type: str | None = None) -> str:
    """'auto' -> 'bf16' where `device_type` (default: cuda when present, else cpu) computes bfloat16 natively,
    else 'fp32'; 'bf16' and 'fp32' are returned as they are. Results record the resolved name, so a rerun on
    other hardware cannot silently switch precision."""
    check_precision(precision)
    if precision != "auto":
        return precision
    if device_type is None:
        import torch

        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    return "bf16" if native_bf16(device_type) else "fp32"


def compute_context(precision: str, device_type: str):
    """The context the UNet and VAE decoder run in: bfloat16 autocast for "bf16", nothing for "fp32".
    Autocast (not casting the weights) keeps the fp32 weights as the model's only copy: a pipeline switched
    back to fp32 computes exactly what it did before."""
    if resolve_precision(precision, device_type) == "fp32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type, dtype=torch.bfloat16)


def keep_fp32_output(layer) -> None:
    """Run `layer` (the VAE decoder's last convolution, whose output is the image) in fp32 even under autocast.
    Its bf16 output would round a pixel near white to steps of 1/256, as coarse as an 8-bit PNG, leaving the
    16-bit PNG and the float NIfTI no finer; the layer maps a few channels to one at the image's size, so fp32
    costs little there. The weights and state dict are untouched; in fp32 the result is the same as before."""
    if getattr(layer, "_dallebrain_fp32_output", False):
        return
    import torch

    forward = layer.forward

    def fp32_forward(x):
        with torch.autocast(x.device.type, enabled=False):
            return forward(x.float())

    layer.forward = fp32_forward  # an instance attribute: nn.Module.__call__ finds it before the class's
    layer._dallebrain_fp32_output = True
