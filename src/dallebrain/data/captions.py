"""Captions for training slices, and the prompt parser that inverts them.

Every training slice (128x128, 1.5 mm, MNI152 space) is described by a `SliceFacts`; `build_captions`
turns it into several natural phrasings, and `parse_prompt` reads the same fields back out of free text.
"""

from __future__ import annotations

import functools
import math
import random
import re
import zlib
from dataclasses import dataclass, field, fields

# Anatomical landmarks by slice position in MNI152 space (mm, RAS+).
# axial (z) and coronal (y): a slice belongs to the row whose [low, high) range contains it.
# sagittal (|x|): a slice belongs to the row whose (low, high] range contains |x|; "{side}" becomes
# "left" (x < 0) or "right" (x > 0).
# `centre` is where parse_prompt puts a slice named only by its landmark (a typical value for open ends).
#   orientation: ((low, high, phrase, centre), ...)
LANDMARKS: dict[str, tuple[tuple[float, float, str, float], ...]] = {
    "axial": (
        (-math.inf, -42.0, "at the level of the cerebellum", -50.0),
        (-42.0, -28.0, "at the level of the pons", -35.0),
        (-28.0, -12.0, "through the hippocampi and midbrain", -20.0),
        (-12.0, 4.0, "at the level of the basal ganglia", -4.0),
        (4.0, 16.0, "at the level of the thalami", 10.0),
        (16.0, 30.0, "at the level of the lateral ventricles", 23.0),
        (30.0, 50.0, "at the level of the centrum semiovale", 40.0),
        (50.0, math.inf, "near the vertex", 60.0),
    ),
    "coronal": (
        (45.0, math.inf, "through the frontal poles", 55.0),
        (20.0, 45.0, "through the frontal lobes", 32.5),
        (4.0, 20.0, "through the frontal horns of the lateral ventricles", 12.0),
        (-8.0, 4.0, "through the basal ganglia", -2.0),
        (-20.0, -8.0, "through the thalami", -14.0),
        (-38.0, -20.0, "through the hippocampi", -29.0),
        (-60.0, -38.0, "through the atria of the lateral ventricles", -49.0),
        (-80.0, -60.0, "through the parieto-occipital region", -70.0),
        (-math.inf, -80.0, "through the occipital poles", -90.0),
    ),
    "sagittal": (
        (-math.inf, 4.0, "midsagittal", 0.0),
        (4.0, 14.0, "through the {side} lateral ventricle", 9.0),
        (14.0, 30.0, "through the {side} basal ganglia", 22.0),
        (30.0, 42.0, "through the {side} insula", 36.0),
        (42.0, math.inf, "through the {side} temporal lobe", 50.0),
    ),
}

# Free-text cues for a landmark when the exact phrase is absent: orientation -> ((regex, row index), ...).
_LANDMARK_CUES: dict[str, tuple[tuple[str, int], ...]] = {
    "axial": (
        (r"cerebell", 0),
        (r"\bpons\b|\bpontine\b", 1),
        (r"hippocamp|midbrain|mesencephal", 2),
        (r"basal ganglia|lentiform|putamen", 3),
        (r"thalam", 4),
        (r"lateral ventricle|\bventricles\b", 5),
        (r"centrum semiovale|semioval", 6),
        (r"\bvertex\b|convexity", 7),
    ),
    "coronal": (
        (r"frontal poles?\b", 0),
        (r"frontal lobes?\b", 1),
        (r"frontal horns?\b", 2),
        (r"basal ganglia|lentiform|putamen", 3),
        (r"thalam", 4),
        (r"hippocamp", 5),
        (r"\batri(?:a|um)\b|trigone", 6),
        (r"parieto-?\s?occipital", 7),
        (r"occipital poles?\b", 8),
    ),
    "sagittal": (
        (r"mid-?\s?sagittal|\bmidline\b", 0),
        (r"lateral ventricle", 1),
        (r"basal ganglia|lentiform|putamen", 2),
        (r"insula", 3),
        (r"temporal lobe", 4),
    ),
}

ORIENTATIONS = ("axial", "coronal", "sagittal")
MODALITIES = ("T1w", "T2w", "PDw", "FLAIR")
_AXIS = {"axial": "z", "coronal": "y", "sagittal": "x"}
_CONTRAST_LONG = {"T1w": "T1-weighted", "T2w": "T2-weighted", "PDw": "PD-weighted", "FLAIR": "FLAIR"}
_CONTRAST_SHORT = {"T1w": "T1", "T2w": "T2", "PDw": "PD", "FLAIR": "FLAIR"}


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


