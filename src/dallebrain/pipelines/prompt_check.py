"""What a prompt asks that the model cannot serve: refused, or warned about, never answered with a silent healthy
MRI slice.

The model makes 2-D slices of healthy adult human brains, MRI in four contrasts (vocab.MODALITIES), trained on a
cohort aged 18-90 at 1.5 T and 3 T. A prompt for another modality, another body part or species, a pathology
(drawn by `dallebrain generate-lesion` instead), or two values of one attribute is refused with one line.
Words that look like attributes the parser does not read (a child, handedness, an oblique plane) and values
outside the training range are warnings: the image is made, the warning goes to stderr and the JSON sidecar.
Free of torch and numpy: the CLI checks a prompt before anything heavy loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dallebrain.data.landmarks import LANDMARKS
from dallebrain.data.prompts import (
    AGE_PATTERNS,
    MM_LEVEL_PATTERNS,
    PromptFields,
    affirmed,
    descriptor_mentions,
    parse_prompt,
)
from dallebrain.vocab import BRAIN_CENTRE_MNI, FIELD_OF_VIEW_MM, FIELD_STRENGTHS, MODALITIES, ORIENTATION_AXIS

# The built-in cohort's ages (data.simulate_scan.AGE_RANGE; a test keeps the two equal).
COHORT_AGES = (18.0, 90.0)

# What each modality is called in a refusal -> how prompts write it.
OTHER_MODALITIES = {
    "CT": r"\bct\b|\bcat scan|computed tomograph\w*",
    "PET": r"\bpet\b|positron emission|\bfdg\b",
    "SPECT": r"\bspect\b|single[- ]photon",
    "diffusion-weighted MRI": r"\bdwi\b|\bdti\b|\badc\b|diffusion[- ](?:weighted|tensor|imaging|mri)|tractograph\w*",
    "susceptibility-weighted MRI": r"\bswi\b|susceptibility[- ]weighted|\bt2\*|\bt2[- ]star\b",
    "angiography": r"angiogra\w*|\bmra\b|\bcta\b|time[- ]of[- ]flight|venogra\w*",
    "functional MRI": r"\bf-?mri\b|functional (?:mri|imaging)|resting[- ]state",  # not "bold": also plain English
    "perfusion imaging": r"\bperfusion\b|\basl\b|arterial spin",
    "MR spectroscopy": r"spectroscop\w*",  # not "MRS": also "Mrs"
    "contrast-enhanced MRI": r"contrast[- ]enhanced|gadolinium|post-?contrast|contrast agent",
    "ultrasound": r"ultrasound|sonogra\w*|\bdoppler\b",
    "X-ray": r"\bx-?rays?\b|radiograph\w*|fluoroscop\w*|mammogra\w*",
}
OTHER_BODY_PARTS = (
    r"\b(?:knees?|spine|spinal|vertebra\w*|lumbar|chest|thorax|thoracic|lungs?|pulmonary|heart|cardiac|liver|"
    r"hepatic|abdomen|abdominal|kidneys?|renal|pelvis|pelvic|prostate|breasts?|hips?|shoulders?|ankles?|wrists?|"
    r"elbows?|hands?|feet|foot|legs?|arms?|pancrea\w*|spleen|bowel|colon|stomach|uterus|ovar(?:y|ies)|thyroid|"
    r"whole[- ]body|musculoskeletal)\b"
)
OTHER_SPECIES = r"\b(?:mouse|mice|murine|rats?|rodents?|canine|dogs?|feline|monkeys?|macaques?|primates?|pigs?|" \
    r"porcine|sheep|animal)\b"
# Beyond anomaly.lesion_prompts' kinds (tumour, infarct, MS, white-matter hyperintensities): pathology words the
# healthy model must not answer with a healthy slice. Age-related atrophy is healthy-cohort language (the
# parser reads it as brain volume small); ventriculomegaly and hydrocephalus are disorders.
PATHOLOGY = (
    r"\b(?:lesions?|tumou?rs?|gliomas?|glioblastomas?|metastas[ie]s|cancer|carcinoma|lymphoma|meningioma|"
    r"neoplas\w*|strokes?|infarct\w*|ischa?emi\w*|ha?emorrhag\w*|bleeds?|bleeding|microbleeds?|ha?ematoma|"
    r"aneurysms?|hydrocephal\w*|ventriculomegaly|sclerosis|demyelinat\w*|plaques?|hyperintensit\w*|"
    r"leu[ck]oaraiosis|lacun(?:e|es|ar)|alzheimer\w*|dementia|parkinson\w*|huntington\w*|epilep\w*|seizures?|"
    r"encephalitis|meningitis|abscess\w*|cysts?|o?edema|trauma\w*|contusions?|fractures?|malformations?|"
    r"cavernoma|patholog\w*|abnormal\w*|diseased?|disorders?|unhealthy)\b"
)
# Words the parser does not read as an attribute, and why the model cannot follow them.
UNREAD_ATTRIBUTES = {
    "the cohort is adults aged 18-90: a child's brain is outside what the model learned":
        r"\b(?:child(?:ren|hood)?|kids?|p(?:a)?ediatric|infants?|neonat\w*|newborns?|bab(?:y|ies)|toddlers?|"
        r"f(?:o)?etus|f(?:o)?etal|adolescents?|teen(?:ager)?s?|juvenile)\b",
    "handedness is not an attribute the model knows": r"\b(?:left|right)[- ]handed\b|\bhandedness\b",
    "ethnicity is not an attribute the model knows":
        r"\b(?:caucasian|asian|african|hispanic|latin[oax]|ethnic\w*|race)\b",
    "body size and lifestyle are not attributes the model knows":
        r"\b(?:obes\w*|bmi|overweight|underweight|smok\w*|athlet\w*|pregnan\w*)\b",
    "education and intelligence are not attributes the model knows": r"\b(?:iq|educat\w*|intelligen\w*)\b",
    "the model makes axial, coronal and sagittal slices only": r"\boblique\b",
}
# The MNI152 brain mask's extent per plane's axis (mm; nilearn's template, 2 mm): a level outside holds little
# or no brain (a warning), and one outside the prepared grid (vocab: 192 mm about the brain's centre) was never
# in any training set (a refusal). The grid holds the mask with 15-24 mm to spare, so no prepared caption is refused.
BRAIN_EXTENT_MM = {"axial": (-72.0, 82.0), "coronal": (-106.0, 72.0), "sagittal": (-72.0, 72.0)}
GRID_EXTENT_MM = {o: (BRAIN_CENTRE_MNI[i] - FIELD_OF_VIEW_MM / 2, BRAIN_CENTRE_MNI[i] + FIELD_OF_VIEW_MM / 2)
                  for o, i in (("sagittal", 0), ("coronal", 1), ("axial", 2))}
# How far (mm) an explicit level may lie outside the band of a landmark the prompt also names before the two
# disagree: a slab of anatomy changes over about 10 mm, and the bands' edges are conventions.
LANDMARK_SLACK_MM = 10.0
# Age words the parser does not turn into years: a warning only when no age in years is given.
VAGUE_AGE = r"\b(?:young|younger|(?<!-)old|older|elderly|aged(?!\s*:?\s*\d)|middle-aged|senior|geriatric)\b"


@dataclass(frozen=True)
class PromptCheck:
    """What a prompt asks (`fields`), why it cannot be served (`refusal`: one line, None if it can), and what
    of it the model will not follow (`warnings`, one line each)."""

    fields: PromptFields
    refusal: str | None = None
    warnings: list[str] = field(default_factory=list)


def _pathology_word(low: str, original: str) -> str | None:
    """The first pathology word the prompt affirms, as typed; anomaly.lesion_prompts knows the lesions
    generate-lesion draws (and "MS", read in its original case), PATHOLOGY the rest."""
    from dallebrain.anomaly.lesion_prompts import KIND_PATTERNS, is_lesion_prompt  # numpy, scipy: imported late

    hits = [m for pattern in (PATHOLOGY, *KIND_PATTERNS.values()) if (m := re.search(pattern, low))]
    if hits:
        m = min(hits, key=lambda m: m.start())
        return original[m.start():m.end()] if len(original) == len(low) else m.group(0)
    return "MS" if is_lesion_prompt(original) else None


def _refusal(low: str, original: str) -> str | None:
    """Why the prompt cannot be served, in one line; `low` and `original` have what they deny blanked."""

    def typed(m: re.Match) -> str:  # the word as the user wrote it (lower() may change the length: then as read)
        return original[m.start():m.end()] if len(original) == len(low) else m.group(0)

    for name, pattern in OTHER_MODALITIES.items():
        if m := re.search(pattern, low):
            return f"'{typed(m)}' asks for {name}: this model makes brain MRI slices only ({', '.join(MODALITIES)})"
    if m := re.search(OTHER_BODY_PARTS, low) or re.search(OTHER_SPECIES, low):
        return f"'{typed(m)}': this model makes slices of the human brain only"
    if word := _pathology_word(low, original):
        return (f"'{word}' names a pathology: this model makes healthy brains only; `dallebrain generate-lesion` "
                "draws a tumour, infarct, MS plaques or white-matter hyperintensities into a healthy slice")
    return _contradiction(low) or _level_refusal(low) or _landmark_disagreement(low)


def _level_refusal(text: str) -> str | None:
    """A level on another plane's axis ("coronal ... z = 10 mm"), or one outside the head (the prepared grid),
    in one line."""
    fields = parse_prompt(text)
    if fields.orientation is None:
        return None
    axis = ORIENTATION_AXIS[fields.orientation]
    if (m := re.search(MM_LEVEL_PATTERNS[0], text)) and m.group(1) != axis:
        article = "an" if fields.orientation == "axial" else "a"
        return (f"'{m.group(0).strip()}' is not a level of {article} {fields.orientation} slice ({fields.orientation} "
                f"slices are placed by {axis} = ... mm): name one")
    low, high = GRID_EXTENT_MM[fields.orientation]
    if fields.slice_mm is not None and not low <= fields.slice_mm <= high:
        return (f"{axis} = {fields.slice_mm:+g} mm is outside the head ({fields.orientation} slices are made from "
                f"{axis} = {low:+g} to {high:+g} mm in MNI152 space; the brain spans "
                f"{BRAIN_EXTENT_MM[fields.orientation][0]:+g} to {BRAIN_EXTENT_MM[fields.orientation][1]:+g})")
    return None


def _landmark_band(orientation: str, phrase: str) -> tuple[float, float] | None:
    """The [low, high] level band (sagittal: of |x|) of a landmark phrase as parse_prompt returns it."""
    for low, high, row, _ in LANDMARKS[orientation]:
        if phrase in {row, row.replace("{side} ", ""), row.format(side="left"), row.format(side="right")}:
            return low, high
    return None


def _landmark_disagreement(text: str) -> str | None:
    """A refusal when the prompt names a landmark and a level in mm that lie apart: two levels. (Measured: with
    "coronal ... at the level of the cerebellum at y = 20 mm" the attributes and the start follow y = +20 but the
    caption's word wins in the image, a cerebellum slice, so neither level can be promised.)"""
    fields = parse_prompt(text)
    if fields.orientation is None or fields.slice_mm is None:
        return None
    without_mm = text
    for pattern in MM_LEVEL_PATTERNS:
        without_mm = re.sub(pattern, " ", without_mm)
    if without_mm == text:
        return None  # no level in mm: the landmark is the level
    named = parse_prompt(without_mm)
    if named.orientation != fields.orientation or named.landmark is None:
        return None
    band = _landmark_band(fields.orientation, named.landmark)
    if band is None:
        return None
    sagittal = fields.orientation == "sagittal"
    value = abs(fields.slice_mm) if sagittal else fields.slice_mm
    wrong_side = sagittal and named.hemisphere is not None and fields.slice_mm != 0 and \
        (named.hemisphere == "left") != (fields.slice_mm < 0)
    if band[0] - LANDMARK_SLACK_MM <= value <= band[1] + LANDMARK_SLACK_MM and not wrong_side:
        return None
    axis = ORIENTATION_AXIS[fields.orientation]
    return (f"the prompt asks for two levels ('{named.landmark}' as read, and {axis} = {fields.slice_mm:+g} mm, "
            f"{LANDMARK_SLACK_MM:g}+ mm outside that landmark's band): name one")


def _distinct(values) -> list:
    out = []
    for v in values:
        if v is not None and v not in out:
            out.append(v)
    return out


def _contradiction(text: str) -> str | None:
    """The first attribute the prompt gives two values of, as a one-line refusal."""
    planes = _distinct(parse_prompt(m.group(0)).orientation
                       for m in re.finditer(r"\b(?:axial|transverse(?!\s+temporal)|horizontal|coronal|"
                                            r"(?:mid-?|para)?sagittal)\b", text))
    # each mention parsed alone, so "T2-FLAIR" stays one contrast (FLAIR)
    contrasts = _distinct(parse_prompt(m.group(0)).modality
                          for m in re.finditer(r"\bt[12](?:[- ]?(?:weighted|w)\b)?(?:[- ]flair\b)?|\bflair\b|"
                                               r"\bmp-?rage\b|\bspgr\b|\bpd(?:w|-weighted)?\b|proton[- ]density",
                                               text))
    if "FLAIR" in contrasts and "T2w" in contrasts:  # FLAIR is a T2-weighted sequence: "T2-weighted FLAIR"
        contrasts.remove("T2w")
    sexes = _distinct(parse_prompt(m.group(0)).sex
                      for m in re.finditer(r"\b(?:wom[ae]n|female|girl|lady|m[ae]n|male|boy|gentleman)\b", text))
    ages = _distinct(float(m.group(1)) for pattern in AGE_PATTERNS for m in re.finditer(pattern, text)
                     if float(m.group(1)) <= 120)
    fields_t = _distinct(float(m.group(1)) for m in re.finditer(r"(\d+(?:\.\d+)?)\s*-?\s*(?:t|tesla)\b", text)
                         if 0.1 <= float(m.group(1)) <= 12.0)
    descriptors = {name: [size for size, spans in sizes.items() if spans]
                   for name, sizes in descriptor_mentions(text).items()}
    for what, values in (("planes", planes), ("contrasts", contrasts), ("sexes", sexes),
                         ("ages", [f"{a:g}" for a in ages]), ("field strengths", [f"{f:g} T" for f in fields_t]),
                         ("ventricle sizes", descriptors["ventricles"]),
                         ("brain volumes", descriptors["brain_volume"])):
        if len(values) > 1:
            return f"the prompt asks for two {what} ({', '.join(map(str, values))}): name one"
    return None


def _warnings(low: str, fields: PromptFields) -> list[str]:
    warnings = []
    if fields.orientation is not None and fields.slice_mm is not None:
        low_mm, high_mm = BRAIN_EXTENT_MM[fields.orientation]
        if not low_mm <= fields.slice_mm <= high_mm:
            axis = ORIENTATION_AXIS[fields.orientation]
            warnings.append(f"{axis} = {fields.slice_mm:+g} mm is outside the MNI152 brain ({axis} {low_mm:+g} to "
                            f"{high_mm:+g} mm): the slice holds little or no brain")
    for why, pattern in UNREAD_ATTRIBUTES.items():
        if m := re.search(pattern, low):
            warnings.append(f"'{m.group(0)}' ignored: {why}")
    impossible = [m for pattern in AGE_PATTERNS for m in re.finditer(pattern, low)] if fields.age is None else []
    if impossible:  # the parser reads ages 0-120 only: a larger number is dropped, so say so
        warnings.append(f"'{impossible[0].group(0)}' ignored: not a human age, so the image samples the cohort's "
                        f"ages ({COHORT_AGES[0]:g}-{COHORT_AGES[1]:g})")
    elif fields.age is None and (m := re.search(VAGUE_AGE, low)):
        warnings.append(f"'{m.group(0)}' is not read as an age: give one in years (the cohort is "
                        f"{COHORT_AGES[0]:g}-{COHORT_AGES[1]:g})")
    if fields.age is not None and not COHORT_AGES[0] <= fields.age <= COHORT_AGES[1]:
        warnings.append(f"age {fields.age:g} is outside the training range ({COHORT_AGES[0]:g}-{COHORT_AGES[1]:g} "
                        "years): the model has not seen such brains")
    if fields.field_strength is not None and fields.field_strength not in FIELD_STRENGTHS:
        trained = " and ".join(f"{f:g} T" for f in FIELD_STRENGTHS)
        warnings.append(f"{fields.field_strength:g} T is outside the training range (trained at {trained} only)")
    return warnings


def check_prompt(text: str) -> PromptCheck:
    """What the prompt asks, and whether the healthy-brain MRI model can serve it."""
    text = text if isinstance(text, str) else ""  # not text at all: the request's own check refuses it
    original = affirmed(" ".join(text.split()))  # "no tumour", "not CT" ask for neither
    low = original.lower()
    fields = parse_prompt(text)
    refusal = _refusal(low, original)
    return PromptCheck(fields, refusal, [] if refusal else _warnings(low, fields))


def require_servable(text: str) -> list[str]:
    """The prompt's warnings, or a one-line ValueError saying why the model cannot serve it."""
    check = check_prompt(text)
    if check.refusal is not None:
        raise ValueError(check.refusal)
    return check.warnings
