"""Python API: `dallebrain.load_pipeline(...)` returns a callable pipeline; `generate_to_folder` is what
the CLI runs."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from dallebrain.pipelines import defaults as D
from dallebrain.vocab import VARIATION_PREFIX

SHIPPED_MODEL = Path(__file__).parent / "weights" / "default"
# A slice to vary is checked against this from its header, before its pixels are decoded: a 435 KB gzip NIfTI
# of 20000 x 20000 decoded to 5.8 GB. Real slices are at most 1024 px (`data prepare --size`); twice that leaves
# room for native-resolution scans.
MAX_SLICE_SIDE = 2048


def default_model() -> Path:
    """The model that ships inside the package (trained on the built-in simulated cohort)."""
    return SHIPPED_MODEL


def load_pipeline(model: str | Path | None = None, route: str = "ldm", device: str | None = None,
                  lora: str | Path | None = None, lora_scale: float = 1.0, precision: str = D.PRECISION):
    """A pipeline from a model folder (default: the shipped model).

    Args:
        model: pipeline folder (made by `dallebrain train ldm`, plus prior/decoder for unCLIP).
        route: "ldm" (text -> latent diffusion) or "unclip" (text -> prior -> image embedding -> decoder).
        device: "cpu", "cuda", ... (default: cuda if available).
        lora: a LoRA adapter folder (`dallebrain train lora`) applied to the UNet at `lora_scale`.
        precision: "auto" (bf16 where the hardware computes it natively), "bf16" or "fp32": what the UNet and
            VAE decoder compute in (pipelines/precision.py); each sidecar records the one used.

    Example:
        >>> pipe = load_pipeline()
        >>> result = pipe("axial T2-weighted slice of a healthy 70-year-old woman", n=2, seed=1)
        >>> result.images.shape
        (2, 128, 128)
    """
    from dallebrain.pipelines.folder import LDM_COMPONENTS, UNCLIP_COMPONENTS, check_model_folder
    from dallebrain.pipelines.precision import check_precision

    # Every refusal that needs no weights comes before torch and diffusers are imported (~8 s): a mistyped
    # --model or --lora answers at once.
    check_precision(precision)
    if route not in ("ldm", "unclip"):
        raise ValueError(f"unknown route {route!r}: choose ldm or unclip")
    folder = check_model_folder(Path(model) if model is not None else default_model(),
                                LDM_COMPONENTS if route == "ldm" else UNCLIP_COMPONENTS)
    if lora is not None:
        from dallebrain.pipelines.lora import find_lora_file

        find_lora_file(lora)
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device)
    if route == "ldm":
        from dallebrain.pipelines.text2mri import Text2MRIPipeline

        pipe = Text2MRIPipeline.from_pretrained(folder, device=device)
    else:  # "unclip": the route was checked above
        from dallebrain.pipelines.unclip import UnCLIPPipeline

        pipe = UnCLIPPipeline.from_pretrained(folder, device=device)
    if lora is not None:
        from dallebrain.pipelines.lora import apply_lora

        apply_lora(pipe.unet, lora, lora_scale, text_encoder=getattr(pipe, "text_encoder", None))
        pipe.lora = {"path": str(lora), "scale": lora_scale}
    pipe.precision = precision
    return pipe


def image_stems(seed: int, n: int, prefix: str = "seed") -> list[str]:
    """File names (without suffix) of a request's images: image i is `{prefix}-{seed + i:06d}`."""
    from dallebrain.pipelines import output
    from dallebrain.pipelines.request import check_seed

    return output.image_stems([check_seed(seed, n) + i for i in range(n)], prefix)


def check_output(out: str | Path, seed: int, n: int, overwrite: bool = False, prefix: str = "seed") -> list[str]:
    """Everything about where a request's files go, checked before any model is loaded: the seeds, the folder
    (not a file, writable) and, without overwrite, no file of these seeds already there. Returns the stems."""
    from dallebrain.pipelines.output import check_output_folder

    stems = image_stems(seed, n, prefix)
    check_output_folder(out, stems, overwrite)
    return stems


def _write_chunks(pipe, chunks, out: Path, seed: int, stems: list[str], placement_prompt: str, png16: bool,
                  model_path: str | None, extra: dict | None = None) -> list[dict]:
    """Write each pass's images as it finishes: a request of any n holds one pass in memory, and a killed run
    keeps the images finished so far."""
    from dallebrain.pipelines.output import write_result

    written = []
    for result in chunks:
        written += write_result(result, out, seed, len(stems), png16, placement_prompt, model_path, extra)
    return written


def generate_to_folder(pipe, prompt: str, out: str | Path, n: int = 1, seed: int = 0, steps: int = D.STEPS,
                       guidance: float = D.GUIDANCE, sampler: str = D.SAMPLER, png16: bool = False,
                       overwrite: bool = False, model_path: str | None = None, **route_options) -> list[dict]:
    """Generate and write PNG + NIfTI + JSON per image, each pass of images as it finishes; returns the written
    paths per image. route_options go to the pipeline (prior_steps, prior_guidance for unCLIP). A prompt the
    healthy-brain MRI model cannot serve (another modality or body part, a pathology, a contradiction) is a
    one-line ValueError before anything is generated; what it will not follow is in each sidecar's warnings."""
    from dallebrain.pipelines.prompt_check import require_servable

    require_servable(prompt)
    out = Path(out)
    stems = check_output(out, seed, n, overwrite)
    chunks = pipe.generate_chunks(prompt, n=n, seed=seed, steps=steps, guidance=guidance, sampler=sampler,
                                  **route_options)
    return _write_chunks(pipe, chunks, out, seed, stems, prompt, png16, model_path)


