"""Captions for training slices: every slice (128x128, 1.5 mm, MNI152 space) is described by a `SliceFacts`,
and `build_captions` turns it into several natural phrasings. The inverse, reading the same fields back out of
free text, is `dallebrain.data.prompts.parse_prompt`.
"""

from __future__ import annotations

import math
import random
import re
import zlib
from dataclasses import dataclass, field

from dallebrain.data.landmarks import landmark
from dallebrain.vocab import CONTRAST_LONG, CONTRAST_SHORT, MODALITIES, ORIENTATION_AXIS, ORIENTATIONS

__all__ = ["SliceFacts", "build_captions", "landmark", "plain_structure_name", "volume_descriptor"]


@dataclass(frozen=True)
class SliceFacts:
    orientation: str  # "axial" | "coronal" | "sagittal"
    slice_mm: float  # MNI coordinate of the slice plane (RAS+): z axial, y coronal, x sagittal (+x = right)
    modality: str  # "T1w" | "T2w" | "PDw" | "FLAIR"
    field_strength: float | None = None  # tesla; None = unknown, then not mentioned
    age: float | None = None  # years; None = unknown, then "adult", never invented
    sex: str | None = None  # "F" | "M" | None
    structures: tuple[str, ...] = ()  # plain names of the largest labelled structures visible, largest first
    ventricles: str | None = None  # "small" | "large" | None, relative to the cohort's age norm
    brain_volume: str | None = None  # "small" | "large" | None, nWBV relative to the cohort's age norm
    healthy: bool = True
    # Lesion findings in view, e.g. "a 25 mm tumour in the left frontal lobe and surrounding oedema". Left out
    # of repr, the caption seed: a healthy slice keeps the captions it had before lesions existed.
    lesions: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        # Normalise numbers so that SliceFacts(age=30) and SliceFacts(age=30.0) caption identically.
        for name in ("slice_mm", "field_strength", "age"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(value))
        object.__setattr__(self, "structures", tuple(self.structures))
        object.__setattr__(self, "lesions", tuple(self.lesions))
        if self.orientation not in ORIENTATIONS:
            raise ValueError(f"unknown orientation {self.orientation!r}; expected one of {ORIENTATIONS}")
        if self.modality not in MODALITIES:
            raise ValueError(f"unknown modality {self.modality!r}; expected one of {MODALITIES}")
        if not math.isfinite(self.slice_mm):
            raise ValueError(f"slice_mm must be finite, got {self.slice_mm!r}")
        if self.sex not in ("F", "M", None):
            raise ValueError(f"unknown sex {self.sex!r}; expected 'F', 'M' or None")
        for name in ("ventricles", "brain_volume"):
            if getattr(self, name) not in ("small", "large", None):
                raise ValueError(f"{name} must be 'small', 'large' or None, got {getattr(self, name)!r}")


def volume_descriptor(z_score: float | None, threshold: float = 1.0) -> str | None:
    """'small' below -threshold, 'large' above +threshold, None otherwise or for None/NaN."""
    if z_score is None or math.isnan(z_score):
        return None
    if z_score < -threshold:
        return "small"
    if z_score > threshold:
        return "large"
    return None


# Neuromorphometrics labels (side removed) that need other words than the label's own.
_SPECIAL_NAMES: dict[str, str | None] = {
    "Thalamus_Proper": "thalamus",
    "Cerebellum_Exterior": "cerebellar cortex",
    "Cerebellum_White_Matter": "cerebellar white matter",
    "Cerebral_White_Matter": None,  # everywhere, so says nothing about the slice
    "CSF": None,
    "vessel": None,
    "Ventral_DC": "ventral diencephalon",
    "Inf_Lat_Vent": "temporal horn of the lateral ventricle",
    "Brain_Stem": "brainstem",
    "3rd_Ventricle": "third ventricle",
    "4th_Ventricle": "fourth ventricle",
    "Caudate": "caudate nucleus",
    "Lateral_Ventricle": "lateral ventricle",
    "Accumbens_Area": "nucleus accumbens",
    "Pallidum": "globus pallidus",
}


