"""The model of normal brains at each position: per-pixel intensity and per-position VAE latent statistics of
healthy slices, pooled over neighbouring levels, and the detection thresholds chosen on healthy validation slices.

A position is (contrast, plane, level); slices of one position from different healthy subjects are what "normal
here" means. Levels within `pool_mm` of each other are pooled, so a cohort of a few subjects still gives each
position tens of samples. Saved as safetensors arrays plus a JSON record (no pickle), written as one folder
through `atomic_dir`, so a killed fit leaves the previous model or none.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dallebrain.anomaly.attributes import SliceAttributes

STD_FLOOR = {"pixel": 0.02, "latent": 0.05}  # a position where every healthy slice agrees is not infinitely sure
POOL_MM = 4.5  # levels this close are one position: three 3 mm slice steps
FORMAT_VERSION = 1


def position_key(attributes: SliceAttributes) -> tuple[str, str, float]:
    return attributes.modality, attributes.orientation, round(float(attributes.slice_mm), 1)


def _key_text(key: tuple[str, str, float]) -> str:
    return f"{key[0]}/{key[1]}/{key[2]:+.1f}"


@dataclass
class PositionStats:
    """Running sums of one position's healthy slices (pixels and latents)."""

    count: int = 0
    sums: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, name: str, values: np.ndarray) -> None:
        values = values.astype(np.float64)
        s, q = self.sums.get(f"{name}_sum", 0.0), self.sums.get(f"{name}_sq", 0.0)
        self.sums[f"{name}_sum"], self.sums[f"{name}_sq"] = s + values, q + values ** 2


@dataclass
class NormalModel:
    """Mean and spread of healthy slices per position, and thresholds per method and contrast."""

    pool_mm: float = POOL_MM
    means: dict[str, np.ndarray] = field(default_factory=dict)  # "<key>/pixel_mean" etc.
    counts: dict[str, int] = field(default_factory=dict)  # key text -> healthy slices pooled there
    thresholds: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # method -> contrast -> ...
    settings: dict = field(default_factory=dict)  # how it was made: data, subjects, model hash, methods

    def stats(self, attributes: SliceAttributes, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of `name` ("pixel", "latent", or a method's "residual:...") at the slice's position: the
        nearest level of its contrast and plane that has it, refused in one line when none lies within pool_mm."""
        modality, orientation, level = position_key(attributes)
        candidates = [(abs(lv - level), k) for k, (m, o, lv) in self._keys().items()
                      if m == modality and o == orientation and f"{k}/{name}_mean" in self.means]
        if not candidates or min(candidates)[0] > self.pool_mm:
            what = "slices" if name in ("pixel", "latent") else f"reconstructions ({name})"
            raise ValueError(f"the normal model has no healthy {modality} {orientation} {what} within "
                             f"{self.pool_mm} mm of {level:+.1f} mm: fit it on data that covers this position")
        key = min(candidates)[1]
        return self.means[f"{key}/{name}_mean"], self.means[f"{key}/{name}_std"]

    def _keys(self) -> dict[str, tuple[str, str, float]]:
        out = {}
        for k in self.counts:
            modality, orientation, level = k.split("/")
            out[k] = (modality, orientation, float(level))
        return out

    def save(self, folder: str | Path) -> Path:
        from safetensors.numpy import save_file

        from dallebrain.data.io import atomic_dir

        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            save_file({k: np.ascontiguousarray(v, dtype=np.float16) for k, v in self.means.items()},
                      str(tmp / "positions.safetensors"))
            record = {"format_version": FORMAT_VERSION, "pool_mm": self.pool_mm, "counts": self.counts,
                      "thresholds": self.thresholds, "settings": self.settings}
            (tmp / "normal_model.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> NormalModel:
        from safetensors.numpy import load_file

        folder = Path(folder)
        record_path, arrays_path = folder / "normal_model.json", folder / "positions.safetensors"
        if not record_path.is_file() or not arrays_path.is_file():
            raise ValueError(f"not a normal model folder (normal_model.json + positions.safetensors): {folder}")
        try:
            record = json.loads(record_path.read_text())
            arrays = load_file(str(arrays_path))
        except Exception as exc:  # a damaged file of any kind: one line naming it
            raise ValueError(f"cannot read the normal model in {folder}: {str(exc).splitlines()[0]}") from exc
        if not isinstance(record, dict):
            raise ValueError(f"cannot read the normal model in {folder}: normal_model.json is not a JSON object")
        if record.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"normal model {folder} has format {record.get('format_version')}, this version reads "
                             f"{FORMAT_VERSION}: fit it again")
        try:
            return cls(float(record["pool_mm"]), {k: v.astype(np.float32) for k, v in arrays.items()},
                       {k: int(v) for k, v in record["counts"].items()}, record["thresholds"], record["settings"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a hand-edited or truncated record
            raise ValueError(f"normal model {folder}: normal_model.json lacks or garbles {exc}: fit it again") from None


class NormalModelBuilder:
    """Accumulates healthy slices (pixels and latents) per position; `build` pools neighbouring levels."""

    def __init__(self, pool_mm: float = POOL_MM):
        if pool_mm < 0:
            raise ValueError(f"pool_mm must be non-negative, got {pool_mm}")
        self.pool_mm = pool_mm
        self.positions: dict[tuple[str, str, float], PositionStats] = defaultdict(PositionStats)

    def add(self, attributes: SliceAttributes, arrays: dict[str, np.ndarray]) -> None:
        """One healthy slice's arrays by name ("pixel" and "latent"; or a method's residual)."""
        stats = self.positions[position_key(attributes)]
        stats.count += 1
        for name, values in arrays.items():
            stats.add(name, values)

    def build(self, settings: dict | None = None, into: NormalModel | None = None) -> NormalModel:
        """Pooled means and spreads; `into` an existing model adds these arrays to it (a method's residual
        statistics beside the pixels and latents)."""
        if not self.positions:
            raise ValueError("no healthy slice to fit the normal model on")
        model = into or NormalModel(self.pool_mm, settings=dict(settings or {}))
        for key in self.positions:
            pooled = [s for k, s in self.positions.items()
                      if k[:2] == key[:2] and abs(k[2] - key[2]) <= self.pool_mm + 1e-6]
            n = sum(s.count for s in pooled)
            text = _key_text(key)
            model.counts.setdefault(text, n)
            names = {k[: -len("_sum")] for k in self.positions[key].sums if k.endswith("_sum")}
            for name in sorted(names):
                total = sum(s.sums[f"{name}_sum"] for s in pooled)
                squares = sum(s.sums[f"{name}_sq"] for s in pooled)
                mean = total / n
                std = np.sqrt(np.maximum(squares / n - mean ** 2, 0.0))
                model.means[f"{text}/{name}_mean"] = mean.astype(np.float32)
                floor = STD_FLOOR.get(name, STD_FLOOR["pixel"])
                model.means[f"{text}/{name}_std"] = np.maximum(std, floor).astype(np.float32)
        return model

