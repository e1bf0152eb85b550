"""Writing a pipeline folder: the stock diffusers StableDiffusionPipeline layout plus our extras
(clip/, prior/, decoder/, dallebrain.json). Each component is written to a temporary folder and renamed
(`atomic_dir`), so a killed export leaves the previous component or none, never half of one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dallebrain.pipelines.leak_table import FILENAME as LEAK_TABLE

MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
    "text_encoder": ["transformers", "BertModel"],
    "tokenizer": ["transformers", "BertTokenizerFast"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


MODEL_INFO = "dallebrain.json"
# the files beside the components: the index, our record, the per-prompt start means (pipelines/leak_table.py)
FOLDER_FILES = ("model_index.json", MODEL_INFO, LEAK_TABLE)


def write_component(folder: Path, name: str, writer) -> Path:
    """writer(tmp_folder) fills a temporary folder that then replaces folder/name."""
    from dallebrain.data.io import atomic_dir

    with atomic_dir(Path(folder) / name) as tmp:
        writer(tmp)
    return Path(folder) / name


def update_model_info(folder: Path, info: dict) -> dict:
    """Merge `info` into the pipeline folder's dallebrain.json (what its parts were trained on) and return the
    result: the one writer of that file, for the LDM export and the unCLIP stages attaching themselves.

    Merge rule: key by key, recursing into nested objects (so "unclip": {"prior": ...} and "unclip":
    {"decoder": ...} both stay); otherwise the newer value replaces the recorded one, except that None never
    erases a recorded value (a stage that does not know the grid leaves the recorded grid)."""
    from filelock import FileLock

    from dallebrain.data.io import write_json_atomic

    path = Path(folder) / MODEL_INFO
    path.parent.mkdir(parents=True, exist_ok=True)
    # the recipe's two lanes may finish at once; without the lock one read-merge-write could drop the other's keys
    with FileLock(path.with_name(f".{MODEL_INFO}.lock")):
        merged = _merge_info(json.loads(path.read_text()) if path.exists() else {}, info)
        write_json_atomic(path, merged)
    return merged


def _merge_info(recorded: dict, new: dict) -> dict:
    merged = dict(recorded)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_info(merged[key], value)
        elif value is not None or key not in merged:
            merged[key] = value
    return merged


def copy_component(folder: Path, name: str, source: Path) -> Path:
    """Copy a stage's save_pretrained folder (config and safetensors only) into the pipeline."""
    def writer(tmp: Path) -> None:
        for path in Path(source).iterdir():
            if path.is_file() and path.suffix in (".json", ".safetensors", ".txt"):
                shutil.copy2(path, tmp / path.name)
    return write_component(folder, name, writer)


def write_ldm_pipeline(folder: Path, unet, vae, text_encoder, tokenizer, clip_dir: Path | None = None,
                       info: dict | None = None, compact_text_encoder: bool = False, leak_table=None,
                       scheduler_config: dict | None = None) -> Path:
    """The text-to-image folder: loads with our Text2MRIPipeline and with stock StableDiffusionPipeline
    (after `dallebrain export` when the text encoder is compact). leak_table: the per-prompt start means
    (pipelines/leak_table.py), or None (a table left from an earlier export is removed: it belongs to other
    training data). scheduler_config: the noise schedule the UNet was trained with (models/unet.py
    noise_scheduler_config; default: epsilon prediction), written as the folder's DPM-Solver++ scheduler so our
    pipeline and a stock one sample with the UNet's own prediction type."""
    import diffusers

    from dallebrain.data.io import write_json_atomic
    from dallebrain.models.unet import make_scheduler
    from dallebrain.pipelines.text_encoder import save_pipeline_text_encoder

    folder = Path(folder)
    write_component(folder, "unet", lambda t: unet.save_pretrained(t, safe_serialization=True))
    write_component(folder, "vae", lambda t: vae.save_pretrained(t, safe_serialization=True))
    write_component(folder, "text_encoder", lambda t: save_pipeline_text_encoder(text_encoder, t, compact_text_encoder))
    write_component(folder, "tokenizer", lambda t: tokenizer.save_pretrained(t))
    write_component(folder, "scheduler", lambda t: make_scheduler("dpm", scheduler_config).save_pretrained(t))
    if clip_dir is not None:
        copy_component(folder, "clip", clip_dir)
    write_json_atomic(folder / "model_index.json", {**MODEL_INDEX, "_diffusers_version": diffusers.__version__})
    if leak_table is not None:
        leak_table.save(folder / LEAK_TABLE)
    else:
        (folder / LEAK_TABLE).unlink(missing_ok=True)
    update_model_info(folder, info or {})
    return folder