def _row(orientation: str, slice_mm: float) -> int:
    rows = LANDMARKS[orientation]
    if orientation == "sagittal":
        return next(i for i, (lo, hi, _, _) in enumerate(rows) if lo < abs(slice_mm) <= hi)
    return next(i for i, (lo, hi, _, _) in enumerate(rows) if lo <= slice_mm < hi)


def landmark(orientation: str, slice_mm: float) -> str:
    """Anatomical landmark phrase for a slice position in MNI space, e.g.
    "at the level of the lateral ventricles"."""
    if orientation not in LANDMARKS:
        raise ValueError(f"unknown orientation {orientation!r}; expected one of {ORIENTATIONS}")
    phrase = LANDMARKS[orientation][_row(orientation, slice_mm)][2]
    return phrase.format(side="left" if slice_mm < 0 else "right")


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
        self.contrast = _CONTRAST_LONG[facts.modality]
        self.contrast_short = _CONTRAST_SHORT[facts.modality]
        lm = landmark(facts.orientation, facts.slice_mm)
        self.landmark = "in the midsagittal plane" if lm == "midsagittal" else lm
        value = round(facts.slice_mm, 1) + 0.0  # + 0.0 turns -0.0 into 0.0
        self.level = f"{_AXIS[facts.orientation]} = {value:+g} mm"
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


# --- prompt parsing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptFields:
    orientation: str | None = None
    slice_mm: float | None = None
    landmark: str | None = None
    modality: str | None = None
    field_strength: float | None = None
    age: float | None = None
    sex: str | None = None
    hemisphere: str | None = None  # "left" | "right", sagittal only
    healthy: bool | None = None

    def missing(self) -> list[str]:
        """Names of the fields the prompt was silent on (hemisphere only counts for sagittal or unknown)."""
        names = []
        for f in fields(self):
            if getattr(self, f.name) is not None:
                continue
            if f.name == "hemisphere" and self.orientation in ("axial", "coronal"):
                continue
            if f.name == "hemisphere" and self.landmark == "midsagittal":
                continue
            names.append(f.name)
        return names


_NUM = r"([+-]?\d+(?:\.\d+)?)"


def _first(patterns: dict[str, str], text: str) -> str | None:
    """Key of the pattern that matches earliest in text."""
    hits = [(m.start(), key) for key, pat in patterns.items() if (m := re.search(pat, text))]
    return min(hits)[1] if hits else None


def _parse_orientation(text: str) -> str | None:
    return _first(
        {
            "axial": r"\baxial\b|\btransverse\b(?!\s+temporal)|\bhorizontal\b",
            "coronal": r"\bcoronal\b",
            "sagittal": r"\b(?:mid-?|para)?sagittal\b",
        },
        text,
    )


def _parse_modality(text: str) -> str | None:
    if re.search(r"\bflair\b", text):
        return "FLAIR"  # before T2: "T2-FLAIR" is FLAIR
    return _first(
        {
            "T1w": r"\bt1(?![0-9])|\bmp-?rage\b|\bspgr\b",
            "T2w": r"\bt2(?![0-9*])",
            "PDw": r"\bpd(?:w|-weighted|\s+weighted)?\b|\bproton[-\s]density\b",
        },
        text,
    )


def _parse_field(text: str) -> float | None:
    for m in re.finditer(r"(\d+(?:\.\d+)?)\s*-?\s*(?:t|tesla)\b", text):
        value = float(m.group(1))
        if 0.1 <= value <= 12.0:
            return value
    return None


def _parse_age(text: str) -> float | None:
    for pat in (
        r"(\d+(?:\.\d+)?)\s*-?\s*(?:years?|yrs?)[-\s]+old\b",
        r"\bage[ds]?\s*:?\s*(\d+(?:\.\d+)?)\b",
        r"(\d+(?:\.\d+)?)\s*(?:years?|yrs?|y/o|yo)\b",
    ):
        m = re.search(pat, text)
        if m and 0 <= float(m.group(1)) <= 120:
            return float(m.group(1))
    return None


def _parse_sex(text: str) -> str | None:
    # Word boundaries keep "woman" from reading as "man" and "female" as "male".
    return _first(
        {
            "F": r"\b(?:woman|women|female|girl|lady|her|she)\b",
            "M": r"\b(?:man|men|male|boy|gentleman|his|he|him)\b",
        },
        text,
    )


