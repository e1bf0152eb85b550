"""Python API: `dallebrain.load_pipeline(...)` returns a callable pipeline; `generate_to_folder` is what
the CLI runs."""

from __future__ import annotations

from pathlib import Path

from dallebrain.pipelines import defaults as D

SHIPPED_MODEL = Path(__file__).parent / "weights" / "default"


def default_model() -> Path:
    """The model that ships inside the package (trained on the built-in simulated cohort)."""
    return SHIPPED_MODEL


def load_pipeline(model: str | Path | None = None, route: str = "ldm", device: str | None = None,
                  lora: str | Path | None = None, lora_scale: float = 1.0):
    """A pipeline from a model folder (default: the shipped model).

    Args:
        model: pipeline folder (made by `dallebrain train ldm`, plus prior/decoder for unCLIP).
        route: "ldm" (text -> latent diffusion) or "unclip" (text -> prior -> image embedding -> decoder).
        device: "cpu", "cuda", ... (default: cuda if available).
        lora: a LoRA adapter folder (`dallebrain train lora`) applied to the UNet at `lora_scale`.

    Example:
        >>> pipe = load_pipeline()
        >>> result = pipe("axial T2-weighted slice of a healthy 70-year-old woman", n=2, seed=1)
        >>> result.images.shape
        (2, 128, 128)
    """
    import torch

    folder = Path(model) if model is not None else default_model()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if route == "ldm":
        from dallebrain.pipelines.text2mri import Text2MRIPipeline

        pipe = Text2MRIPipeline.from_pretrained(folder, device=device)
    elif route == "unclip":
        from dallebrain.pipelines.unclip import UnCLIPPipeline

        pipe = UnCLIPPipeline.from_pretrained(folder, device=device)
    else:
        raise ValueError(f"unknown route {route!r}: choose ldm or unclip")
    if lora is not None:
        from dallebrain.pipelines.lora import apply_lora

        apply_lora(pipe.unet, lora, lora_scale, text_encoder=getattr(pipe, "text_encoder", None))
        pipe.lora = {"path": str(lora), "scale": lora_scale}
    return pipe


def _refuse_existing(out: Path, stems: list[str]) -> None:
    """Refuse before any work, so nothing already written is replaced."""
    from dallebrain.pipelines.output import output_paths

    for stem in stems:
        for path in output_paths(out, stem).values():
            if path.exists():
                raise FileExistsError(f"{path} exists: choose another --out or pass --overwrite")


def _write_result(pipe, result, out: Path, stems: list[str], placement_prompt: str, png16: bool,
                  model_path: str | None, extra: dict | None = None) -> list[dict]:
    from dallebrain import __version__
    from dallebrain.pipelines.output import grid_of, save_outputs

    grid = grid_of(pipe.info, result.images.shape[-1])
    written = []
    for i, (image, image_seed) in enumerate(zip(result.images, result.seeds, strict=True)):
        sidecar = {**result.settings, **(extra or {}), "seed": image_seed, "index": i, "n": len(stems),
                   "lora": getattr(pipe, "lora", None), "model": model_path or str(pipe.folder),
                   "dallebrain_version": __version__, "warnings": result.warnings,
                   "synthetic": True, "note": "synthetic image; not from any real person"}
        written.append(save_outputs(out, stems[i], image, sidecar, grid, placement_prompt, png16, overwrite=True))
    return written


def generate_to_folder(pipe, prompt: str, out: str | Path, n: int = 1, seed: int = 0, steps: int = D.STEPS,
                       guidance: float = D.GUIDANCE, sampler: str = D.SAMPLER, png16: bool = False,
                       overwrite: bool = False, model_path: str | None = None, **route_options) -> list[dict]:
    """Generate and write PNG + NIfTI + JSON per image; returns the written paths per image.
    route_options go to the pipeline (prior_steps, prior_guidance for unCLIP)."""
    out = Path(out)
    stems = [f"seed-{seed + i:06d}" for i in range(n)]
    if not overwrite:
        _refuse_existing(out, stems)
    result = pipe(prompt, n=n, seed=seed, steps=steps, guidance=guidance, sampler=sampler, **route_options)
    return _write_result(pipe, result, out, stems, prompt, png16, model_path)


def load_slice(path: str | Path, size: int):
    """A slice to vary: PNG (8/16-bit) or a single-slice NIfTI, as (size, size) in [0, 1]."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image not found: {path}")
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        try:
            data = np.asarray(nib.load(path).dataobj, dtype=np.float32)
        except Exception as exc:
            raise ValueError(f"cannot read NIfTI {path.name}: {exc}") from exc
        data = np.squeeze(data)
        if data.ndim != 2:
            raise ValueError(f"{path.name} holds a {data.ndim}-D image: give one 2-D slice")
        positive = data[data > 0]
        if not np.isfinite(data).all() or positive.size == 0:
            raise ValueError(f"{path.name} has no usable signal (empty or NaN)")
        data = np.clip(data / np.percentile(positive, 99.5), 0, 1)
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                arr = np.asarray(im)
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"cannot read image {path.name}: not a PNG/NIfTI") from exc
        if arr.ndim == 3:
            arr = arr[..., :3].mean(axis=-1)
        data = arr.astype(np.float32) / (65535.0 if arr.max() > 255 else 255.0)
    if data.shape != (size, size):
        from skimage.transform import resize

        data = resize(data, (size, size), order=1, anti_aliasing=True, preserve_range=True)
    return data.astype(np.float32)


def variations_to_folder(pipe, image_path: str | Path, out: str | Path, n: int = 4, seed: int = 0,
                         steps: int = D.STEPS, guidance: float = D.GUIDANCE, sampler: str = D.SAMPLER,
                         png16: bool = False, overwrite: bool = False, model_path: str | None = None) -> list[dict]:
    """unCLIP variations of a slice; the NIfTI carries pixel spacing only (no MNI position is invented)."""
    out = Path(out)
    stems = [f"variation-seed-{seed + i:06d}" for i in range(n)]
    if not overwrite:
        _refuse_existing(out, stems)
    size = int(pipe.unet.config.sample_size) * int(2 ** (len(pipe.vae.config.block_out_channels) - 1))
    image = load_slice(image_path, size)
    result = pipe.variations(image, n=n, seed=seed, steps=steps, guidance=guidance, sampler=sampler)
    return _write_result(pipe, result, out, stems, "", png16, model_path, {"source_image": str(image_path)})
