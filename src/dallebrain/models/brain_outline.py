"""The brain's outline where the VAE smears it: a small convolutional head that tells, pixel by pixel, whether a
decoded slice's pixel is brain, as the skull-stripped slice it stands for has it, or the decoder's halo around it.

Why: the decoder draws each latent pixel as a 4x4 patch, so the step from the brain's rim to a background of exact
zeros comes out as a ramp, one ring of pixels at 0.07-0.3 outside the brain (BENCHMARKS.md, "The brain's outline").
The GLCM reads such a ring pixel beside a bright CSF rim as strong contrast: with the real mask applied, the
reconstructions' T2w texture distance falls from 35 to 6.7, and only a mask exact to the pixel does it (dilated by
one pixel it gains nothing, eroded by one it costs more than it gains). No intensity threshold can do it: the ring
and a real dim rim overlap in intensity. The head sees a 7x7 neighbourhood of the decoded slice (three 3x3
convolutions, about 5,000 weights), is trained on reconstructions of real train slices against their own masks
(`fit_brain_outline`), and only removes: a pixel it calls background is set to 0, and a hole it would cut inside
the brain (FLAIR's dark ventricles) is filled back. Which contrasts it is applied to is the model's choice,
measured on its generated slices (recipes/brain_outline.py) and recorded in dallebrain.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

FILENAME = "brain_outline.safetensors"  # in the model's vae/ folder: it belongs to that decoder, and goes with it
FORMAT = "dallebrain brain outline 1"
INFO_KEY = "brain_outline"  # in dallebrain.json's "sampling" (and "unclip" -> "sampling"): {"contrasts": [...]}
BAND_PX = 2  # the loss counts pixels within this distance of anything decoded above NEAR_ZERO: elsewhere it is trivial
NEAR_ZERO = 0.02
MAX_WIDTH, MAX_LAYERS = 256, 16


class BrainOutlineError(ValueError):
    """A brain-outline file or record that cannot be used."""


class BrainOutline(nn.Module):
    """Decoded slices (B, 1, H, W) in [0, 1] -> logits that each pixel is brain."""

    def __init__(self, width: int = 16, layers: int = 3):
        super().__init__()
        if not (1 <= width <= MAX_WIDTH and 1 <= layers <= MAX_LAYERS):
            raise BrainOutlineError(f"brain outline head: width {width} and layers {layers} must be in "
                                    f"[1, {MAX_WIDTH}] and [1, {MAX_LAYERS}]")
        self.width, self.layers = width, layers
        parts: list[nn.Module] = []
        for i in range(layers):
            parts += [nn.Conv2d(1 if i == 0 else width, width, 3, padding=1), nn.SiLU()]
        parts.append(nn.Conv2d(width, 1, 1))
        self.net = nn.Sequential(*parts)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * 2 - 1)

    @torch.no_grad()
    def keep(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W) slices -> (N, H, W) bool: the pixels kept, holes inside the kept region filled."""
        from scipy import ndimage

        x = torch.from_numpy(np.asarray(images, dtype=np.float32))[:, None]
        p = next(self.parameters())
        with torch.autocast(p.device.type, enabled=False):  # 5,000 weights: fp32 costs nothing, and a pixel's fate
            logits = self(x.to(p.device, torch.float32))  # must not hang on bf16 rounding
        kept = (logits[:, 0] > 0).cpu().numpy()
        return np.stack([ndimage.binary_fill_holes(k) for k in kept]) if len(kept) else kept

    def trim(self, images: np.ndarray) -> np.ndarray:
        """The slices with the pixels the head calls background set to 0 (a new float32 array)."""
        images = np.asarray(images, dtype=np.float32)
        return images * self.keep(images)

    def save(self, path: str | Path) -> None:
        """fp16 safetensors, written to a temporary file and renamed."""
        from safetensors.torch import save_file

        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tensors = {k: v.detach().half().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "width": str(self.width), "layers": str(self.layers)})
        tmp.chmod(0o644)
        tmp.replace(path)