def export_stock_folder(model: Path, out: Path) -> Path:
    """Copy a pipeline folder for a stock diffusers client: weights and configs only (no checkpoints or
    caches), the text encoder materialised in full when it is stored compact."""
    from dallebrain.data.io import atomic_dir
    from dallebrain.pipelines.folder import check_model_folder
    from dallebrain.pipelines.text_encoder import load_pipeline_text_encoder

    model = check_model_folder(model)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {out} exists and is not empty")
    # built in a temporary folder renamed onto --out at the end: a failure half-way (a text encoder that cannot be
    # materialised, a full disk) leaves --out as it was, so the same command can simply be run again
    with atomic_dir(out) as tmp:
        for sub in sorted(p for p in model.iterdir() if p.is_dir()):
            if sub.name in ("checkpoints", "cache", "samples") or sub.name.startswith("."):
                continue
            if sub.name == "text_encoder":
                encoder = load_pipeline_text_encoder(sub)
                write_component(tmp, "text_encoder", lambda t, e=encoder: e.save_pretrained(t, safe_serialization=True))
            elif sub.name == "unet" and _takes_attributes(sub):
                write_component(tmp, "unet", lambda t, s=sub: _stock_unet(s).save_pretrained(t,
                                                                                              safe_serialization=True))
            else:
                copy_component(tmp, sub.name, sub)
        for name in FOLDER_FILES:
            if (model / name).exists():
                shutil.copy2(model / name, tmp / name)
    return out


def _takes_attributes(unet_folder: Path) -> bool:
    config = json.loads((unet_folder / "config.json").read_text())
    return config.get("class_embed_type") == "projection"


def _stock_unet(unet_folder: Path):
    """The attribute-conditioned UNet with "every attribute unstated" folded in: what a stock client, which
    passes text only, can run (models/conditioning.fold_unstated)."""
    from diffusers import UNet2DConditionModel

    from dallebrain.models.conditioning import fold_unstated

    unet = UNet2DConditionModel.from_pretrained(unet_folder, use_safetensors=True)
    fold_unstated(unet)
    return unet


RELEASE_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "clip", "prior", "decoder",
                 "unet_distilled")  # the last: a guidance-distilled student for the low-noise steps, where there is one


def release_folder(model: Path, out: Path, fp16: bool = True) -> Path:
    """The folder to ship: components only (no checkpoints, caches or logs), float weights stored as fp16
    (loaders upcast them to the model's float32), a sha256 list of the files. Built in a temporary folder that
    then takes the place of `out` (data.io.atomic_dir): a run killed half-way leaves the earlier release whole."""
    from dallebrain.data.io import atomic_dir

    with atomic_dir(out) as tmp:
        _write_release(Path(model), tmp, fp16)
    return Path(out)


def _write_release(model: Path, out: Path, fp16: bool) -> None:
    import hashlib

    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from dallebrain.data.io import write_json_atomic

    for name in RELEASE_PARTS:
        if (model / name).is_dir():
            copy_component(out, name, model / name)
    for name in FOLDER_FILES:
        if (model / name).exists():
            shutil.copy2(model / name, out / name)
    for path in out.rglob("config.json"):  # diffusers records where a component was loaded from: a local path
        config = json.loads(path.read_text())
        if config.pop("_name_or_path", None) is not None:
            write_json_atomic(path, config)
    for path in out.rglob("train_config.json"):  # a warm start given as an absolute path: kept by its folder's name
        config = json.loads(path.read_text())
        start = config.get("init_from")
        if isinstance(start, str) and Path(start).is_absolute():
            write_json_atomic(path, {**config, "init_from": Path(start).name})
    if fp16:
        for path in out.rglob("*.safetensors"):
            tensors = load_file(path)
            with safe_open(path, "pt") as f:  # the file's metadata stays (the leak table's group keys live there)
                metadata = f.metadata()
            if all(v.dtype == torch.float16 or not v.is_floating_point() for v in tensors.values()):
                continue  # already fp16: its bytes kept (a re-save may reorder the metadata; git would store it again)
            half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
            save_file(half, path, metadata=metadata)
    sums = {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}
    write_json_atomic(out / "SHA256SUMS.json", sums)
