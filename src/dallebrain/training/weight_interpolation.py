"""Weight-space interpolation between a base model and its fine-tune (WiSE-FT, Wortsman et al., CVPR 2022).

A short fine-tune that teaches one thing (FLAIR's response to age, recipes/contrast_balance_finetune.py) can
cost what the base already did well (realism). Averaging the two weight sets, theta = (1 - alpha) * base +
alpha * tuned, keeps a share of both: the fine-tune starts from the base, so the two lie in one basin and the
straight line between them stays a working model (that paper's finding, measured here for the UNet in
BENCHMARKS.md). alpha = 0 is the base, 1 the fine-tune.

Tensors are mixed in float32 and stored back in the base's dtype (fp16 release weights stay fp16).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME as WEIGHTS_NAME  # a diffusers component's weights file


def check_alpha(alpha: float) -> float:
    """The fine-tune's share in [0, 1]; one-line ValueError otherwise."""
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha) \
            or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"the fine-tune's share alpha must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


def interpolate_state(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
                      alpha: float) -> dict[str, torch.Tensor]:
    """(1 - alpha) * base + alpha * tuned, tensor by tensor, in the base's dtype; the two must hold the same
    tensors with the same shapes (one model and its fine-tune), else a one-line ValueError."""
    alpha = check_alpha(alpha)
    if base.keys() != tuned.keys():
        only = sorted(set(base) ^ set(tuned))
        raise ValueError(f"the two weight sets hold different tensors ({len(only)} in one only, e.g. {only[0]}): "
                         "interpolate a model with its own fine-tune")
    out = {}
    for name, a in base.items():
        b = tuned[name]
        if a.shape != b.shape:
            raise ValueError(f"tensor {name} is {tuple(a.shape)} in the base and {tuple(b.shape)} in the fine-tune")
        if not a.is_floating_point():
            if not torch.equal(a, b):
                raise ValueError(f"integer tensor {name} differs between the base and the fine-tune")
            out[name] = a.clone()
            continue
        out[name] = torch.lerp(a.float(), b.float(), alpha).to(a.dtype).contiguous()
    return out


def interpolate_folder(base: str | Path, tuned: str | Path, alpha: float, out: str | Path) -> Path:
    """Write out/WEIGHTS_NAME (and the base's config.json) interpolating two diffusers component folders
    (unet/); the weights file is written to a temporary name and renamed, so a kill leaves the old file or the
    new one. The two configs must agree (the same architecture)."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from dallebrain.data.io import atomic_path

    base, tuned, out = Path(base), Path(tuned), Path(out)
    for folder in (base, tuned):
        if not (folder / WEIGHTS_NAME).is_file():
            raise ValueError(f"{folder} holds no {WEIGHTS_NAME}")
    configs = [json.loads((f / "config.json").read_text()) for f in (base, tuned)]
    strip = [{k: v for k, v in c.items() if not k.startswith("_")} for c in configs]
    if strip[0] != strip[1]:
        differ = sorted(k for k in set(strip[0]) | set(strip[1]) if strip[0].get(k) != strip[1].get(k))
        raise ValueError(f"{base} and {tuned} are different architectures (config differs in {', '.join(differ)})")
    mixed = interpolate_state(load_file(base / WEIGHTS_NAME), load_file(tuned / WEIGHTS_NAME), alpha)
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() != base.resolve():
        shutil.copyfile(base / "config.json", out / "config.json")
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(mixed, str(tmp))
    return out
