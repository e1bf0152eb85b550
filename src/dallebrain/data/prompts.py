"""The prompt parser: the inverse of `dallebrain.data.captions.build_captions`, reading orientation, level
(landmark phrase or mm), contrast, field strength, age, sex and health back out of free text."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, fields

from dallebrain.data.landmarks import LANDMARK_CUES, LANDMARKS, landmark
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
    hits = [(m.start(), row) for pat, row in LANDMARK_CUES[orientation] if (m := re.search(pat, text))]
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
        orientation = {v: k for k, v in ORIENTATION_AXIS.items()}[axis]

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
