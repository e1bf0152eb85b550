"""`evaluate`: held-out real slices -> prompts from their captions -> as many synthetic slices -> every metric,
each beside the real reference measured the same way -> metrics.json, summary.md, report.html.

The real reference ("real" column):
- realism, grey levels, texture: real train slices vs the real held-out slices, the train slices matched to
  the held-out ones in contrast, orientation and level (the floor: what a perfect generator of the training
  distribution would score at this N);
- prompt adherence: real held-out slices scored against their own captions (the ceiling);
- diversity: real slices of different subjects with the prompt's contrast, orientation and level;
- privacy: real held-out slices against the train split (unseen subjects: no copies);
- brain volume vs age: the real cohort (train split);
- anatomy (anatomy.py): the tissue and age judges on the real held-out slices (their truth: the ceiling) beside
  the synthetic slices made from their captions; head size by sex at the same positions.

Beside the routes, the "reconstruction" column: the real held-out slices through the model's VAE, measured like
a route in every metric (the best a latent generator can do), and every column's sharpness (sharpness.py) as a
ratio to the real held-out slices; blur_report.py checks issue 12's targets on both.

The stages live in their own modules: reference.py (real slices), sampling.py (synthetic slices), columns.py
(per-column metrics), reconstruction.py and sharpness.py (where blur comes from), report_data.py, figures.py
and report.py (the report).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import numpy as np

from dallebrain.evaluation import metrics as M
from dallebrain.evaluation.options import EvaluationOptions
from dallebrain.evaluation.reconstruction import RECONSTRUCTION
from dallebrain.evaluation.reference import RealSlices

RECONSTRUCTION_MEANING = ("the real held-out slices through the model's VAE (posterior mean, decoded): the ceiling "
                          "of any generator in its latent space")


def evaluate(options: EvaluationOptions) -> dict:
    """Evaluate a model folder against held-out real slices; writes metrics.json, summary.md, report.html, the
    figures and samples_ROUTE.npz into options.out and returns the metrics. The evaluation encoder (encoder/) and
    the train split's features (train_split/) are kept in options.cache_folder (the report folder unless
    options.cache names another) and reused by later runs with the same data set and settings."""
    from dallebrain.evaluation import anatomy as AN
    from dallebrain.evaluation import attributes as A
    from dallebrain.evaluation import columns as C
    from dallebrain.evaluation import features as Fe
    from dallebrain.evaluation.blur_report import blur_targets
    from dallebrain.evaluation.issue_targets import issue_targets
    from dallebrain.evaluation.reference import load_real_slices, plan_diversity
    from dallebrain.evaluation.report_data import report_data
    from dallebrain.evaluation.sampling import synthetic_slices
    from dallebrain.evaluation.sharpness import sharpness, sharpness_column

    t_start = time.time()
    routes = options.routes()
    options.out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}
    warnings: list[str] = []
    judges = AN.load_judges(options.tissue_judge, options.age_judge)  # a bad judge folder fails before any work

    t = time.time()
    reference = load_real_slices(options, warnings)
    train_work = reference.train_work.astype(np.float32)
    timing["load_real_s"] = time.time() - t

    t = time.time()
    train_targets = Fe.Targets.from_table(reference.train)
    key = Fe.encoder_key(Fe.data_fingerprint(options.data), options.encoder, len(reference.train))
    encoder_folder = options.cache_folder / "encoder"
    encoder, reused = Fe.load_or_train_encoder(encoder_folder, train_work, train_targets, options.encoder, key,
                                               options.progress)
    timing["encoder_s"] = time.time() - t
    if reused:
        warnings.append(f"reused the cached evaluation encoder in {encoder_folder}")

    diversity = plan_diversity(reference, options)
    draws: dict[str, list[np.ndarray]] = {}
    synthetic = synthetic_slices(options, routes, reference, diversity, timing, draws)  # each route, then the VAE's

    t = time.time()
    sets = C.SetFeatures.measure({"real": reference.real, "floor": reference.floor, **synthetic}, encoder,
                                 reference.clip)
    prompt_embeds = Fe.clip_text_features(reference.clip, reference.prompts) if reference.clip else None
    train_encoder = encoder.run(train_work)[0]
    timing["features_s"] = time.time() - t

    t = time.time()
    names = ["real", *synthetic]
    targets = Fe.Targets.from_prompts(reference.prompts)
    neighbours = C.privacy_neighbours(sets, names, train_work, train_encoder, reference.train_clip)
    age = C.AgeTrend.measure(sets, names, reference.train, reference.heldout, train_work, train_targets, targets)
    columns = {name: C.column(sets, name, reference.modality, targets, prompt_embeds, diversity, neighbours, age)
               for name in names}
    for route, more in draws.items():  # --draws: each distance over the draws, draw 0 the column's own
        columns[route]["spread"] = spread_over_draws(sets, route, more, encoder, reference)
    sharp = {name: sharpness(sets.images[name]) for name in ["floor", *names]}
    for name in names:
        columns[name]["sharpness"] = sharpness_column(sharp["real"], sharp["floor" if name == "real" else name],
                                                      reference.modality, reference.heldout["orientation"])
    timing["metrics_s"] = time.time() - t

    t = time.time()
    anatomy = AN.measure_anatomy(judges, reference, synthetic, age, targets, options.data)
    chance = A.chance_scores(train_targets, targets)
    timing["anatomy_s"] = time.time() - t

    metrics = _json_ready({"settings": _settings(options, routes, reference, diversity, encoder, reused),
                           "columns_meaning": {"real": "the real reference measured the same way (see summary.md)",
                                               **{r: f"synthetic slices of the {r} route" for r in routes},
                                               RECONSTRUCTION: RECONSTRUCTION_MEANING},
                           "chance": chance, "columns": columns, "targets": blur_targets(columns),
                           "issue_targets": issue_targets(columns, anatomy),
                           "attributes": AN.attribute_table(columns, chance, anatomy), "anatomy": anatomy,
                           "warnings": warnings, "timing": timing})
    data = report_data(reference, sets, synthetic, diversity, neighbours["pixel"], age, options.split, options.data)
    _write_outputs(options.out, metrics, data, t_start)
    return metrics


def spread_over_draws(sets, route: str, more: list[np.ndarray], encoder, reference: RealSlices) -> dict:
    """spread.spread over draw 0 (the route's slices in `sets`) and the further draws `more`."""
    from dallebrain.evaluation import features as Fe
    from dallebrain.evaluation.spread import distances_of, spread

    def of(features, glcm, clip, images):
        return distances_of(sets.encoder["real"], features, sets.glcm["real"], glcm, reference.modality,
                            sets.clip.get("real"), clip, sets.images["real"], images)

    per_draw = [of(sets.encoder[route], sets.glcm[route], sets.clip.get(route), sets.images[route])]
    for images in more:
        per_draw.append(of(encoder.run(images)[0], M.glcm_features(images),
                           Fe.clip_image_features(reference.clip, images) if reference.clip else None, images))
    return spread(per_draw)


def _settings(options: EvaluationOptions, routes: list[str], reference: RealSlices, diversity: list[dict], encoder,
              reused: bool) -> dict:
    """The settings record of metrics.json: enough to rerun the evaluation and to read its numbers."""
    from dallebrain._version import __version__
    from dallebrain.evaluation.options import DRAW_SEED_STRIDE
    from dallebrain.evaluation.sharpness import EDGE_MARGIN_PX

    n, seed, work = len(reference.heldout), options.seed, options.encoder.input_size
    return {"model": str(options.model), "data": str(options.data), "split": options.split, "n": n,
            "routes": routes, "steps": options.steps, "guidance": options.guidance, "seed": seed,
            "draws": options.draws,
            **({"prior_guidance": options.prior_guidance} if "unclip" in routes else {}),
            "sampler": _sampler_record(options, routes),
            **_early_guidance_record(options, routes),
            **_unguided_record(options, routes),
            **_distilled_record(options, routes),
            "image_size": reference.size,
            "seeds": f"synthetic slice i uses seed {seed} + i; diversity samples continue from {seed + n}"
                     + (f"; draw j > 0 uses seed {seed} + j * {DRAW_SEED_STRIDE} + i" if options.draws > 1 else ""),
            "encoder": {**asdict(options.encoder), "reused": reused, **encoder.record},
            "feature_spaces": ["encoder", *(["brain_clip"] if reference.clip else [])],
            "brain_threshold": M.BRAIN_THRESHOLD,
            "brain_mask": f"pixels > {M.BRAIN_THRESHOLD} in real and synthetic slices alike",
            "sharpness": "mean gradient magnitude inside each slice's brain (prepare's mask, outlined at half its "
                         f"median, eroded {EDGE_MARGIN_PX} px) over its mean there; ratio to the real held-out slices",
            "privacy_reference": f"all {len(reference.train)} train slices, {work}x{work} band-pass "
                                 f"(DoG sigma {M.BANDPASS_SIGMAS} px) correlation and encoder cosine",
            "near_copy_rule": f"relative distance < {M.NEAR_COPY_RELATIVE_DISTANCE}",
            "diversity": {"prompts": len(diversity), "samples_per_prompt": options.diversity_samples},
            "judges": {"tissue": _judge_name(options.tissue_judge), "age": _judge_name(options.age_judge)},
            "dallebrain_version": __version__}


def _sampler_record(options: EvaluationOptions, routes: list[str]) -> dict:
    """What each route sampled with: the sampler asked, or the default "auto" resolved as the pipelines resolve
    it (the LDM route per contrast from the model's sampling.sampler_by_contrast, x its step factor; the unCLIP
    decoder AUTO_FALLBACK)."""
    from dallebrain.pipelines import defaults as D
    from dallebrain.pipelines.folder import read_info
    from dallebrain.pipelines.request import auto_steps, sampler_by_contrast
    from dallebrain.vocab import AUTO_FALLBACK

    if options.sampler != D.SAMPLER:  # one sampler asked for every slice of every route
        return {"requested": options.sampler, "default": {"sampler": options.sampler, "steps": options.steps}}
    table = sampler_by_contrast(read_info(options.model))
    ldm = {contrast: {"sampler": name, "steps": auto_steps(options.steps, factor)}
           for contrast, (name, factor) in table.items()}
    record = {"requested": D.SAMPLER, "default": {"sampler": AUTO_FALLBACK, "steps": options.steps}}
    if "ldm" in routes and ldm:
        record["ldm_by_contrast"] = ldm
    return record


def _early_guidance_record(options: EvaluationOptions, routes: list[str]) -> dict:
    """The LDM route's early attribute guidance per contrast (the model's sampling.attribute_guidance_early), as
    {"attribute_guidance_early": {contrast: {"scale", "from_timestep"}}}; {} when the model records none."""
    from dallebrain.pipelines.folder import read_info
    from dallebrain.pipelines.request import attribute_guidance_early

    info = read_info(options.model)
    table = attribute_guidance_early(info) if "ldm" in routes and not _distilled(info) else {}
    return {"attribute_guidance_early": {contrast: {"scale": scale, "from_timestep": start}
                                         for contrast, (scale, start) in table.items()}} if table else {}


def _unguided_record(options: EvaluationOptions, routes: list[str]) -> dict:
    """{"unguided_below_timestep": {route: {contrast: T}}} for the routes whose model sampled a contrast's steps
    below timestep T without guidance (sampling.unguided_below_timestep, the decoder's under "unclip"); {} if none."""
    from dallebrain.pipelines.folder import read_info
    from dallebrain.pipelines.request import unguided_below_timestep

    info = read_info(options.model)
    found = {"ldm": {} if _distilled(info) else unguided_below_timestep(info),
             "unclip": unguided_below_timestep({"sampling": (info.get("unclip") or {}).get("sampling") or {}})}
    found = {route: table for route, table in found.items() if route in routes and table}
    return {"unguided_below_timestep": found} if found else {}


def _distilled(info: dict) -> bool:
    """Whether the LDM's unet/ is a guidance-distilled student throughout (no guidance tables apply)."""
    from dallebrain.pipelines.request import distilled_below, guidance_distilled

    return guidance_distilled(info) is not None and distilled_below(info) is None


def _distilled_record(options: EvaluationOptions, routes: list[str]) -> dict:
    """{"guidance_distilled": its record} when the LDM route's UNet holds its guidance (one row per step, the
    model's attribute guidance, early scales and unguided steps taught into it), on every step or below the record's
    below_timestep (a student beside the teacher, used at evaluate's default settings); {} otherwise."""
    from dallebrain.pipelines.folder import read_info
    from dallebrain.pipelines.request import guidance_distilled

    info = read_info(options.model)
    if "ldm" not in routes or guidance_distilled(info) is None:
        return {}
    return {"guidance_distilled": info["sampling"]["guidance_distilled"]}


def _judge_name(folder) -> str:
    return "installed" if folder is None else str(folder)


def _write_outputs(out, metrics: dict, data, t_start: float) -> None:
    """The report, then metrics.json last, each file through a temporary name (a killed run leaves the earlier
    file or none, never half of one)."""
    from dallebrain.data.io import write_text_atomic
    from dallebrain.evaluation.report import write_report

    t = time.time()
    write_report(out, metrics, data)
    metrics["timing"]["report_s"] = time.time() - t
    metrics["timing"]["total_s"] = time.time() - t_start
    # a rerun into the same folder (the default cache is there) with fewer routes: an earlier run's samples of
    # another route would sit beside a report that does not describe them
    kept = {f"samples_{r}.npz" for r in [*metrics["settings"]["routes"], RECONSTRUCTION]}
    for stale in out.glob("samples_*.npz"):
        if stale.name not in kept:
            stale.unlink()
    # not write_json_atomic: it sorts the keys, and metrics.json keeps settings first, then the columns
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")


def _json_ready(obj):
    """Plain JSON types: numpy scalars as Python numbers, NaN and infinities as null."""
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