def _parse_healthy(text: str) -> bool | None:
    if re.search(r"\b(?:unhealthy|patient|lesions?|tumou?rs?|stroke|patholog\w*|abnormal|infarcts?|"
                 r"hyperintensit\w*|sclerosis|o?edema|plaques?)\b", text):
        return False
    if re.search(r"\bhealthy\b|\bcontrols?\b|\bnormal\b", text):
        return True
    return None


def _parse_mm(text: str) -> tuple[str | None, float | None]:
    """(axis letter or None, mm) from an explicit level such as 'z = 18 mm', 'at +18 mm', '18 mm above'."""
    m = re.search(rf"\b([xyz])\s*=\s*{_NUM}\s*(?:mm)?", text)
    if m:
        return m.group(1), float(m.group(2))
    m = re.search(rf"{_NUM}\s*mm\s+(above|below)\b", text)
    if m:
        return "z", float(m.group(1)) * (1 if m.group(2) == "above" else -1)
    m = re.search(rf"\bat\s+{_NUM}\s*mm\b", text)
    if m:
        return None, float(m.group(1))
    return None, None


@functools.cache
def _phrases(orientation: str) -> list[tuple[re.Pattern, int, str | None]]:
    """(phrase pattern, row, side) for every exact landmark phrase of an orientation."""
    out = []
    for i, (_, _, phrase, _) in enumerate(LANDMARKS[orientation]):
        sides = ("left", "right") if "{side}" in phrase else (None,)
        out += [(re.compile(rf"\b{re.escape(phrase.format(side=s))}\b"), i, s) for s in sides]
    return out


def _find_landmark(text: str, orientation: str | None) -> tuple[str, int, str | None] | None:
    """(orientation, row, side) of the landmark the text names, exact phrases first, then cues."""
    candidates = [orientation] if orientation else list(ORIENTATIONS)
    exact = [
        (len(pattern.pattern), o, row, side)
        for o in candidates
        for pattern, row, side in _phrases(o)
        if pattern.search(text)
    ]
    if exact:
        # The longest wins: "through the hippocampi and midbrain" over "through the hippocampi".
        _, o, row, side = max(exact, key=lambda e: e[0])
        return o, row, side
    if orientation is None:
        return None
    hits = [(m.start(), row) for pat, row in _LANDMARK_CUES[orientation] if (m := re.search(pat, text))]
    if not hits:
        return None
    return orientation, min(hits)[1], None


def parse_prompt(text: str) -> PromptFields:
    """Inverse of build_captions: reads orientation, level (landmark phrase or mm), contrast, field strength,
    age, sex from free text; None where the text is silent.

    A landmark phrase that belongs to one orientation only (e.g. "at the level of the pons") also sets the
    orientation when the text does not name it; an explicit mm level overrides the landmark's centre.
    """
    low = " ".join(text.lower().split())
    orientation = _parse_orientation(low)
    axis, mm = _parse_mm(low)
    if orientation is None and axis is not None:
        orientation = {v: k for k, v in _AXIS.items()}[axis]

    found = _find_landmark(low, orientation)
    lm = slice_mm = hemisphere = None
    if found is not None:
        orientation, row, side = found
        _, _, phrase, centre = LANDMARKS[orientation][row]
        if orientation == "sagittal" and "{side}" in phrase:
            if side is None:
                side = _first({"left": r"\bleft\b", "right": r"\bright\b"}, low)
            if side is None and mm is not None and mm != 0:
                side = "left" if mm < 0 else "right"
            hemisphere = side
            lm = phrase.format(side=side) if side else phrase.replace("{side} ", "")
            slice_mm = None if side is None else (-centre if side == "left" else centre)
        else:
            lm = phrase
            slice_mm = centre
    if mm is not None:
        slice_mm = mm
        if lm is None and orientation is not None:
            lm = landmark(orientation, mm)
            if orientation == "sagittal" and lm != "midsagittal":
                hemisphere = "left" if mm < 0 else "right"
    if orientation == "sagittal" and hemisphere is None and lm is None:
        hemisphere = _first({"left": r"\bleft\b", "right": r"\bright\b"}, low)

    return PromptFields(
        orientation=orientation,
        slice_mm=slice_mm,
        landmark=lm,
        modality=_parse_modality(low),
        field_strength=_parse_field(low),
        age=_parse_age(low),
        sex=_parse_sex(low),
        hemisphere=hemisphere,
        healthy=_parse_healthy(low),
    )
