"""Do short prompts land at the level they name? The level judge on slices of user-style prompts, each prompt
encoded as written and in caption form (pipelines/caption_form.py), the same seeds.

    python benchmarks/bench_prompt_levels.py [--model MODEL] [--route ldm|unclip] [--seeds 8] [--out levels.json]

Prompts: every landmark of every plane ("coronal T2-weighted MRI slice of a healthy 30-year-old man through the
hippocampi") and explicit levels ("axial FLAIR MRI slice of a healthy 70-year-old woman at z = 45 mm"), the
contrast and age taking turns. Printed per plane and kind: for landmark prompts the share of slices the judge
puts inside the landmark's range (data/landmarks.py), for explicit levels the mean absolute error in mm
(sagittal as |x|, as the judge reads it). The judge's own error on real held-out slices is
`benchmarks/bench_level_judge.py`'s (0.51 mm in `evaluate`). On the unCLIP route the form applies to the prior's
text (the decoder reads the parsed attributes either way).

    python benchmarks/bench_prompt_levels.py --sweep [--model MODEL] [--seeds 8] [--offset 1.5] [--no-level-map]

--sweep asks instead whether the level moves with the number at a finer step than the leak table's 12 mm bands:
axial slices at z = 6, 9, ..., 42 mm (the training slices' 3 mm grid), T1w, T2w and FLAIR, the same seeds at every
level, caption form; per level the judged mean, and the share of 3 mm steps the judged mean does not follow
(moves < 1 mm) inside a band and across a band's edge. --offset shifts every level (1.5: between the grid's
levels, where no caption was written in training); --no-level-map encodes each level's own caption even where the
model has a level map (pipelines/level_map.py), for the before column. Without --sweep, a model with a level map
gets a third column, caption form through the map (the second is then caption form without it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dallebrain.cli._common import OneLineParser
from dallebrain.data.io import write_json_atomic

CONTRASTS = ("T1-weighted", "T2-weighted", "FLAIR", "proton density-weighted")
AGES = (25, 45, 65, 85)
SEXES = ("woman", "man")
AXIS = {"axial": "z", "coronal": "y", "sagittal": "x"}
EXPLICIT_MM = {"axial": (-30, -10, 0, 15, 30, 45, 60), "coronal": (-70, -45, -20, 0, 20, 40),
               "sagittal": (-50, -30, -10, 10, 30, 50)}


def prompts() -> list[dict]:
    """Each prompt with its plane, the kind of level it names and what counts as obeyed."""
    from dallebrain.data.landmarks import LANDMARKS

    out, turn = [], 0

    def subject() -> tuple[str, str]:
        nonlocal turn
        turn += 1
        return CONTRASTS[turn % len(CONTRASTS)], f"{AGES[turn % len(AGES)]}-year-old {SEXES[turn % 2]}"

    for plane, rows in LANDMARKS.items():
        for low, high, phrase, _ in rows:
            contrast, who = subject()
            if plane == "sagittal":
                phrase = "in the midsagittal plane" if phrase == "midsagittal" else phrase.format(side="left")
            out.append({"plane": plane, "kind": "landmark", "low": low, "high": high,
                        "prompt": f"{plane} {contrast} MRI slice of a healthy {who} {phrase}"})
        for mm in EXPLICIT_MM[plane]:
            contrast, who = subject()
            out.append({"plane": plane, "kind": "mm", "target": abs(mm) if plane == "sagittal" else mm,
                        "prompt": f"{plane} {contrast} MRI slice of a healthy {who} at {AXIS[plane]} = {mm} mm"})
    return out


def score(rows: list[dict], levels: np.ndarray, seeds: int) -> dict:
    """Per plane and kind: landmark -> share inside the range; mm -> mean absolute error."""
    out: dict[str, float] = {}
    judged = levels.reshape(len(rows), seeds)
    for plane in AXIS:
        for kind in ("landmark", "mm"):
            picked = [(r, judged[i]) for i, r in enumerate(rows) if r["plane"] == plane and r["kind"] == kind]
            if kind == "landmark":  # sagittal ranges are of |x|, as the judge reads it
                hits = [(r["low"] <= lv) & (lv < r["high"]) for r, lv in picked]
                out[f"{plane} landmark in range"] = float(np.mean(np.concatenate(hits)))
            else:
                errors = [np.abs(lv - r["target"]) for r, lv in picked]
                out[f"{plane} mm error"] = float(np.mean(np.concatenate(errors)))
    return out


SWEEP_MM = tuple(float(z) for z in range(6, 43, 3))  # axial, on the training slices' 3 mm grid
SWEEP_CONTRASTS = ("T1-weighted", "T2-weighted", "FLAIR")
STUCK_MM = 1.0  # a 3 mm step the judged mean moves less than this: the model did not follow it


def sweep_prompt(contrast: str, mm: float) -> str:
    return f"axial {contrast} MRI slice of a healthy 50-year-old woman at z = {mm:g} mm"


def staircase(levels, judged: np.ndarray, band_mm: float) -> dict:
    """(len(levels), seeds) judged levels of a same-seed sweep -> the judged mean per level, the mean absolute
    error, and the share of consecutive steps whose judged mean moved < STUCK_MM, inside a leak-table band and
    across a band's edge (None where the sweep has no such step)."""
    levels = np.asarray(levels, dtype=float)
    means = judged.mean(axis=1)
    moved = np.abs(np.diff(means))
    same_band = np.floor(levels[1:] / band_mm) == np.floor(levels[:-1] / band_mm)
    share = lambda rows: float(np.mean(moved[rows] < STUCK_MM)) if rows.any() else None  # noqa: E731
    return {"judged_mean": means.tolist(), "mae_mm": float(np.abs(judged - levels[:, None]).mean()),
            "stuck_inside_band": share(same_band), "stuck_across_bands": share(~same_band)}


