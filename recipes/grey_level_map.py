"""The recipe of the shipped grey-level maps: each route's brain intensities put on its cohort's scale, per contrast
and plane (pipelines/grey_levels.py says why and how).

    python recipes/grey_level_map.py --work /path/to/cache/grey --data PREPARED [--route both] [--n 768]
        [--contrasts PDw] [--install]

It samples the model (standardisation off) for --n captions of the prepared set's train split, one slice each
(caption i with seed SEED_BASE + i), fits the Nyul-Udupa landmarks of those slices against the captions' own real
slices, and writes them into a copy of the model's dallebrain.json ("sampling" -> "grey_level_map" for the LDM,
"unclip" -> "sampling" -> "grey_level_map" for the unCLIP route, and how each was fitted under the top-level
"grey_level_map" -> ROUTE, so refitting one route keeps the other's record); no weight changes. Nothing of the held-out
splits is read, so `dallebrain evaluate` on the test split measures the maps on slices they never saw. The
samples are kept in --work (samples_ROUTE.npz), so a rerun refits without sampling again. --contrasts refits those
contrasts alone (the train rows of the --n drawn that are of them) and keeps the base's curves for the others: for
a sampling change that touches one contrast (its unguided steps, say), the rest stay as fitted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from dallebrain.cli._common import OneLineParser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
from shipped_model import SHIPPED, check_prepared, check_work, model_with_parts, release_recipe  # noqa: E402

N = 768  # train captions sampled per route: about 190 slices per contrast, 64 per contrast and plane
ROW_SEED = 4242  # which train rows
SEED_BASE = 700_000  # the samples' seeds, far from evaluate's (seed + i from 0) and its draws (j * 1,000,000)
ROUTES = ("ldm", "unclip")


def train_rows(data: Path, n: int):
    """n random rows of the train split (all, when it has fewer), in table order."""
    import pandas as pd

    table = pd.read_parquet(data / "metadata.parquet")
    train = table[table["split"] == "train"].reset_index(drop=True)
    if len(train) < 2:
        raise SystemExit(f"error: the train split of {data} has {len(train)} slice(s): need at least 2")
    chosen = np.random.default_rng(ROW_SEED).choice(len(train), min(n, len(train)), replace=False)
    return train.iloc[np.sort(chosen)].reset_index(drop=True)


def route_samples(model: Path, route: str, rows, work: Path) -> np.ndarray:
    """The route's slices for the rows' captions, caption i with seed SEED_BASE + i (standardisation off), kept in
    work/samples_ROUTE.npz."""
    seeds = [SEED_BASE + i for i in range(len(rows))]
    return raw_samples(model, route, rows["caption"].tolist(), seeds, work / f"samples_{route}.npz")


def raw_samples(model: Path | None, route: str, prompts: list[str], seeds: list[int], cached: Path,
                trim_outline: bool = True) -> np.ndarray:
    """The route's slices for (prompt, seed) pairs with standardisation off, from `cached` when it holds these
    prompts and seeds, else sampled and saved there (also bench_grey_levels.py's held-out samples). The decoder's
    halo is trimmed where the model does it (models/brain_outline.py), since the curves act after the trim;
    recipes/brain_outline.py asks for it untrimmed. The cache records which contrasts were trimmed, so samples
    drawn before a route's outline choice changed are drawn again."""
    from dallebrain.api import load_pipeline
    from dallebrain.data.io import atomic_path
    from dallebrain.models.brain_outline import outline_contrasts_of
    from dallebrain.pipelines.folder import folder_hash
    from dallebrain.pipelines.grey_levels import route_sampling

    info = json.loads((Path(model) / "dallebrain.json").read_text())
    trimmed = sorted(outline_contrasts_of(route_sampling(info, route))) if trim_outline else []
    drawn_by = folder_hash(model)  # another --base in the same --work: its own samples, not the earlier model's
    if cached.is_file():
        with np.load(cached) as saved:
            if (saved["prompts"].tolist() == prompts and saved["seeds"].tolist() == seeds
                    and "trimmed" in saved and saved["trimmed"].tolist() == trimmed
                    and "model" in saved and str(saved["model"]) == drawn_by):
                return saved["images"].astype(np.float32)
    pipe = load_pipeline(model, route=route)
    pipe.standardise_grey_levels = False  # fitted on what the model draws, whatever maps the base already has
    pipe.trim_outline = trim_outline
    images = pipe.sample(prompts, seeds, progress=True)
    with atomic_path(cached) as tmp:
        np.savez_compressed(tmp, images=images.astype(np.float16), prompts=np.array(prompts), seeds=np.array(seeds),
                            trimmed=np.array(trimmed, dtype=str), model=np.array(drawn_by))
    return images


def main(argv: list[str] | None = None) -> Path:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="working folder (samples, model, release)")
    parser.add_argument("--base", type=Path, default=SHIPPED, help="the model whose maps are fitted")
    parser.add_argument("--data", type=Path, required=True, help="the prepared set the model was trained on")
    parser.add_argument("--route", choices=(*ROUTES, "both"), default="both")
    parser.add_argument("--n", type=int, default=N, help="train captions sampled per route")
    parser.add_argument("--contrasts", default=None,
                        help="comma-separated contrasts to refit (default: all; the others keep the base's curves)")
    parser.add_argument("--install", action="store_true", help="copy the result into the package as the default")
    args = parser.parse_args(argv)
    check_work(args.work)
    check_prepared(args.data)
    if not (args.base / "dallebrain.json").is_file():
        raise SystemExit(f"error: {args.base} is not a pipeline folder (no dallebrain.json)")
    if args.n < 16:
        raise SystemExit(f"error: --n must be at least 16, got {args.n}")
    routes = ROUTES if args.route == "both" else (args.route,)
    if "unclip" in routes and not (args.base / "decoder").is_dir():
        raise SystemExit(f"error: {args.base} has no unCLIP decoder (decoder/): use --route ldm")
    from dallebrain.evaluation.features import load_slices
    from dallebrain.pipelines.export import update_model_info
    from dallebrain.pipelines.grey_levels import INFO_KEY, fit_grey_level_map, fit_records, write_fit_records

    rows = train_rows(args.data, args.n)
    contrasts = None
    if args.contrasts is not None:
        contrasts = [c.strip() for c in args.contrasts.split(",") if c.strip()]
        drawn, rows = rows, rows[rows["modality"].isin(contrasts)].reset_index(drop=True)
        if not contrasts or len(rows) < 2:
            raise SystemExit(f"error: --contrasts {args.contrasts!r} selects {len(rows)} of the {len(drawn)} train "
                             f"rows drawn: need at least 2 (their contrasts: "
                             f"{', '.join(sorted(drawn['modality'].unique()))})")
    args.work.mkdir(parents=True, exist_ok=True)
    real = load_slices(args.data, rows["image_path"])
    model = model_with_parts(args.base, args.work, {})
    record = {"train_captions": len(rows), "row_seed": ROW_SEED, "seed_base": SEED_BASE,
              "command": f"python recipes/grey_level_map.py --data PREPARED --route {args.route} --n {args.n}"
                         + (f" --contrasts {','.join(contrasts)}" if contrasts else "")}
    if contrasts:  # the other contrasts' curves are the base's (update_model_info merges), as is its record
        record["refitted"] = contrasts
    for route in routes:
        synthetic = route_samples(args.base, route, rows, args.work)
        table = fit_grey_level_map(real, synthetic, rows["modality"], rows["orientation"]).to_info()
        update_model_info(model, {"sampling": {INFO_KEY: table}} if route == "ldm"
                          else {"unclip": {"sampling": {INFO_KEY: table}}})
        print(f"{route}: maps for " + ", ".join(f"{c} ({', '.join(p)})" for c, p in table["maps"].items()))
    # one record per route: a route not refitted keeps its own; a partial refit keeps the route's record (it
    # describes the other curves) and is listed after it
    records = fit_records(json.loads((model / "dallebrain.json").read_text()))
    for route in routes:
        if contrasts:
            records[route] = {**records.get(route, {}), "refits": [*records.get(route, {}).get("refits", []), record]}
        else:
            records[route] = {**record, "refits": []}
    write_fit_records(model, records)
    (model / ".dallebrain.json.lock").unlink(missing_ok=True)  # update_model_info's lock, not a part of the model
    return release_recipe(model, args.work, 0, [json.dumps(record)], args.install)


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
