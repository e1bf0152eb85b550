"""The attribute mix of a synthetic data set, written as options: `--ages 20-90`, `--sexes F=2,M=1`,
`--contrasts T1w,FLAIR`, `--planes axial`, `--levels -20:40`, `--field-strengths 1.5,3`.

Every option is a comma-separated list of choices, each with an optional `=weight` (default 1): a row picks
a choice with probability weight / sum of weights, so a list without weights is uniform. Ranges (ages in
years, levels in MNI mm along the plane's normal) are drawn uniformly within the chosen range.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from dallebrain.vocab import MODALITIES, ORIENTATIONS

_CONTRAST_ALIASES = {"t1": "T1w", "t1w": "T1w", "t2": "T2w", "t2w": "T2w", "pd": "PDw", "pdw": "PDw",
                     "flair": "FLAIR"}
_SEX_ALIASES = {"f": "F", "female": "F", "woman": "F", "m": "M", "male": "M", "man": "M"}
MAX_AGE = 120
_NUMBER = r"[+-]?\d+(?:\.\d+)?"


@dataclass(frozen=True)
class Weighted:
    """Choices and their probabilities (summing to 1)."""

    choices: tuple
    probabilities: tuple[float, ...]

    def describe(self) -> str:
        return ",".join(f"{_text(c)}={p:.4g}" for c, p in zip(self.choices, self.probabilities, strict=True))


def _text(choice) -> str:
    if isinstance(choice, tuple):
        return ":".join(f"{v:g}" for v in choice)
    return f"{choice:g}" if isinstance(choice, float) else str(choice)


def parse_weighted(text: str, option: str, parse_choice: Callable[[str], object]) -> Weighted:
    """'a=2,b' -> Weighted((a, b), (2/3, 1/3)); a one-line ValueError naming the option for anything else."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ValueError(f"{option} is empty: give at least one choice")
    choices, weights = [], []
    for item in items:
        value, _, weight_text = item.partition("=")
        try:
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            raise ValueError(f"{option}: weight {weight_text!r} of {value!r} is not a number") from None
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"{option}: weight of {value!r} must be a positive number, got {weight_text}")
        choice = parse_choice(value.strip())
        if choice in choices:
            raise ValueError(f"{option}: {value.strip()!r} is listed twice")
        choices.append(choice)
        weights.append(weight)
    total = sum(weights)
    return Weighted(tuple(choices), tuple(w / total for w in weights))


def _contrast(value: str) -> str:
    if value.lower() not in _CONTRAST_ALIASES:
        raise ValueError(f"--contrasts: unknown contrast {value!r}: choose from {', '.join(MODALITIES)}")
    return _CONTRAST_ALIASES[value.lower()]


def _sex(value: str) -> str:
    if value.lower() not in _SEX_ALIASES:
        raise ValueError(f"--sexes: unknown sex {value!r}: choose F or M")
    return _SEX_ALIASES[value.lower()]


def _plane(value: str) -> str:
    if value.lower() not in ORIENTATIONS:
        raise ValueError(f"--planes: unknown plane {value!r}: choose from {', '.join(ORIENTATIONS)}")
    return value.lower()


def _age_range(value: str) -> tuple[float, float]:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(?:\s*[-:]\s*(\d+(?:\.\d+)?))?", value)
    if not m:
        raise ValueError(f"--ages: {value!r} is not an age or a range such as 20-90")
    low = float(m.group(1))
    high = float(m.group(2)) if m.group(2) else low
    if not 0 <= low <= high <= MAX_AGE:
        raise ValueError(f"--ages: range {value!r} must run upwards within 0-{MAX_AGE} years")
    return low, high


def _level_range(value: str) -> tuple[float, float]:
    m = re.fullmatch(rf"({_NUMBER})(?:\s*:\s*({_NUMBER}))?", value)
    if not m:
        raise ValueError(f"--levels: {value!r} is not 'all', a level in mm or a range LOW:HIGH such as -20:40")
    low = float(m.group(1))
    high = float(m.group(2)) if m.group(2) else low
    if low > high:
        raise ValueError(f"--levels: range {value!r} runs downwards: write LOW:HIGH")
    return low, high


def _field(value: str) -> float:
    try:
        tesla = float(value.lower().removesuffix("t").strip())
    except ValueError:
        raise ValueError(f"--field-strengths: {value!r} is not a field strength in tesla") from None
    if not 0.1 <= tesla <= 12:
        raise ValueError(f"--field-strengths: {value!r} is outside 0.1-12 T")
    return tesla


@dataclass(frozen=True)
class AttributeMix:
    """Independent distributions of each attribute of a synthetic slice (`--like` gives joint ones instead)."""

    contrasts: Weighted
    planes: Weighted
    levels: Weighted | None  # ranges in MNI mm along the plane's normal; None: every level that shows brain
    ages: Weighted  # ranges in years
    sexes: Weighted
    field_strengths: Weighted

    def describe(self) -> dict[str, str]:
        parts = {"contrasts": self.contrasts, "planes": self.planes, "levels": self.levels, "ages": self.ages,
                 "sexes": self.sexes, "field_strengths": self.field_strengths}
        return {k: ("all" if v is None else v.describe()) for k, v in parts.items()}


def parse_mix(contrasts: str = "T1w,T2w,PDw,FLAIR", planes: str = "axial,coronal,sagittal", levels: str = "all",
              ages: str = "20-90", sexes: str = "F,M", field_strengths: str = "1.5,3") -> AttributeMix:
    """The mix the options describe (defaults: every contrast, plane and level, ages 20-90, both sexes,
    1.5 and 3 T, all uniform)."""
    return AttributeMix(
        contrasts=parse_weighted(contrasts, "--contrasts", _contrast),
        planes=parse_weighted(planes, "--planes", _plane),
        levels=None if str(levels).strip().lower() == "all" else parse_weighted(levels, "--levels", _level_range),
        ages=parse_weighted(ages, "--ages", _age_range),
        sexes=parse_weighted(sexes, "--sexes", _sex),
        field_strengths=parse_weighted(field_strengths, "--field-strengths", _field),
    )