def load_brain_outline(path: str | Path) -> BrainOutline:
    """The head in `path`; BrainOutlineError (one line) when it is not one this reads."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is no dict)
        width, layers = int(meta["width"]), int(meta["layers"])
    except Exception as exc:  # safetensors, the metadata and int() each raise their own kinds
        raise BrainOutlineError(f"brain outline {path} is not readable: {str(exc).splitlines()[0][:120]}") from None
    if meta.get("format") != FORMAT:
        raise BrainOutlineError(f"brain outline {path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    head = BrainOutline(width, layers)
    expected = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != expected:
        raise BrainOutlineError(f"brain outline {path}: its tensors do not make a head of width {width} and "
                                f"{layers} layers")
    if not all(torch.isfinite(v.float()).all() for v in tensors.values()):
        raise BrainOutlineError(f"brain outline {path} holds non-finite weights")
    head.load_state_dict({k: v.float() for k, v in tensors.items()})
    return head.eval()


def outline_contrasts_of(sampling: dict) -> tuple[str, ...]:
    """The contrasts a route trims (its dallebrain.json "sampling" section's brain_outline), () where none."""
    record = sampling.get(INFO_KEY)
    if record is None:
        return ()
    contrasts = record.get("contrasts") if isinstance(record, dict) else None
    if not isinstance(contrasts, list) or not all(isinstance(c, str) for c in contrasts):
        raise BrainOutlineError(f"dallebrain.json: sampling.{INFO_KEY}.contrasts must be a list of contrast names, "
                                f"got {contrasts!r}")
    return tuple(contrasts)


def brain_outline_of(folder: str | Path | None, contrasts: tuple[str, ...]) -> BrainOutline | None:
    """The model folder's head (vae/FILENAME) where its record trims some contrast, else None."""
    if folder is None or not contrasts:
        return None
    path = Path(folder) / "vae" / FILENAME
    if not path.is_file():
        raise BrainOutlineError(f"incomplete model folder {folder}: dallebrain.json trims the brain outline of "
                                f"{', '.join(contrasts)}, but vae/{FILENAME} is missing")
    return load_brain_outline(path)


def loss_band(decoded: torch.Tensor) -> torch.Tensor:
    """1 where the head's decision matters: within BAND_PX of a pixel decoded above NEAR_ZERO."""
    k = 2 * BAND_PX + 1
    return torch.nn.functional.max_pool2d((decoded > NEAR_ZERO).float(), k, 1, BAND_PX)


def fit_brain_outline(decoded: np.ndarray, real: np.ndarray, steps: int = 3000, width: int = 16, layers: int = 3,
                      batch_size: int = 32, crop: int = 64, learning_rate: float = 3e-3, seed: int = 0,
                      log=print) -> BrainOutline:
    """A head trained to tell real[i] > 0 from decoded[i] (both (N, H, W) in [0, 1]): binary cross-entropy on the
    loss band, random crop x crop windows (the outline is local: 7x7 pixels of context), AdamW, a warm-up then a
    cosine rate."""
    import torch.nn.functional as F

    decoded_t = torch.from_numpy(np.asarray(decoded, dtype=np.float32))
    brain_t = torch.from_numpy(np.asarray(real) > 0)
    if decoded_t.shape != brain_t.shape or decoded_t.ndim != 3 or len(decoded_t) < 2:
        raise ValueError(f"fit_brain_outline needs two (N, H, W) stacks of N >= 2 alike, got {tuple(decoded_t.shape)} "
                         f"and {tuple(brain_t.shape)}")
    side = min(crop, decoded_t.shape[1], decoded_t.shape[2])
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = BrainOutline(width, layers)
    opt = torch.optim.AdamW(head.parameters(), learning_rate, weight_decay=0.0)
    warmup = max(1, steps // 20)  # then a cosine decay to 0 (OneCycleLR divides by zero on a few steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min((i + 1) / warmup, 0.5 * (1 + np.cos(np.pi * min(
        i / steps, 1.0)))))
    for step in range(steps):
        rows = torch.randint(len(decoded_t), (batch_size,), generator=g)
        oy = int(torch.randint(decoded_t.shape[1] - side + 1, (1,), generator=g))
        ox = int(torch.randint(decoded_t.shape[2] - side + 1, (1,), generator=g))
        x = decoded_t[rows, None, oy:oy + side, ox:ox + side]
        y = brain_t[rows, None, oy:oy + side, ox:ox + side].float()
        w = loss_band(x)
        loss = (F.binary_cross_entropy_with_logits(head(x), y, reduction="none") * w).sum() / w.sum().clamp_min(1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log is not None and (step % 500 == 0 or step == steps - 1):
            log(f"brain outline step {step}: loss {loss.item():.4f}")
    return head.eval()


def outline_errors(head: BrainOutline, decoded: np.ndarray, real: np.ndarray) -> dict:
    """Per slice means over a set: halo pixels (decoded > 0.05 outside the real brain), the share of them removed,
    and the real brain pixels the head cut."""
    decoded = np.asarray(decoded, dtype=np.float32)
    brain = np.asarray(real) > 0
    kept = head.keep(decoded)
    halo = (decoded > 0.05) & ~brain
    n = max(len(decoded), 1)
    return {"halo_px": float(halo.sum() / n),
            "halo_removed": float((halo & ~kept).sum() / max(halo.sum(), 1)),
            "brain_px_cut": float((brain & (decoded > 0.05) & ~kept).sum() / n)}


def record(contrasts: list[str], measured: dict) -> dict:
    """The dallebrain.json entry of a route's sampling section."""
    return {"contrasts": sorted(contrasts), "file": f"vae/{FILENAME}", "measured": measured}


def drop_brain_outline(model: str | Path) -> None:
    """Remove the routes' brain-outline records from a model folder's dallebrain.json and its head file: for a
    model whose VAE was replaced (the head learned the old decoder's halo; rerun recipes/brain_outline.py)."""
    from dallebrain.data.io import write_json_atomic

    path = Path(model) / "dallebrain.json"
    if path.is_file():
        info = json.loads(path.read_text())
        sections = [info.get("sampling"), (info.get("unclip") or {}).get("sampling")]
        if any(isinstance(s, dict) and INFO_KEY in s for s in sections):
            for s in sections:
                if isinstance(s, dict):
                    s.pop(INFO_KEY, None)
            write_json_atomic(path, info)
    (Path(model) / "vae" / FILENAME).unlink(missing_ok=True)
