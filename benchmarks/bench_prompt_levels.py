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
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="pipeline folder (default: the shipped model)")
    parser.add_argument("--route", choices=("ldm", "unclip"), default="ldm")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        raise SystemExit(f"error: --seeds must be at least 1, got {args.seeds}")
    from dallebrain.api import default_model, load_pipeline
    from dallebrain.judges.level import estimate_levels

    pipe = load_pipeline(args.model or default_model(), route=args.route)
    pipe.images_per_pass = 8
    rows = prompts()
    result = {"route": args.route, "seeds": args.seeds, "prompts": len(rows)}
    for form in ("literal", "caption"):
        pipe.prompt_form = form
        texts = [r["prompt"] for r in rows for _ in range(args.seeds)]
        seeds = [s for _ in rows for s in range(args.seeds)]
        images = pipe.sample(texts, seeds, batch_size=32)
        levels = estimate_levels(images, [r["plane"] for r in rows for _ in range(args.seeds)])
        result[form] = score(rows, levels, args.seeds)
    print("| plane, level named | as written | caption form |\n|---|---|---|")
    for key in result["literal"]:
        unit = " %" if "range" in key else " mm"
        scale = 100 if "range" in key else 1
        print(f"| {key} | {scale * result['literal'][key]:.1f}{unit} | {scale * result['caption'][key]:.1f}{unit} |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