def plain_structure_name(atlas_label: str) -> str | None:
    """Neuromorphometrics atlas label -> plain words without side, or None for labels not worth naming."""
    name = re.sub(r"^(?:Left|Right)[_-]", "", atlas_label.strip())
    if name in _SPECIAL_NAMES:
        return _SPECIAL_NAMES[name]
    if name.startswith("Cerebellar_Vermal_Lobules"):
        return "cerebellar vermis"
    tokens = [t for t in re.split(r"[_\s]+", name) if t]
    # Cortical labels read "<code>_<description>", e.g. "ACgG_anterior_cingulate_gyrus": drop the code.
    if len(tokens) > 1 and re.search(r"[A-Z]", tokens[0]) and tokens[1].islower():
        tokens = tokens[1:]
    if tokens[-2:] == ["medial", "segment"]:
        tokens = ["medial", *tokens[:-2]]
    words = " ".join(tokens).lower()
    words = re.sub(r"\b(?:left|right)\b", "", words).strip()
    return " ".join(words.split()) or None


# --- captions -------------------------------------------------------------------------------------


def _article(word: str) -> str:
    digits = re.match(r"\d+", word)
    if digits:
        n = digits.group()
        vowel = n.startswith("8") or (len(n) in (2, 5) and n.startswith(("11", "18")))
    else:
        vowel = word[:1].lower() in "aeiou"
    return "an" if vowel else "a"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _join_words(items: tuple[str, ...]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


class _Parts:
    """The words a caption may use for one SliceFacts; `rng` picks among synonyms."""

    def __init__(self, facts: SliceFacts, rng: random.Random) -> None:
        self.f = facts
        self.rng = rng
        self.o = facts.orientation
        self.contrast = CONTRAST_LONG[facts.modality]
        self.contrast_short = CONTRAST_SHORT[facts.modality]
        lm = landmark(facts.orientation, facts.slice_mm)
        self.landmark = "in the midsagittal plane" if lm == "midsagittal" else lm
        value = round(facts.slice_mm, 1) + 0.0  # + 0.0 turns -0.0 into 0.0
        self.level = f"{ORIENTATION_AXIS[facts.orientation]} = {value:+g} mm"
        self.field = None if facts.field_strength is None else f"{facts.field_strength:g} T"
        self.age = None if facts.age is None else int(round(facts.age))
        self.healthy = "healthy " if facts.healthy else ""
        self.findings = f" with {_join_words(facts.lesions)}" if facts.lesions else ""
        self.structures = _join_words(facts.structures[:3])
        descriptors = []
        if facts.ventricles is not None:
            descriptors.append(f"lateral ventricles {facts.ventricles} for age")
        if facts.brain_volume is not None:
            descriptors.append(f"brain volume {facts.brain_volume} for age")
        self.descriptors = ", ".join(descriptors)

    def pick(self, *options: str) -> str:
        return self.rng.choice(options)

    def noun(self, formal: bool = False) -> str:
        if self.f.sex == "F":
            return "woman" if formal else self.pick("woman", "female")
        if self.f.sex == "M":
            return "man" if formal else self.pick("man", "male")
        return "adult" if formal else self.pick("adult", "person", "subject")

    def subject_long(self, formal: bool = False) -> str:
        """'a healthy 74-year-old woman' / 'a healthy adult woman' / 'a healthy 74-year-old adult'."""
        if self.age is not None:
            noun = "adult" if formal or self.f.sex else self.pick("adult", "person")
            tail = f"{self.age}-year-old {self.noun(formal=True) if self.f.sex else noun}"
        elif self.f.sex is not None:
            tail = f"adult {self.noun(formal=True)}"
        else:
            tail = "adult"
        words = self.healthy + tail
        return f"{_article(words)} {words}{self.findings}"

    def subject_short(self, age_style: str) -> str:
        """'healthy female, age 74' style, with the age written by `age_style` ('age', 'years' or 'aged')."""
        noun = self.noun()
        if self.age is None:
            return (f"{self.healthy}{'adult ' if noun in ('woman', 'man', 'female', 'male') else ''}{noun}"
                    f"{self.findings}")
        age = {"age": f", age {self.age}", "years": f", {self.age} years", "aged": f" aged {self.age}"}
        return f"{self.healthy}{noun}{age[age_style]}{self.findings}"

    def tail(self, *items: str | None, sep: str = "; ") -> str:
        return sep.join(i for i in items if i)


def _t_canonical(p: _Parts) -> str:
    head = f"{_cap(p.o)} {p.contrast} brain MRI of {p.subject_long(formal=True)} {p.landmark} ({p.level})"
    rest = p.tail(p.field, p.structures and f"showing the {p.structures}", sep=", ")
    return f"{head}{', ' + rest if rest else ''}{'; ' + p.descriptors if p.descriptors else ''}."


def _t_report(p: _Parts) -> str:
    scan = p.tail(f"{p.o} slice at {p.level}", p.contrast, p.field, sep=", ")
    body = p.tail(
        f"Brain {p.pick('MRI', 'MR image')}, {scan}",
        p.subject_short("age"),
        p.landmark,
        p.structures and f"{p.structures} visible",
        p.descriptors,
    )
    return body + "."


def _t_terse(p: _Parts) -> str:
    return p.tail(
        f"{p.o} {p.contrast_short} brain {p.pick('MRI', 'MR', 'scan')} {p.landmark}",
        p.subject_short("years"),
        p.field,
        sep=", ",
    )


def _t_image(p: _Parts) -> str:
    field = f", acquired at {p.field}," if p.field else ","
    image = p.pick("image", "slice", "MR image")
    text = f"{p.contrast} {p.o} {image} {p.landmark}{field} from {p.subject_long()}"
    rest = p.tail(p.structures and f"the {p.structures} in view", p.descriptors)
    return f"{_cap(text)}{'; ' + rest if rest else ''}."


def _t_subject_first(p: _Parts) -> str:
    scan = f"{p.o} {p.contrast} {p.pick('scan', 'MRI', 'slice')} {p.landmark}"
    scan = p.tail(scan, p.level, p.field, sep=", ")
    rest = p.tail(p.structures and f"showing the {p.structures}", p.descriptors)
    return f"{_cap(p.subject_long())}: {scan}{'; ' + rest if rest else ''}."


def _t_key_value(p: _Parts) -> str:
    sex = {"F": "female", "M": "male", None: None}[p.f.sex]
    return p.tail(
        f"Orientation: {p.o}",
        f"Level: {p.landmark} ({p.level})",
        f"Contrast: {p.contrast}",
        p.field and f"Field strength: {p.field}",
        p.age is not None and f"Age: {p.age}",
        sex and f"Sex: {sex}",
        p.f.healthy and "Healthy",
        p.findings and f"Findings: {_join_words(p.f.lesions)}",
        p.structures and f"Structures: {p.structures}",
        p.descriptors and f"Volumes: {p.descriptors}",
    )


def _t_slice_of(p: _Parts) -> str:
    text = f"{p.o} {p.contrast} slice of {p.subject_long()} {p.landmark}"
    rest = p.tail(p.field and f"{p.field} scanner", p.structures and f"showing the {p.structures}", sep=", ")
    return f"{_cap(text)}{', ' + rest if rest else ''}{'; ' + p.descriptors if p.descriptors else ''}."


def _t_context(p: _Parts) -> str:
    return p.tail(
        "Brain",
        f"{p.o} slice {p.landmark}",
        p.contrast_short,
        p.field,
        p.subject_short("aged"),
        p.descriptors,
        sep=", ",
    )


_TEMPLATES = (
    _t_canonical,
    _t_report,
    _t_terse,
    _t_image,
    _t_subject_first,
    _t_key_value,
    _t_slice_of,
    _t_context,
)


def build_captions(facts: SliceFacts, n: int = 5, seed: int = 0) -> list[str]:
    """n distinct natural phrasings; the first is the canonical caption; deterministic for (facts, seed)."""
    if n < 1:
        return []
    # crc32 of the repr, not hash(): hash() is salted per process and would break reproducibility.
    rng = random.Random(zlib.crc32(f"{seed}|{facts!r}".encode()))
    captions = [_t_canonical(_Parts(facts, rng))]
    others = list(_TEMPLATES[1:])
    rng.shuffle(others)
    attempts = 0
    while len(captions) < n:
        template = others[attempts % len(others)]
        attempts += 1
        caption = template(_Parts(facts, rng))
        if caption not in captions:
            captions.append(caption)
        if attempts > 40 * n:
            raise ValueError(f"could only make {len(captions)} distinct captions, {n} asked for")
    return captions
