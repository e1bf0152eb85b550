"""Latents and text-token states computed once, so the diffusion stages never run the VAE or the text
encoder inside the training loop (measured gain: see BENCHMARKS.md, `benchmarks/bench_training.py`).

Layout of a cache folder: latents.npy (N, C, h, w) float16 for the N slices; text_states.npy
(N * P, 64, 384) float16 (P phrasings per slice, memory-mapped); text_mask.npy; uncond.npy (the empty
prompt, for caption dropout); meta.json (what it was made from: a changed input rebuilds it). The prior and
decoder stages keep their own arrays in the same kind of folder (`cached_arrays`)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


def module_fingerprint(module: torch.nn.Module) -> str:
    """Hash of a module's weights (cheap: a strided sample of every tensor)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().float().cpu().flatten()
        h.update(name.encode())
        h.update(flat[:: max(1, flat.numel() // 64)].numpy().tobytes())
    return h.hexdigest()[:16]


def cache_device() -> torch.device:
    """Where a cache is computed: this process's GPU when there is one, else the CPU. A stage builds its cache
    before accelerate places anything, so without this the VAE and text encoder ran on the CPU even on a GPU
    machine: on a lent H200 the LDM's cache of 54,448 slices and 108,896 captions was not done after 200 s."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _device_of(module: torch.nn.Module) -> torch.device:
    return next((p.device for p in module.parameters()), torch.device("cpu"))


@contextmanager
def on_cache_device(*modules: torch.nn.Module | None):
    """The modules (None skipped) on cache_device() inside the block, each back where it was afterwards, also
    when the block raises; yields the device. Encoders move their inputs to their own device."""
    modules = tuple(m for m in modules if m is not None)
    homes = [_device_of(m) for m in modules]
    target = cache_device()
    try:
        for module in modules:
            module.to(target)
        yield target
    finally:
        for module, home in zip(modules, homes, strict=True):
            module.to(home)
        if target.type == "cuda":
            torch.cuda.empty_cache()


def dataset_meta(dataset) -> dict:
    """What identifies a data set's rows in a cache's meta.json."""
    return {"data": str(dataset.root.resolve()), "rows": len(dataset),
            "first": str(dataset.table.at[0, "image_path"]), "last": str(dataset.table.at[len(dataset) - 1,
                                                                                          "image_path"])}


def cached_folder(folder: Path, meta: dict, fill: Callable[[Path], None]) -> Path:
    """`folder`, made by fill(tmp_folder) unless it was made from the same inputs (`meta`, e.g. data and weight
    fingerprints, kept in its meta.json). Written through `atomic_dir`, so a killed run leaves the old cache
    or none, never half of one."""
    from dallebrain.data.io import atomic_dir

    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not (meta_path.is_file() and json.loads(meta_path.read_text()) == meta):
        with atomic_dir(folder) as tmp:
            fill(tmp)
            (tmp / "meta.json").write_text(json.dumps(meta))
    return folder


def cached_arrays(folder: Path, meta: dict, fill: Callable[[Path], None]) -> dict[str, np.ndarray]:
    """The .npy arrays (memory-mapped) of a `cached_folder`, by file stem."""
    folder = cached_folder(folder, meta, fill)
    return {p.stem: np.load(p, mmap_mode="r") for p in sorted(folder.glob("*.npy"))}


@dataclass
class LatentCache:
    latents: torch.Tensor  # (N, C, h, w) float16
    text_states: np.ndarray  # (N * P, T, D) float16, memory-mapped
    text_mask: np.ndarray  # (N * P, T) bool
    uncond: torch.Tensor  # (T, D) float16
    phrasings: int

    def __len__(self) -> int:
        return self.latents.shape[0]

    def text(self, rows: np.ndarray, phrasing: np.ndarray) -> torch.Tensor:
        index = rows * self.phrasings + phrasing
        order = np.argsort(index)  # memmap reads are fastest in order
        states = np.empty((len(index), *self.text_states.shape[1:]), dtype=np.float16)
        states[order] = self.text_states[index[order]]
        return torch.from_numpy(states)


@torch.no_grad()
def encode_texts(text_encoder, tokenizer, texts: list[str], batch_size: int = 64):
    """Token states (last hidden layer) and masks of texts, as a diffusers pipeline computes them."""
    from dallebrain.models.text import tokenize

    device = next(text_encoder.parameters()).device
    states, masks = [], []
    for start in range(0, len(texts), batch_size):
        tok = tokenize(tokenizer, texts[start:start + batch_size])
        out = text_encoder(tok["input_ids"].to(device), attention_mask=tok["attention_mask"].to(device))
        states.append(out[0].float().cpu())
        masks.append(tok["attention_mask"].bool())
    return torch.cat(states), torch.cat(masks)


def caption_texts(dataset, rows, phrasing) -> list[str]:
    """Caption `phrasing[i]` of row `rows[i]` (the canonical caption is phrasing 0; rows with fewer
    phrasings repeat)."""
    texts = []
    for row, p in zip(rows, phrasing, strict=True):
        options = dataset.captions(int(row))
        texts.append(options[int(p) % len(options)])
    return texts


@torch.no_grad()
def build_latent_cache(dataset, vae, text_encoder, tokenizer, folder: Path, phrasings: int = 2,
                       batch_size: int = 32, progress: bool = True, encode_fn=None, text_fn=None,
                       with_text: bool = True, extra_meta: dict | None = None) -> LatentCache:
    """Encode every slice of `dataset` with the VAE and `phrasings` captions each with the text encoder;
    reuse the folder when it was made from the same data and weights.

    encode_fn(images in [0, 1]) -> scaled latents and text_fn(texts) -> (states, masks) replace the
    defaults (our 1-channel VAE, MiniLM at 64 tokens) for other bases, e.g. a stock Stable Diffusion folder;
    with_text=False caches latents only (a text encoder that trains makes cached states stale)."""
    from tqdm import tqdm

    from dallebrain.models.vae import encode_images

    encode_fn = encode_fn or (lambda images: encode_images(vae, images))
    text_fn = text_fn or (lambda texts: encode_texts(text_encoder, tokenizer, texts))
    meta = {**dataset_meta(dataset), "phrasings": phrasings, "vae": module_fingerprint(vae),
            "text_encoder": module_fingerprint(text_encoder) if with_text else None, **(extra_meta or {})}

    def fill(tmp: Path) -> None:
        with on_cache_device(vae, text_encoder if with_text else None):
            fill_on_device(tmp)

    def fill_on_device(tmp: Path) -> None:
        n = len(dataset)
        device = next(vae.parameters()).device
        latents = []
        for start in tqdm(range(0, n, batch_size), desc="cache latents", disable=not progress):
            images, _ = dataset.batch(range(start, min(n, start + batch_size)))
            latents.append(encode_fn(images.to(device)).half().cpu())
        np.save(tmp / "latents.npy", torch.cat(latents).numpy())
        uncond, _ = text_fn([""])
        np.save(tmp / "uncond.npy", uncond[0].half().cpu().numpy())
        shape = ((n * phrasings) if with_text else 0, *uncond.shape[1:])
        states = np.lib.format.open_memmap(tmp / "text_states.npy", mode="w+", dtype=np.float16, shape=shape)
        masks = np.zeros(shape[:2], dtype=bool)
        if with_text:
            texts = caption_texts(dataset, np.repeat(np.arange(n), phrasings), np.tile(np.arange(phrasings), n))
            for start in tqdm(range(0, len(texts), 256), desc="cache text", disable=not progress):
                s, m = text_fn(texts[start:start + 256])
                states[start:start + len(s)] = s.half().cpu().numpy()
                masks[start:start + len(s)] = m.cpu().numpy()
        states.flush()
        del states
        np.save(tmp / "text_mask.npy", masks)

    return load_latent_cache(cached_folder(folder, meta, fill))


def load_latent_cache(folder: Path) -> LatentCache:
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    return LatentCache(torch.from_numpy(np.load(folder / "latents.npy")),
                       np.load(folder / "text_states.npy", mmap_mode="r"), np.load(folder / "text_mask.npy"),
                       torch.from_numpy(np.load(folder / "uncond.npy")), meta["phrasings"])
