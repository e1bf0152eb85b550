"""What several stages share that is not diffusion: the held-out slices they evaluate on, and adding a trained
unCLIP stage (prior, decoder) to a pipeline folder. Stages import from here, never from each other."""

from __future__ import annotations

from pathlib import Path

import torch


def data_provenance(dataset) -> dict:
    """What a model records of its training data (a prepared folder, or a data set with its `root`): the folder's
    name and the sha256 of its metadata table, never the training machine's path (a shipped model must not
    carry it)."""
    import hashlib

    # a folder as it is (a Path has a `.root` too: "/", which named every judge's data "")
    root = Path(dataset if isinstance(dataset, (str, Path)) else dataset.root)
    table = root / "metadata.parquet"
    digest = hashlib.sha256(table.read_bytes()).hexdigest() if table.is_file() else None
    return {"data": root.resolve().name, "metadata_sha256": digest}


def held_out(data: str | Path, seed: int = 0, max_rows: int | None = None):
    """(data set, split name): the val split, else test, else train (a small data set may have no held-out
    subjects)."""
    from dallebrain.data.dataset import SliceDataset

    for split in ("val", "test", "train"):
        try:
            return SliceDataset(data, split, max_rows=max_rows, seed=seed), split
        except ValueError:
            continue
    raise ValueError(f"no slices in {data}")


def _same_weights(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    def tensors(folder: Path) -> dict:
        merged = {}
        for path in sorted(folder.glob("*.safetensors")):
            merged.update(load_file(str(path)))
        return merged

    ta, tb = tensors(a), tensors(b)
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def check_pipeline_parts(pipeline: Path, parts: dict[str, Path]) -> None:
    """Refuse (one line) to add a stage to something that is neither a pipeline (model_index.json or
    dallebrain.json: an LDM's folder, or an unCLIP pipeline being assembled) nor a new or empty folder (a file, a
    VAE's run: the stage would be copied there after all its training), or to a pipeline whose clip/ or vae/
    differ from the ones it was trained on."""
    folder = Path(pipeline)
    marked = any((folder / name).is_file() for name in ("model_index.json", "dallebrain.json"))
    if folder.exists() and not (folder.is_dir() and (marked or not any(folder.iterdir()))):
        raise ValueError(f"--into {pipeline} is not a pipeline folder (no model_index.json or dallebrain.json) nor a "
                         "new one")
    for name, source in parts.items():
        target = Path(pipeline) / name
        if target.is_dir() and any(target.glob("*.safetensors")) and not _same_weights(target, Path(source)):
            raise ValueError(f"{target} holds other weights than --{name} {source}: a prior / decoder only works "
                             f"with the {name} it was trained on (choose another --into)")


def attach_to_pipeline(pipeline: Path, name: str, stage_dir: Path, parts: dict[str, Path], info: dict) -> Path:
    """Copy a stage's folder into pipeline/name, adding the clip/ (and vae/) it needs when absent, and record
    `info` in dallebrain.json: image_size and grid at the top (shared with the LDM), the rest under
    "unclip"/name (see `update_model_info` for how it merges)."""
    from dallebrain.pipelines.export import copy_component, update_model_info

    pipeline = Path(pipeline)
    check_pipeline_parts(pipeline, parts)
    for part, source in parts.items():
        if not (pipeline / part).is_dir():
            copy_component(pipeline, part, source)
    copy_component(pipeline, name, stage_dir)
    shared = {k: info[k] for k in ("image_size", "grid") if k in info}
    own = {k: v for k, v in info.items() if k not in shared}
    update_model_info(pipeline, {**shared, "unclip": {name: own}})
    return pipeline
