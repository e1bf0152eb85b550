"""The prompt parser: the inverse of `dallebrain.data.captions.build_captions`, reading orientation, level
(landmark phrase or mm), contrast, field strength, age, sex, health and the volume descriptors ("lateral
ventricles large for age", "brain volume small for age") back out of free text."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, fields

from dallebrain.data.landmarks import LANDMARK_CUES, LANDMARKS, landmark, landmark_row
from dallebrain.vocab import ORIENTATION_AXIS, ORIENTATIONS

# How an age is written; group 1 is the number (the web page's ageing strip rewrites the same spans).
AGE_PATTERNS = (
    r"(\d+(?:\.\d+)?)\s*-?\s*(?:years?|yrs?)[-\s]+old\b",
    r"\bage[ds]?\s*:?\s*(\d+(?:\.\d+)?)\b",
    r"(\d+(?:\.\d+)?)\s*(?:years?|yrs?|y/o|yo)\b",
)


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
    # Added last: callers build PromptFields positionally. "small" | "large" relative to the cohort's age norm, as
    # the captions write them (captions.volume_descriptor); None = not stated.
    ventricles: str | None = None
    brain_volume: str | None = None

    def missing(self) -> list[str]:
        """Names of the fields the prompt was silent on (hemisphere only counts for sagittal or unknown). The
        volume descriptors never count: a caption leaves them out when a brain is typical for its age, so silence
        on them is a complete description, not a gap."""
        names = []
        for f in fields(self):
            if getattr(self, f.name) is not None or f.name in ("ventricles", "brain_volume"):
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
    for pat in AGE_PATTERNS:
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


# A negation's reach: to the end of its clause ("no tumour or oedema, T1" denies both).
NEGATION = r"\b(?:no|not|nor|without|free of|absence of|negative for)\b[^,;:.()]*"


def affirmed(text: str) -> str:
    """text with what it denies blanked out (same length, so positions still hold): "healthy, without atrophy"
    states nothing about brain volume, "no tumour" asks for no tumour."""
    return re.sub(NEGATION, lambda m: " " * len(m.group(0)), text, flags=re.IGNORECASE)


def _parse_healthy(text: str) -> bool | None:
    if re.search(r"\b(?:unhealthy|patient|lesions?|tumou?rs?|stroke|patholog\w*|abnormal|infarcts?|"
                 r"hyperintensit\w*|sclerosis|o?edema|plaques?)\b", affirmed(text)):
        return False
    if re.search(r"\bhealthy\b|\bcontrols?\b|\bnormal\b", text):
        return True
    return None


_LARGER = r"(?:large|larger|enlarged|big|bigger|prominent|wide|widened)"
_SMALLER = r"(?:small|smaller|tiny|narrow|slit-like)"
# The captions' own words ("lateral ventricles large for age", "brain volume small for age") and the common ones
# for the same finding. "ventriculomegaly" is left out on purpose: it names a disorder, not a healthy variant
# (pipelines.prompt_check refuses it).
DESCRIPTOR_PATTERNS: dict[str, dict[str, str]] = {
    "ventricles": {
        "large": rf"\b{_LARGER}\s+(?:lateral\s+)?ventricles?\b|\b(?:lateral\s+)?ventricles?\s+(?:are\s+)?{_LARGER}\b"
                 r"|\bventricular\s+enlargement\b",
        "small": rf"\b{_SMALLER}\s+(?:lateral\s+)?ventricles?\b|\b(?:lateral\s+)?ventricles?\s+(?:are\s+)?{_SMALLER}\b",
    },
    "brain_volume": {
        "large": r"\b(?:brain\s+volume\s+(?:is\s+)?(?:large|larger|high|increased)|(?:large|larger|high|increased)\s+"
                 r"(?:total\s+)?brain\s+volume)\b",
        "small": r"\b(?:brain\s+volume\s+(?:is\s+)?(?:small|smaller|low|reduced)|(?:small|smaller|low|reduced)\s+"
                 r"(?:total\s+)?brain\s+volume|volume\s+loss)\b|\batroph\w*",
    },
}


def descriptor_mentions(text: str) -> dict[str, dict[str, list[tuple[int, int]]]]:
    """attribute -> size -> spans of the phrases that state it, negated ones left out (a prompt may contradict
    itself: the prompt check refuses that, the parser takes the earliest)."""
    text = affirmed(text)
    return {
        name: {size: [m.span() for m in re.finditer(pattern, text)] for size, pattern in sizes.items()}
        for name, sizes in DESCRIPTOR_PATTERNS.items()
    }


def _descriptor(mentions: dict[str, list[tuple[int, int]]]) -> str | None:
    firsts = [(spans[0][0], size) for size, spans in mentions.items() if spans]
    return min(firsts)[1] if firsts else None


# How an explicit level in mm is written, in the order _parse_mm tries them: 'z = 18 mm', '18 mm above', 'at +18 mm'.
MM_LEVEL_PATTERNS = (rf"\b([xyz])\s*=\s*{_NUM}\s*(?:mm)?", rf"{_NUM}\s*mm\s+(above|below)\b",
                     rf"\bat\s+{_NUM}\s*mm\b")


def _parse_mm(text: str) -> tuple[str | None, float | None]:
    """(axis letter or None, mm) from an explicit level such as 'z = 18 mm', 'at +18 mm', '18 mm above'."""
    axis_level, above_below, bare = MM_LEVEL_PATTERNS
    if m := re.search(axis_level, text):
        return m.group(1), float(m.group(2))
    if m := re.search(above_below, text):
        return "z", float(m.group(1)) * (1 if m.group(2) == "above" else -1)
    if m := re.search(bare, text):
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
    hits = [(m.start(), row) for pat, row in LANDMARK_CUES[orientation] if (m := re.search(pat, text))]
    if not hits:
        return None
    return orientation, min(hits)[1], None


# Structures a prompt may name in a plane whose landmark table has no row for them: "sagittal T2-weighted slice
# through the left hippocampus" asks for a sagittal slice at the left hippocampus (x = -26 mm), never a coronal
# one - the named plane always wins. (pattern, MNI152 centroid (|x|, y, z) mm), the Neuromorphometrics labels'
# centroids with both sides averaged and rounded (tests/data/test_prompts_attributes.py recomputes them).
STRUCTURE_CENTROIDS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    (r"\bhippocamp", (26.0, -21.0, -14.0)),
    (r"\bamygdal", (22.0, -5.0, -20.0)),
    (r"\bthalam", (12.0, -19.0, 6.0)),
    (r"\bcaudate", (13.0, 10.0, 9.0)),
    (r"\bputamen|\blentiform", (25.0, 2.0, -1.0)),
    (r"\bglobus pallidus|\bpallidum", (20.0, -4.0, -2.0)),
    (r"\binsula", (37.0, 4.0, -1.0)),
    (r"third ventricle", (0.0, -9.0, -5.0)),
    (r"fourth ventricle", (0.0, -44.0, -32.0)),
    (r"brain ?stem|\bpons\b|\bpontine\b|\bmedulla", (0.0, -30.0, -32.0)),
    (r"\bvermis", (0.0, -60.0, -23.0)),
    (r"\bcerebell", (24.0, -60.0, -37.0)),
)
_SIDES = {"left": r"\bleft\b(?![- ]handed)", "right": r"\bright\b(?![- ]handed)"}


def _side_near(text: str, start: int, end: int) -> str | None:
    """The side written next to a structure ("left hippocampus", "hippocampus on the right"), else anywhere."""
    before = re.search(r"\b(left|right)\s+(?:[a-z-]+\s+)?$", text[:start])
    after = re.match(r"\w*\s+(?:on\s+the\s+|,\s*)?(left|right)\b(?![- ]handed)", text[end:])
    found = before or after
    return found.group(1) if found else _first(_SIDES, text)


def _off_plane_structure(text: str, orientation: str) -> tuple[float | None, str | None, str] | None:
    """(slice_mm, side, landmark) of the earliest structure of STRUCTURE_CENTROIDS the text names, in
    `orientation`; a lateral structure in a sagittal prompt without a side has no position: (None, None, its band
    without a side), as for "sagittal T1 through the insula"."""
    hits = [(m.start(), i, m) for i, (pat, _) in enumerate(STRUCTURE_CENTROIDS) if (m := re.search(pat, text))]
    if not hits:
        return None
    _, i, m = min(hits, key=lambda h: h[:2])
    x, y, z = STRUCTURE_CENTROIDS[i][1]
    if orientation != "sagittal":
        level = z if orientation == "axial" else y
        return level, None, landmark(orientation, level)
    side = None if x == 0 else _side_near(text, m.start(), m.end())
    if x != 0 and side is None:
        return None, None, LANDMARKS["sagittal"][landmark_row("sagittal", x)][2].replace("{side} ", "")
    level = -x if side == "left" else x
    return level, side, landmark("sagittal", level)


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    for a, b in spans:
        text = text[:a] + " " * (b - a) + text[b:]
    return text


def _parse_level(where: str, orientation: str | None, mm: float | None):
    """(orientation, slice_mm, landmark, hemisphere) from a landmark phrase or cue, a structure named in a plane
    without a landmark for it, or an explicit mm level (which wins over both)."""
    found = _find_landmark(where, orientation)
    lm = slice_mm = hemisphere = None
    if found is not None:
        orientation, row, side = found
        _, _, phrase, centre = LANDMARKS[orientation][row]
        if orientation == "sagittal" and "{side}" in phrase:
            if side is None:
                side = _first(_SIDES, where)
            if side is None and mm is not None and mm != 0:
                side = "left" if mm < 0 else "right"
            hemisphere = side
            lm = phrase.format(side=side) if side else phrase.replace("{side} ", "")
            slice_mm = None if side is None else (-centre if side == "left" else centre)
        else:
            lm = phrase
            slice_mm = centre
    elif orientation is not None and mm is None and (structure := _off_plane_structure(where, orientation)):
        slice_mm, hemisphere, lm = structure
    if mm is not None:
        slice_mm = mm
        if lm is None and orientation is not None:
            lm = landmark(orientation, mm)
            if orientation == "sagittal" and lm != "midsagittal":
                hemisphere = "left" if mm < 0 else "right"
    if orientation == "sagittal" and hemisphere is None and lm is None:
        hemisphere = _first(_SIDES, where)
    return orientation, slice_mm, lm, hemisphere


def parse_prompt(text: str) -> PromptFields:
    """Inverse of build_captions: reads orientation, level (landmark phrase or mm), contrast, field strength,
    age, sex, health and the ventricle / brain volume descriptors from free text; None where the text is silent.

    A landmark phrase that belongs to one orientation only (e.g. "at the level of the pons") also sets the
    orientation when the text does not name it; an explicit mm level overrides the landmark's centre. A named
    plane always wins over a structure that is a landmark of another plane: "sagittal ... through the left
    hippocampus" is the sagittal slice at the left hippocampus (STRUCTURE_CENTROIDS).
    """
    low = " ".join(text.lower().split())
    orientation = _parse_orientation(low)
    axis, mm = _parse_mm(low)
    if orientation is None and axis is not None:
        orientation = {v: k for k, v in ORIENTATION_AXIS.items()}[axis]
    descriptors = descriptor_mentions(low)
    # "enlarged ventricles" says how large they are, not where the slice is: hidden from the level's cues
    where = _blank(low, [span for sizes in descriptors.values() for spans in sizes.values() for span in spans])
    orientation, slice_mm, lm, hemisphere = _parse_level(where, orientation, mm)

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
        ventricles=_descriptor(descriptors["ventricles"]),
        brain_volume=_descriptor(descriptors["brain_volume"]),
    )


def with_age(prompt: str, age: int) -> str:
    """The prompt with its age replaced by `age` (or ', age N' appended when it names none)."""
    article = "an" if str(age).startswith("8") or age in (11, 18) else "a"
    for pattern in AGE_PATTERNS:  # the spans parse_prompt reads an age from
        m = re.search(pattern, prompt, flags=re.IGNORECASE)
        if m and 0 <= float(m.group(1)) <= 120:
            head, tail = prompt[:m.start(1)], prompt[m.end(1):]
            a = re.search(r"\b([Aa])n?(\s+)$", head)  # "a 70-year-old" -> "an 80-year-old"
            if a:
                head = head[:a.start()] + (article if a.group(1) == "a" else article.title()) + a.group(2)
            return f"{head}{age}{tail}"
    return f"{prompt.rstrip(' .;,')}, age {age}"
