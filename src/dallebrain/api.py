"""Python API: `dallebrain.load_pipeline(...)` returns a callable pipeline; `generate_to_folder` is what
the CLI runs."""

from __future__ import annotations

from pathlib import Path

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

        apply_lora(pipe.unet, lora, lora_scale)
        pipe.lora = {"path": str(lora), "scale": lora_scale}
    return pipe


def generate_to_folder(pipe, prompt: str, out: str | Path, n: int = 1, seed: int = 0, steps: int = 20,
                       guidance: float = 4.0, sampler: str = "dpm", png16: bool = False,
                       overwrite: bool = False, model_path: str | None = None) -> list[dict]:
    """Generate and write PNG + NIfTI + JSON per image; returns the written paths per image."""
    from dallebrain import __version__
    from dallebrain.pipelines.output import grid_of, output_paths, save_outputs

    out = Path(out)
    stems = [f"seed-{seed + i:06d}" for i in range(n)]
    if not overwrite:  # refuse before any work, so nothing already written is replaced
        for stem in stems:
            for path in output_paths(out, stem).values():
                if path.exists():
                    raise FileExistsError(f"{path} exists: choose another --out or pass --overwrite")
    result = pipe(prompt, n=n, seed=seed, steps=steps, guidance=guidance, sampler=sampler)
    grid = grid_of(pipe.info, result.images.shape[-1])
    written = []
    for i, (image, image_seed) in enumerate(zip(result.images, result.seeds, strict=True)):
        sidecar = {**result.settings, "seed": image_seed, "index": i, "n": n,
                   "lora": getattr(pipe, "lora", None), "model": model_path or str(pipe.folder),
                   "dallebrain_version": __version__, "warnings": result.warnings,
                   "synthetic": True, "note": "synthetic image; not from any real person"}
        written.append(save_outputs(out, stems[i], image, sidecar, grid, prompt, png16, overwrite=True))
    return written