def sweep(pipe, seeds: int, offset: float = 0.0) -> dict:
    """The --sweep table for a loaded pipeline, its prompts encoded in the pipeline's `prompt_form` (a loaded
    pipeline's is caption form, as a user's prompt is encoded by default)."""
    from dallebrain.judges.level import estimate_levels
    from dallebrain.pipelines.leak_table import BAND_MM

    band = pipe.leak_table.band_mm if pipe.leak_table is not None else BAND_MM
    levels = tuple(mm + offset for mm in SWEEP_MM)
    out = {}
    for contrast in SWEEP_CONTRASTS:
        texts = [sweep_prompt(contrast, mm) for mm in levels for _ in range(seeds)]
        images = pipe.sample(texts, [s for _ in levels for s in range(seeds)], batch_size=32)
        judged = estimate_levels(images, ["axial"] * len(texts)).reshape(len(levels), seeds)
        out[contrast] = staircase(levels, judged, band)
    print(f"| z asked (mm; leak bands of {band:g} mm) | " + " | ".join(SWEEP_CONTRASTS) + " |")
    print("|---|" + "---|" * len(SWEEP_CONTRASTS))
    for i, mm in enumerate(levels):
        print(f"| {mm:g} | " + " | ".join(f"{out[c]['judged_mean'][i]:.1f}" for c in SWEEP_CONTRASTS) + " |")
    fmt = lambda v: "-" if v is None else f"{100 * v:.0f} %"  # noqa: E731
    for key, label in (("mae_mm", "mean absolute error (mm)"), ("stuck_inside_band", "3 mm steps not followed, "
                       "inside a band"), ("stuck_across_bands", "3 mm steps not followed, across a band's edge")):
        print(f"| {label} | " + " | ".join(f"{out[c][key]:.2f}" if key == "mae_mm" else fmt(out[c][key])
                                         for c in SWEEP_CONTRASTS) + " |")
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="pipeline folder (default: the shipped model)")
    parser.add_argument("--route", choices=("ldm", "unclip"), default="ldm")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    parser.add_argument("--sweep", action="store_true", help="the fine same-seed axial level sweep instead")
    parser.add_argument("--offset", type=float, default=0.0, help="--sweep: mm added to every level asked")
    parser.add_argument("--no-level-map", action="store_true", help="encode captions without the model's level map")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        raise SystemExit(f"error: --seeds must be at least 1, got {args.seeds}")
    from dallebrain.api import default_model, load_pipeline
    from dallebrain.judges.level import estimate_levels

    pipe = load_pipeline(args.model or default_model(), route=args.route)
    pipe.images_per_pass = 8
    level_map = getattr(pipe, "level_map", None)  # the LDM's (pipelines/level_map.py); the unCLIP route has none
    if args.no_level_map:
        pipe.level_map = level_map = None
    if args.sweep:
        result = {"route": args.route, "seeds": args.seeds, "offset_mm": args.offset,
                  "level_map": level_map is not None, "sweep": sweep(pipe, args.seeds, args.offset)}
        if args.out:
            write_json_atomic(args.out, result)  # a killed run leaves the earlier record whole
        return result
    rows = prompts()
    result = {"route": args.route, "seeds": args.seeds, "prompts": len(rows)}
    forms = {"literal": ("as written", "literal", None), "caption": ("caption form", "caption", None)}
    if level_map is not None:  # (column, prompt_form, level map) per form
        forms = {"literal": ("as written", "literal", None), "caption": ("caption form, no level map", "caption", None),
                 "caption+map": ("caption form", "caption", level_map)}
    for form, (_, prompt_form, form_map) in forms.items():
        pipe.prompt_form, pipe.level_map = prompt_form, form_map
        texts = [r["prompt"] for r in rows for _ in range(args.seeds)]
        seeds = [s for _ in rows for s in range(args.seeds)]
        images = pipe.sample(texts, seeds, batch_size=32)
        levels = estimate_levels(images, [r["plane"] for r in rows for _ in range(args.seeds)])
        result[form] = score(rows, levels, args.seeds)
    print("| plane, level named | " + " | ".join(c for c, _, _ in forms.values()) + " |\n|---|" + "---|" * len(forms))
    for key in result["literal"]:
        unit = " %" if "range" in key else " mm"
        scale = 100 if "range" in key else 1
        print(f"| {key} | " + " | ".join(f"{scale * result[form][key]:.1f}{unit}" for form in forms) + " |")
    if args.out:
        write_json_atomic(args.out, result)  # a killed run leaves the earlier record whole
    return result


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
