"""Pathology markers in prompts: which lesion a prompt asks for, where, and how large.

"axial FLAIR of a 70-year-old man with periventricular white-matter hyperintensities (Fazekas 2)" ->
LesionRequest(kind="wmh", fazekas=2); "... with a 30 mm tumour in the right temporal lobe" -> kind="tumour",
size_mm=30, side="right", region="temporal lobe". The healthy model does not know lesions: `healthy_text` is
the prompt without its lesion clause, for the healthy slice the lesion is drawn into. Regions are the lesion
atlas's lobes and arterial territories (`data.lesion_atlas`), so a request can be checked on its mask.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dallebrain.data.lesion_atlas import LOBES, TERRITORIES

# Earliest match wins. "MS" is matched in the original case only: "ms" is also the millisecond.
KIND_PATTERNS = {
    "tumour": r"\b(?:tumou?rs?|gliomas?|glioblastomas?|gbm|neoplasms?|masse?s?|metastas[ie]s)\b",
    "infarct": r"\b(?:infarcts?|infarctions?|strokes?)\b",
    "ms": r"\b(?:multiple sclerosis|ms (?:lesions?|plaques?)|demyelinat\w*|plaques?)\b",
    "wmh": r"\b(?:white[- ]matter hyperintensit\w*|wmhs?|fazekas|leu[ck]oaraiosis|small[- ]vessel disease|"
           r"periventricular hyperintensit\w*)\b",
}
REGION_PATTERNS = {
    "frontal lobe": r"\bfrontal\b", "parietal lobe": r"\bparietal\b", "temporal lobe": r"\btemporal\b",
    "occipital lobe": r"\boccipital\b", "insula": r"\binsul(?:a|ar)\b", "basal ganglia": r"\bbasal ganglia\b",
    "thalamus": r"\bthalam(?:us|ic)\b", "cerebellum": r"\bcerebell(?:um|ar)\b",
    "brainstem": r"\bbrain ?stem\b|\bpons\b|\bmedulla\b",
    "anterior cerebral artery": r"\banterior cerebral artery\b|\baca\b",
    "middle cerebral artery": r"\bmiddle cerebral artery\b|\bmca\b",
    "posterior cerebral artery": r"\bposterior cerebral artery\b|\bpca\b",
}
assert set(REGION_PATTERNS) == set(LOBES) | set(TERRITORIES)
_SIZE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*-?\s*(mm|cm)\b(?!\s+(?:above|below))")
MAX_SIZE_MM = {"tumour": 80.0, "infarct": 100.0, "ms": 25.0, "wmh": 0.0}
MIN_SIZE_MM = {"tumour": 5.0, "infarct": 5.0, "ms": 2.0, "wmh": 0.0}


@dataclass(frozen=True)
class LesionRequest:
    kind: str  # wmh, ms, infarct, tumour
    side: str | None = None  # "left" / "right"
    region: str | None = None  # a lobe or an arterial territory of data.lesion_atlas
    size_mm: float | None = None  # tumour, infarct: diameter; ms: plaque long axis
    fazekas: int | None = None  # wmh grade 0-3
    count: int | None = None  # ms: plaques
    clause: str = ""  # the words that asked for it

    def describe(self) -> str:
        size = f"{self.size_mm:g} mm " if self.size_mm else ""
        where = " ".join(w for w in (self.side, self.region) if w)
        grade = f" (Fazekas {self.fazekas})" if self.fazekas is not None else ""
        return f"{size}{self.kind}{' in the ' + where if where else ''}{grade}"


def _kind(text: str) -> tuple[str, re.Match] | None:
    hits = [(m.start(), kind, m) for kind, pattern in KIND_PATTERNS.items() if (m := re.search(pattern, text.lower()))]
    upper_ms = re.search(r"\bMS\b", text)
    if upper_ms:
        hits.append((upper_ms.start(), "ms", upper_ms))
    return (min(hits, key=lambda h: h[0])[1], min(hits, key=lambda h: h[0])[2]) if hits else None


def _clause(text: str, match: re.Match) -> tuple[int, int]:
    """The lesion clause: from the 'with' (or 'showing', 'and') before the lesion word to the end of the sentence."""
    before = text.lower()[: match.start()]
    starts = [m.start() for m in re.finditer(r"\b(?:with|showing|having|and|has)\b", before)]
    start = starts[-1] if starts else match.start()
    end = re.search(r"[.;]\s|[.;]$", text[match.end():])
    return start, match.end() + end.start() if end else len(text)


def _size(clause: str, kind: str) -> float | None:
    low = clause.lower()
    sizes = [float(m.group(1)) * (10.0 if m.group(2) == "cm" else 1.0) for m in _SIZE.finditer(low)
             if not re.search(r"(?:=|\bat|\blevel)\s*[+-]?$", low[: m.start()])]  # "at z = 30 mm" is a position
    if not sizes:
        return None
    size = sizes[0]
    if kind == "wmh":
        raise ValueError("white-matter hyperintensities are sized by their Fazekas grade (0-3), not in mm")
    if not MIN_SIZE_MM[kind] <= size <= MAX_SIZE_MM[kind]:
        raise ValueError(f"a {size:g} mm {kind} is outside what can be drawn ({MIN_SIZE_MM[kind]:g}-"
                         f"{MAX_SIZE_MM[kind]:g} mm)")
    return size


def find_lesion(text: str) -> LesionRequest | None:
    """The lesion a prompt asks for, or None for a prompt without one; ValueError in one line for a request that
    cannot be drawn (a size out of range, a Fazekas grade over 3, a region the lesion cannot be in)."""
    found = _kind(text)
    if found is None:
        return None
    kind, match = found
    start, end = _clause(text, match)
    clause = text[start:end]
    low = clause.lower()
    side = next((s for s in ("left", "right") if re.search(rf"\b{s}\b", low)), None)
    regions = [(m.start(), name) for name, pattern in REGION_PATTERNS.items() if (m := re.search(pattern, low))]
    region = min(regions)[1] if regions else None
    grade = re.search(r"\bfazekas\s*(?:grade|score)?\s*(\d+)", low)
    fazekas = int(grade.group(1)) if grade else None
    if fazekas is not None and fazekas > 3:
        raise ValueError(f"Fazekas grades run from 0 to 3, got {fazekas}")
    if region in TERRITORIES and kind != "infarct":
        raise ValueError(f"an arterial territory ({region}) places an infarct, not a {kind}")
    count = re.search(r"\b(\d+)\s+(?:ms\s+)?(?:lesions|plaques)\b", low)
    return LesionRequest(kind, side, region, _size(clause, kind), fazekas if kind == "wmh" else None,
                         int(count.group(1)) if count and kind == "ms" else None, clause.strip())


def is_lesion_prompt(text: str) -> bool:
    """Whether a prompt names a lesion (what a healthy-only generator must refuse or hand on)."""
    return _kind(text) is not None


def healthy_text(text: str, request: LesionRequest) -> str:
    """The prompt without its lesion clause, keeping a slice position the clause gave ("at z = 30 mm")."""
    kept = " ".join(text.replace(request.clause, " ").split()).strip(" ,;")
    positions = re.findall(r"\b[xyz]\s*=\s*[+-]?\d+(?:\.\d+)?\s*(?:mm)?", request.clause, flags=re.IGNORECASE)
    return ", ".join([kept, *(f"at {p}" for p in positions)])
