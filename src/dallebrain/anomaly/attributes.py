"""What a slice to examine is: plane, level, contrast (and age, sex, field when known), and the prompt of its
healthy version.

The pseudo-healthy reconstruction is conditioned on the slice's own attributes, so the model is asked "what
would a healthy brain look like here, in this contrast", not "any brain". Attributes come from, in order of
trust: the slice's JSON sidecar (what `prepare` and `generate` record), its NIfTI affine (plane and level, never
the contrast), and a user prompt; the first source that knows a field wins.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from dallebrain.data.captions import SliceFacts, build_captions
from dallebrain.data.grid import NORMAL_AXIS
from dallebrain.data.prompts import parse_prompt
from dallebrain.vocab import MODALITIES, ORIENTATIONS

_AXIS_ORIENTATION = {axis: name for name, axis in NORMAL_AXIS.items()}


@dataclass(frozen=True)
class SliceAttributes:
    """Known facts about one slice; None where no source said."""

    orientation: str | None = None
    slice_mm: float | None = None
    modality: str | None = None
    field_strength: float | None = None
    age: float | None = None
    sex: str | None = None

    def merged(self, other: SliceAttributes) -> SliceAttributes:
        """These attributes with the gaps filled from `other` (ours win where both know)."""
        return replace(self, **{f.name: getattr(other, f.name) for f in fields(self)
                                if getattr(self, f.name) is None})

    def missing_for_detection(self) -> list[str]:
        """Fields a detector cannot do without: the position and the contrast of the normal model."""
        return [name for name in ("orientation", "slice_mm", "modality") if getattr(self, name) is None]

    def check(self, where: str) -> SliceAttributes:
        """ValueError in one line when plane, level or contrast is unknown or not one the model knows."""
        missing = self.missing_for_detection()
        if missing:
            raise ValueError(f"{where}: {', '.join(missing)} unknown (no sidecar, affine or --prompt says): pass "
                             "--prompt, e.g. 'axial FLAIR at z = 18 mm'")
        if self.orientation not in ORIENTATIONS or self.modality not in MODALITIES:
            raise ValueError(f"{where}: plane {self.orientation!r} / contrast {self.modality!r} not among "
                             f"{', '.join(ORIENTATIONS)} / {', '.join(MODALITIES)}")
        if not np.isfinite(self.slice_mm) or abs(self.slice_mm) > 150:
            raise ValueError(f"{where}: slice level {self.slice_mm} mm lies outside the head")
        return self

    def healthy_prompt(self) -> str:
        """The canonical caption of a healthy slice with these attributes (what the model was trained on)."""
        facts = SliceFacts(orientation=self.orientation, slice_mm=self.slice_mm, modality=self.modality,
                           field_strength=self.field_strength, age=self.age, sex=self.sex, healthy=True)
        return build_captions(facts, n=1)[0]


def from_prompt(text: str | None) -> SliceAttributes:
    """Attributes a free-text description gives (the generator's own prompt parser)."""
    if not text:
        return SliceAttributes()
    p = parse_prompt(text)
    return SliceAttributes(p.orientation, p.slice_mm, p.modality, p.field_strength, p.age, p.sex)


def from_sidecar(record: dict) -> SliceAttributes:
    """Attributes of a JSON sidecar: a prepared-slice row (orientation, slice_mm, modality, ...) or a `generate`
    sidecar (its parsed_prompt), or a BIDS-like one (MagneticFieldStrength)."""
    flat = {**record.get("parsed_prompt", {}), **{k: v for k, v in record.items() if k != "parsed_prompt"}}
    field = flat.get("field_strength", flat.get("MagneticFieldStrength"))

    def number(value):
        return None if value is None or isinstance(value, bool) else float(value)

    sex = flat.get("sex")
    return SliceAttributes(orientation=flat.get("orientation"), slice_mm=number(flat.get("slice_mm")),
                           modality=flat.get("modality"), field_strength=number(field), age=number(flat.get("age")),
                           sex=sex if sex in ("F", "M") else None)


def from_affine(affine: np.ndarray) -> SliceAttributes:
    """Plane and level of a single-slice NIfTI from its affine: the plane is the world axis its slice normal
    (third voxel axis) runs along, the level that axis's coordinate of the slice. None for an oblique slice
    (the normal more than 10 degrees off every axis) or an affine with no position (spacing only)."""
    affine = np.asarray(affine, dtype=float)
    normal = affine[:3, 2]
    norm = float(np.linalg.norm(normal))
    if norm == 0 or not np.isfinite(affine).all():
        return SliceAttributes()
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) / norm < np.cos(np.radians(10)):
        return SliceAttributes()
    if np.allclose(affine[:3, 3], 0) and np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))):
        return SliceAttributes()  # `generate` writes spacing only when it could not place a slice
    return SliceAttributes(orientation=_AXIS_ORIENTATION[axis], slice_mm=float(affine[axis, 3]))
