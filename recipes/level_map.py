"""The recipe of the shipped level maps: where the model draws the slice for each grid level's caption, per contrast
and plane (pipelines/level_map.py says why and how a prompt then uses it).

    python recipes/level_map.py --work /path/to/cache/levels [--base MODEL] [--seeds 6] [--contrasts PDw] [--install]

For every level of the prepared grid that shows brain (the levels `caption_form` writes captions for; sagittal on
the right side only, as the level judge reads |x|) and every contrast, it samples --seeds slices of the prompt
"PLANE CONTRAST MRI slice of a healthy AGE-year-old SEX at AXIS = LEVEL mm" (the map off, so each level's own
caption form is encoded; seed SEED_BASE + s, the age and sex taking turns over the seeds) and asks the level judge
where they lie. The judged levels are kept in --work/judged.json, one entry per contrast and plane, so an
interrupted run continues where it stopped. The map (the mean judged level per caption level, made non-decreasing)
goes into a copy of the model's dallebrain.json ("sampling" -> "level_map"); no weights change. Nothing of a
prepared set is read: the judge is the template's (judges/level.py), and bench_prompt_levels.py measures the result
on other seeds and at levels between the grid's. --contrasts measures those contrasts again and keeps the base's
curves for the others (after a change of one contrast's sampling, e.g. its attribute guidance), listed under the
map's "refits".
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from dallebrain.cli._common import OneLineParser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
from shipped_model import SHIPPED, check_work, model_with_parts, release_recipe  # noqa: E402

from dallebrain.vocab import CONTRAST_LONG as CONTRASTS  # noqa: E402  (short name -> the prompt's words)

AXIS = {"axial": "z", "coronal": "y", "sagittal": "x"}
SUBJECTS = (("25", "woman"), ("45", "man"), ("65", "woman"), ("85", "man"))  # taking turns over the seeds


def level_prompt(plane: str, contrast: str, mm: float, seed_index: int) -> str:
    age, sex = SUBJECTS[seed_index % len(SUBJECTS)]
    return f"{plane} {CONTRASTS[contrast]} MRI slice of a healthy {age}-year-old {sex} at {AXIS[plane]} = {mm:g} mm"


def grid_levels(info: dict) -> dict[str, list[float]]:
    """plane -> the caption levels measured: the template's levels with brain (sagittal: x >= 0)."""
    from dallebrain.data.grid import grid_in_info
    from dallebrain.pipelines.caption_form import structures_table

    table = structures_table(grid_in_info(info))
    return {plane: [mm for mm, _ in rows if plane != "sagittal" or mm >= 0] for plane, rows in table.items()}


def judge_levels(pipe, plane: str, contrast: str, levels: list[float], seeds: int) -> list[list[float]]:
    """(levels, seeds) judged levels of the caption of each level, the map off."""
    from dallebrain.judges.level import estimate_levels
    from dallebrain.pipelines.level_map import SEED_BASE

    prompts = [level_prompt(plane, contrast, mm, s) for mm in levels for s in range(seeds)]
    images = pipe.sample(prompts, [SEED_BASE + s for _ in levels for s in range(seeds)], batch_size=64)
    judged = estimate_levels(images, [plane] * len(prompts)).reshape(len(levels), seeds)
    return judged.round(3).tolist()


def main(argv: list[str] | None = None) -> Path:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="working folder (judged levels, model, release)")
    parser.add_argument("--base", type=Path, default=SHIPPED, help="the model whose level maps are measured")
    parser.add_argument("--seeds", type=int, default=6, help="slices per caption level")
    parser.add_argument("--contrasts", default=None,
                        help="comma-separated contrasts to measure again (default: all; the others keep the base's "
                             "curves)")
    parser.add_argument("--install", action="store_true", help="copy the result into the package as the default")
    args = parser.parse_args(argv)
    check_work(args.work)
    if not (args.base / "dallebrain.json").is_file():
        raise SystemExit(f"error: {args.base} is not a pipeline folder (no dallebrain.json)")
    if args.seeds < 2:
        raise SystemExit(f"error: --seeds must be at least 2, got {args.seeds}")
    from dallebrain.api import load_pipeline
    from dallebrain.data.io import write_text_atomic
    from dallebrain.pipelines.export import update_model_info
    from dallebrain.pipelines.level_map import INFO_KEY, SEED_BASE, LevelMap, fit_curve, level_map_of

    info = json.loads((args.base / "dallebrain.json").read_text())
    measured, kept_map = list(CONTRASTS), None
    if args.contrasts is not None:
        measured = [c.strip() for c in args.contrasts.split(",") if c.strip()]
        unknown = [c for c in measured if c not in CONTRASTS]
        if not measured or unknown:
            raise SystemExit(f"error: --contrasts {args.contrasts!r}: choose from {', '.join(CONTRASTS)}")
        try:
            kept_map = level_map_of(info.get("sampling") or {})
        except ValueError as error:
            raise SystemExit(f"error: {args.base}'s level map cannot be kept: {error}") from None
        if kept_map is None:
            raise SystemExit(f"error: {args.base} has no level map to keep for the other contrasts: run without "
                             "--contrasts")
    args.work.mkdir(parents=True, exist_ok=True)
    levels = grid_levels(info)
    kept = args.work / "judged.json"
    judged = json.loads(kept.read_text()) if kept.is_file() else {}
    if judged.get("seeds", args.seeds) != args.seeds or judged.get("base") not in (None, str(args.base)):
        raise SystemExit(f"error: {kept} holds another run (seeds {judged.get('seeds')}, base {judged.get('base')}): "
                         "choose another --work")
    judged.update({"seeds": args.seeds, "base": str(args.base)})
    pipe = None
    for contrast in measured:
        for plane, mm in levels.items():
            key = f"{contrast} {plane}"
            if key in judged:
                continue
            if pipe is None:
                pipe = load_pipeline(args.base)
                pipe.level_map = None  # each level's own caption: what the map is measured from
                pipe.images_per_pass = 8  # throughput; the map is a mean over seeds, not a per-image promise
            tick = time.perf_counter()
            judged[key] = judge_levels(pipe, plane, contrast, mm, args.seeds)
            write_text_atomic(kept, json.dumps(judged))
            print(f"{key}: {len(mm)} levels x {args.seeds} seeds in {time.perf_counter() - tick:.0f} s", flush=True)
    curves = {c: {p: fit_curve(levels[p], judged[f"{c} {p}"]) for p in levels} for c in measured}
    record = {"seeds": args.seeds, "seed_base": SEED_BASE, "subjects": [" ".join(s) for s in SUBJECTS],
              "command": f"python recipes/level_map.py --seeds {args.seeds}"
                         + (f" --contrasts {','.join(measured)}" if kept_map is not None else "")}
    if kept_map is not None:  # the other contrasts' curves and the record that describes them are the base's
        refit = {**record, "measured_again": measured}
        base_record = {k: v for k, v in info["sampling"][INFO_KEY].items() if k != "curves"}
        record = {**base_record, "refits": [*base_record.get("refits", []), refit]}
        curves = {**kept_map.curves, **curves}
    model = model_with_parts(args.base, args.work, {})
    update_model_info(model, {"sampling": {INFO_KEY: LevelMap(curves).to_info(record)}})
    (model / ".dallebrain.json.lock").unlink(missing_ok=True)  # update_model_info's lock, not a part of the model
    return release_recipe(model, args.work, 0, [json.dumps(record)], args.install)


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
