"""Longitudinal ground truth: one person scanned at several ages from one anatomy.

The person's traits (`anatomy.IndividualTraits`: head size, shape warp, individual factors on the age trends)
are drawn once. Every session ages the template to the session's age and applies the same shape warp, so the
scans differ only by ageing (ventricles, grey and white matter), head pose and, if asked, scanner. After the
first session the grey and white matter targets follow the baseline's measured amounts times the cohort's
own age trend (`AgeingModel.gm_fraction` / `wm_fraction`): a person's loss over the years is the cross-
sectional trend, from wherever they started.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from dallebrain.data.anatomy import AgeingModel, Anatomy, IndividualTraits, age_template, place_in_native
from dallebrain.data.grid import VolumeGrid

SESSION_SCANNER = ("keep", "redraw")  # later sessions: same scanner and protocol, or drawn afresh
MAX_YEARS = 40.0


def parse_timepoints(text: str) -> tuple[float, ...]:
    """'0,5,10' -> (0.0, 5.0, 10.0): years after the baseline age, increasing; ValueError says what is wrong."""
    try:
        years = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ValueError(f"--timepoints must be comma-separated years, e.g. 0,5,10; got {text!r}") from None
    if not years:
        raise ValueError("--timepoints is empty: give years after baseline, e.g. 0,5,10")
    if any(not np.isfinite(y) or y < 0 or y > MAX_YEARS for y in years):
        raise ValueError(f"--timepoints must be between 0 and {MAX_YEARS:g} years, got {text!r}")
    if any(b <= a for a, b in zip(years, years[1:], strict=False)):
        raise ValueError(f"--timepoints must increase, got {text!r}")
    return years


def session_id(number: int) -> str:
    """BIDS session label of the number-th session (0-based): '01', '02', ..."""
    return f"{number + 1:02d}"


def shape_warp_digest(traits: IndividualTraits) -> str:
    """A fingerprint of the shape warp, recorded per session: equal digests, equal anatomy apart from age."""
    return hashlib.sha1(np.ascontiguousarray(traits.displacement).tobytes()).hexdigest()


@dataclass
class Session:
    session_id: str
    years: float  # after baseline
    age: float
    anatomy: Anatomy
    targets: dict


def session_pose(traits: IndividualTraits, years: float, rng: np.random.Generator) -> np.ndarray:
    """native <- MNI of a session: the baseline pose at year 0, a new head position at any other."""
    if years == 0:
        return traits.to_mni()
    return traits.to_mni(rng.normal(0, 3, 3), rng.normal(0, 3, 3))


def sessions(grid: VolumeGrid, age: float, traits: IndividualTraits, timepoints: tuple[float, ...],
             pose_rng: np.random.Generator, model: AgeingModel = AgeingModel(), lesions=None) -> Iterator[Session]:
    """The person's scans at age + each timepoint; `lesions(aged, age)` may draw lesions into each aged
    template (lesion_plans.add_lesions with the subject's plan)."""
    from dallebrain.data.anatomy import anatomy_targets

    baseline = age_template(grid, age, traits, model)
    gm0, wm0 = baseline.gm.sum(), baseline.wm.sum()  # what the person has at baseline (template voxels)
    for number, years in enumerate(timepoints):
        session_age = age + years
        if years == 0:
            aged = baseline
        else:
            targets = (gm0 * model.gm_fraction(session_age) / model.gm_fraction(age),
                       wm0 * model.wm_fraction(session_age) / model.wm_fraction(age))
            aged = age_template(grid, session_age, traits, model, targets)
        if lesions is not None:
            aged = lesions(aged, session_age)
        anatomy = place_in_native(grid, aged, traits, session_pose(traits, years, pose_rng))
        yield Session(session_id(number), years, float(np.round(session_age, 1)), anatomy,
                      anatomy_targets(grid, aged, traits))