def check_device(device) -> None:
    """A device torch knows and this machine has, or a one-line ValueError ("tpu", "gpu", or cuda without a GPU
    reached torch's own error, or a pipeline whose every call failed)."""
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device: cpu, cuda, cuda:1, ...") from None
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device takes cpu or cuda[:N], got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device}: this machine has no CUDA GPU")


def load_slice(path: str | Path, size: int):
    """A slice to vary: PNG (8/16-bit) or a single-slice NIfTI, as (size, size) in [0, 1]. Its dimensions are
    checked from the header (at most MAX_SLICE_SIDE a side, one 2-D slice) before any pixel is decoded."""
    import numpy as np

    path = check_slice_file(path)
    data = _read_nifti_slice(path) if _is_nifti(path) else _read_png_slice(path)
    if data.shape != (size, size):
        from skimage.transform import resize

        data = resize(data, (size, size), order=1, anti_aliasing=True, preserve_range=True)
    return data.astype(np.float32)


def check_slice_file(path: str | Path) -> Path:
    """A slice file's existence and dimensions, from its header alone: cheap enough to run before a model loads."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image not found: {path}")
    if _is_nifti(path):
        _open_nifti(path)
    else:
        with _open_png(path):
            pass
    return path


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def _check_slice_shape(name: str, shape: tuple[int, ...]) -> None:
    sides = [int(s) for s in shape if s != 1]
    if len(sides) > 2:
        raise ValueError(f"{name} holds a {len(sides)}-D image {tuple(shape)}: give one 2-D slice")
    if any(s > MAX_SLICE_SIDE for s in sides):
        raise ValueError(f"{name} is {' x '.join(map(str, shape))} pixels: at most {MAX_SLICE_SIDE} a side")


def _open_nifti(path: Path):
    """The image with its header checked; nibabel reads the header only, the pixels stay on disk until asked for."""
    import nibabel as nib

    try:
        img = nib.load(path)
    except Exception as exc:
        raise ValueError(f"cannot read NIfTI {path.name}: {str(exc).splitlines()[0]}") from exc
    _check_slice_shape(path.name, img.shape)
    return img


def _read_nifti_slice(path: Path):
    import numpy as np

    img = _open_nifti(path)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:
        raise ValueError(f"cannot read NIfTI {path.name}: {str(exc).splitlines()[0]}") from exc
    data = np.squeeze(data)
    if data.ndim != 2:
        raise ValueError(f"{path.name} holds a {data.ndim}-D image: give one 2-D slice")
    positive = data[data > 0]
    if not np.isfinite(data).all() or positive.size == 0:
        raise ValueError(f"{path.name} has no usable signal (empty or NaN)")
    return np.clip(data / np.percentile(positive, 99.5), 0, 1)


@contextlib.contextmanager
def _open_png(path: Path):
    """The opened image with its size checked; PIL reads the size lazily, before decoding any pixel. PIL's own
    decompression-bomb guard (a warning past 89 M pixels, an error past twice that) becomes a ValueError too."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"{path.name} is too large: {str(exc).splitlines()[0]}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read image {path.name}: not a PNG/NIfTI") from exc
    with im:
        _check_slice_shape(path.name, (im.height, im.width))
        yield im


def _read_png_slice(path: Path):
    import numpy as np

    with _open_png(path) as im:
        try:
            # 16-bit grey opens as I;16 (or I): its values are the pixels, on 0..65535. Every other mode goes through
            # PIL's grey conversion: a palette's colours, not its indices; grey+alpha without the alpha; 1-bit as 0/255
            sixteen = im.mode.startswith("I;16") or im.mode == "I"
            arr = np.asarray(im if sixteen else im.convert("L"))
        except (OSError, SyntaxError) as exc:
            raise ValueError(f"cannot read image {path.name}: {str(exc).splitlines()[0]}") from exc
    if not arr.any():
        raise ValueError(f"{path.name} has no usable signal (every pixel black)")
    return np.clip(arr.astype(np.float32) / (65535.0 if sixteen else 255.0), 0, 1)


def variations_to_folder(pipe, image_path: str | Path, out: str | Path, n: int = 4, seed: int = 0,
                         steps: int = D.STEPS, guidance: float = D.GUIDANCE, sampler: str = D.SAMPLER,
                         png16: bool = False, overwrite: bool = False, model_path: str | None = None) -> list[dict]:
    """unCLIP variations of a slice; the NIfTI carries pixel spacing only (no MNI position is invented)."""
    out = Path(out)
    stems = check_output(out, seed, n, overwrite, VARIATION_PREFIX)
    size = int(pipe.unet.config.sample_size) * int(2 ** (len(pipe.vae.config.block_out_channels) - 1))
    image = load_slice(image_path, size)
    chunks = pipe.variation_chunks(image, n=n, seed=seed, steps=steps, guidance=guidance, sampler=sampler)
    # provenance by name and content hash: the path may be a server's upload folder (the web page's variations)
    source = {"source_image": Path(image_path).name,
              "source_image_sha256": hashlib.sha256(Path(image_path).read_bytes()).hexdigest()}
    return _write_chunks(pipe, chunks, out, seed, stems, "", png16, model_path, source)
