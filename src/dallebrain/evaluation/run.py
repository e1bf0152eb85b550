"""`evaluate`: held-out real slices -> prompts from their captions -> as many synthetic slices -> every metric,
each beside the real reference measured the same way -> metrics.json, summary.md, report.html.

The real reference ("real" column):
- realism, grey levels, texture: real train slices vs the real held-out slices, the train slices matched to
  the held-out ones in contrast, orientation and level (the floor: what a perfect generator of the training
  distribution would score at this N);
- prompt adherence: real held-out slices scored against their own captions (the ceiling);
- diversity: real slices of different subjects with the prompt's contrast, orientation and level;
- privacy: real held-out slices against the train split (unseen subjects: no copies);
- brain volume vs age: the real cohort (train split).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dallebrain.evaluation import metrics as M
from dallebrain.evaluation.features import EncoderConfig
from dallebrain.pipelines import defaults as D

ROUTES = ("ldm", "unclip", "both")
SPLITS = ("test", "val")
PRIVACY_K = 6  # nearest training slices kept per query: the nearest and the five it is compared with


@dataclass
class EvalData:
    """Everything the report draws, besides metrics.json."""

    split: str
    prompts: list[str]
    real: np.ndarray  # (n, H, W) held-out slices
    floor: np.ndarray  # (n, H, W) train slices matched to them
    modality: list[str]
    synthetic: dict[str, np.ndarray] = field(default_factory=dict)
    diversity: list[dict] = field(default_factory=list)  # per prompt: prompt, real (k, H, W), synthetic {route: ..}
    latent: dict[str, np.ndarray] = field(default_factory=dict)  # set name -> embeddings
    latent_space: str = "encoder"
    glcm: dict[str, np.ndarray] = field(default_factory=dict)
    nn_pairs: dict[str, list[dict]] = field(default_factory=dict)  # set -> [{query, train, similarity, ..}]
    age_points: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def check_inputs(model: str | Path, data: str | Path, split: str, n: int, route: str) -> list[str]:
    """The routes to evaluate; a one-line ValueError for anything that cannot be evaluated."""
    from dallebrain.pipelines.folder import LDM_COMPONENTS, ModelFolderError, check_model_folder
    from dallebrain.pipelines.unclip import UNCLIP_COMPONENTS

    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}: choose ldm, unclip or both")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose test or val (held-out subjects)")
    if n < 2:
        raise ValueError(f"n must be at least 2 (distributions need two slices), got {n}")
    model, data = Path(model), Path(data)
    if not model.is_dir():
        raise ValueError(f"model folder not found: {model}")
    if not (data / "metadata.parquet").is_file():
        raise ValueError(f"not a prepared data set (no metadata.parquet): {data}")
    routes = ["ldm", "unclip"] if route == "both" else [route]
    for r in routes:
        try:
            check_model_folder(model, LDM_COMPONENTS if r == "ldm" else UNCLIP_COMPONENTS)
        except ModelFolderError as exc:
            hint = " (the unCLIP route needs clip/, prior/ and decoder/: dallebrain train prior|decoder --into)" \
                if r == "unclip" else ""
            raise ValueError(f"route {r}: {exc}{hint}") from exc
    return routes


def _sample_heldout(table, split: str, n: int, seed: int, warnings: list[str]):
    rows = table[table["split"] == split]
    if len(rows) < 2:
        raise ValueError(f"the {split} split has {len(rows)} slice(s): need at least 2")
    if n > len(rows):
        warnings.append(f"n={n} but the {split} split has {len(rows)} slices: using all {len(rows)}")
        n = len(rows)
    return rows.iloc[np.sort(np.random.default_rng(seed).choice(len(rows), n, replace=False))].reset_index(drop=True)


def _match_train(train, heldout, seed: int) -> np.ndarray:
    """Per held-out row, a train row of the same contrast and orientation at the nearest level (random subject)."""
    rng = np.random.default_rng(seed + 1)
    out = []
    for row in heldout.itertuples(index=False):
        pool = train[(train["modality"] == row.modality) & (train["orientation"] == row.orientation)]
        if pool.empty:
            pool = train
        gap = (pool["slice_mm"] - row.slice_mm).abs()
        best = pool.index[(gap - gap.min()).abs() < 1e-6].to_numpy()
        out.append(int(rng.choice(best)))
    return np.array(out)


def _same_attribute_rows(table, row, k: int, seed: int) -> list[int]:
    """Up to k rows of different subjects at the row's contrast, orientation and level (any split)."""
    same = table[(table["modality"] == row["modality"]) & (table["orientation"] == row["orientation"])
                 & ((table["slice_mm"] - row["slice_mm"]).abs() < 1e-6)]
    same = same.drop_duplicates("subject_id")
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.permutation(same.index.to_numpy())[:k]]


def generate_slices(pipe, route: str, prompts: list[str], seeds: list[int], steps: int = D.STEPS,
                    guidance: float = D.GUIDANCE, sampler: str = D.SAMPLER, batch_size: int = 8, progress: bool = False,
                    desc: str = "") -> np.ndarray:
    """(N, H, W) slices for N (prompt, seed) pairs, image i exactly what `pipe(prompts[i], seed=seeds[i])` gives
    (the pipelines draw each image's noise from its own seed), but denoised in batches of different prompts."""
    import torch
    from tqdm.auto import tqdm

    out = []
    with torch.no_grad():
        if route == "unclip":
            embeds = torch.cat([pipe.image_embeds_of_prompt(p, [s]) for p, s in zip(prompts, seeds, strict=True)])
        else:
            uncond, _ = pipe.encode_prompt("")
        for start in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not progress, leave=False):
            stop = min(start + batch_size, len(prompts))
            if route == "unclip":
                images = pipe.decode_embeddings(embeds[start:stop], seeds[start:stop], steps, guidance, sampler)
            else:
                cond = torch.cat([pipe.encode_prompt(p)[0] for p in prompts[start:stop]])
                images = pipe.denoise(cond, uncond, seeds[start:stop], steps, guidance, sampler)
            out.append(images)
    return np.concatenate(out).astype(np.float32)


def _pipeline_size(pipe) -> int:
    return int(pipe.unet.config.sample_size) * int(2 ** (len(pipe.vae.config.block_out_channels) - 1))


def _feature_block(real_f, other_f, real_emb_norm=None, other_emb_norm=None) -> dict:
    out = {"frechet": M.frechet_distance(real_f, other_f), "kid": M.kid(real_f, other_f),
           **M.prdc(real_f, other_f), "one_nn_accuracy": M.one_nn_accuracy(real_f, other_f)}
    a, b = M.normalise_rows(real_f), M.normalise_rows(other_f)
    out["nn_cosine_to_real_median"] = float(np.median((b @ a.T).max(axis=1)))
    return out


def _grey_levels(real, other, modality: list[str]) -> dict:
    modality = np.asarray(modality)
    out = {"all": M.histogram_distances(real, other)}
    for m in dict.fromkeys(modality.tolist()):
        out[m] = M.histogram_distances(real[modality == m], other[modality == m])
    return out


def _texture(real_glcm, other_glcm) -> dict:
    names = M.glcm_feature_names()
    ks = M.ks_statistics(real_glcm, other_glcm, names)
    return {"frechet": M.standardised_frechet(real_glcm, other_glcm), "ks_mean": float(np.mean(list(ks.values()))),
            "ks_max": float(max(ks.values())), "ks": ks}


def _json_ready(obj):
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def evaluate(model: str | Path, data: str | Path, split: str = "test", n: int = 64, route: str = "ldm",
             steps: int = D.STEPS, seed: int = 0, out: str | Path = "dallebrain-evaluation", progress: bool = True, *,
             guidance: float = D.GUIDANCE, encoder: EncoderConfig | None = None, diversity_prompts: int = 4,
             diversity_samples: int = 4, device: str | None = None) -> dict:
    """Evaluate a model folder against held-out real slices; writes metrics.json, summary.md and report.html
    into `out` (and the evaluation encoder under out/encoder/, reused by later runs) and returns the metrics.

    Args:
        model: pipeline folder (clip/ in it adds the Brain-CLIP feature space and CLIP score).
        data: prepared data set (`dallebrain data prepare`).
        split: held-out split whose slices are the real reference: test or val.
        n: number of held-out slices, and of synthetic slices (one per held-out caption).
        route: ldm, unclip or both (side by side).
        steps, guidance: sampling settings; synthetic image i uses seed + i.
        encoder: settings of the evaluation's own encoder (default EncoderConfig()).
        diversity_prompts, diversity_samples: prompts sampled several times for the MS-SSIM diversity.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from dallebrain import __version__
    from dallebrain.api import load_pipeline
    from dallebrain.evaluation import attributes as A
    from dallebrain.evaluation import features as Fe
    from dallebrain.evaluation.report import write_report

    t_start = time.time()
    timing: dict[str, float] = {}
    routes = check_inputs(model, data, split, n, route)
    if steps < 1 or steps > 1000:
        raise ValueError(f"steps must be between 1 and 1000, got {steps}")
    model, data, out = Path(model), Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    encoder_config = encoder or EncoderConfig()
    warnings: list[str] = []

    table = pd.read_parquet(data / "metadata.parquet")
    train = table[table["split"] == "train"].reset_index(drop=True)
    if len(train) < 2:
        raise ValueError(f"the train split of {data} has {len(train)} slice(s): need at least 2")
    heldout = _sample_heldout(table, split, n, seed, warnings)
    n = len(heldout)
    prompts = heldout["caption"].tolist()
    floor_rows = _match_train(train, heldout, seed)

    # --- real slices -----------------------------------------------------------------------------------------
    t = time.time()
    real = Fe.load_slices(data, heldout["image_path"], progress=progress, desc=f"loading {split} slices")
    size = real.shape[-1]
    floor = Fe.load_slices(data, train.loc[floor_rows, "image_path"], progress=progress, desc="loading floor slices")
    work = encoder_config.input_size
    clip = Fe.load_brain_clip(model)
    train_work = np.zeros((len(train), work, work), dtype=np.float16)
    train_clip = []
    batch = 256
    for start in tqdm(range(0, len(train), batch), desc="loading the train split", disable=not progress, leave=False):
        images = Fe.load_slices(data, train["image_path"].iloc[start:start + batch])
        train_work[start:start + len(images)] = Fe.to_size(images, work)
        if clip is not None:
            train_clip.append(Fe.clip_image_features(clip, images))
    timing["load_real_s"] = time.time() - t

    # --- the evaluation encoder --------------------------------------------------------------------------------
    t = time.time()
    train_targets = Fe.Targets.from_table(train)
    key = Fe.encoder_key(Fe.data_fingerprint(data), encoder_config, len(train))
    enc, reused = Fe.load_or_train_encoder(out / "encoder", train_work.astype(np.float32), train_targets,
                                           encoder_config, key, progress)
    timing["encoder_s"] = time.time() - t
    if reused:
        warnings.append(f"reused the cached evaluation encoder in {out / 'encoder'}")

    # --- synthetic slices --------------------------------------------------------------------------------------
    rng = np.random.default_rng(seed + 2)
    distinct = list(dict.fromkeys(prompts))
    chosen = [distinct[i] for i in sorted(rng.choice(len(distinct), min(diversity_prompts, len(distinct)),
                                                     replace=False))] if diversity_samples >= 2 else []
    diversity = []
    for d, prompt in enumerate(chosen):
        row = heldout[heldout["caption"] == prompt].iloc[0]
        rows = _same_attribute_rows(table, row, diversity_samples, seed + d)
        diversity.append({"prompt": prompt, "real": Fe.load_slices(data, table.loc[rows, "image_path"]),
                          "real_subjects": int(len(rows)), "synthetic": {},
                          "seeds": [seed + n + d * diversity_samples + j for j in range(diversity_samples)]})
    synthetic: dict[str, np.ndarray] = {}
    for r in routes:
        t = time.time()
        pipe = load_pipeline(model, route=r, device=device)
        made = _pipeline_size(pipe)
        if made != size:
            raise ValueError(f"route {r} makes {made}x{made} slices but {data} holds {size}x{size}: evaluate on a "
                             "data set prepared at the model's size")
        div_prompts = [item["prompt"] for item in diversity for _ in item["seeds"]]
        div_seeds = [s for item in diversity for s in item["seeds"]]
        images = generate_slices(pipe, r, prompts + div_prompts, [seed + i for i in range(n)] + div_seeds, steps,
                                 guidance, progress=progress, desc=f"generating ({r})")
        synthetic[r] = images[:n]
        for d, item in enumerate(diversity):
            item["synthetic"][r] = images[n + d * diversity_samples:n + (d + 1) * diversity_samples]
        del pipe
        timing[f"generate_{r}_s"] = time.time() - t
        np.savez_compressed(out / f"samples_{r}.npz", images=synthetic[r].astype(np.float16),
                            prompts=np.array(prompts), seeds=np.arange(seed, seed + n))

    # --- features ----------------------------------------------------------------------------------------------
    t = time.time()
    sets = {"real": real, "floor": floor, **synthetic}
    enc_feats, enc_preds = {}, {}
    for name, images in sets.items():
        enc_feats[name], enc_preds[name] = enc.run(images)
    train_feats, _ = enc.run(train_work.astype(np.float32))
    clip_feats = {name: Fe.clip_image_features(clip, images) for name, images in sets.items()} if clip else {}
    prompt_embeds = Fe.clip_text_features(clip, prompts) if clip else None
    glcm = {name: M.glcm_features(images) for name, images in sets.items()}
    timing["features_s"] = time.time() - t

    # --- metrics -----------------------------------------------------------------------------------------------
    t = time.time()
    targets = Fe.Targets.from_prompts(prompts)
    modality = heldout["modality"].tolist()
    prompt_ages = targets.age

    # privacy: every query against the whole train split, in band-pass pixels and in encoder features
    train_pixels = M.correlation_vectors(M.bandpass(train_work.astype(np.float32)))
    train_embed = M.normalise_rows(train_feats)
    pixel_nn, embed_nn = {}, {}
    for name in ("real", *synthetic):
        pixel_nn[name] = M.nearest_neighbours(M.correlation_vectors(M.bandpass(Fe.to_size(sets[name], work))),
                                              train_pixels, PRIVACY_K)
        embed_nn[name] = M.nearest_neighbours(M.normalise_rows(enc_feats[name]), train_embed, PRIVACY_K)
    if clip:
        train_clip_all = M.normalise_rows(np.concatenate(train_clip))
        clip_nn = {name: M.nearest_neighbours(clip_feats[name], train_clip_all, PRIVACY_K)
                   for name in ("real", *synthetic)}

    # age trend: brain fraction over the cohort mean at the same position
    train_keys = A.position_keys(train["modality"], train["orientation"], train["slice_mm"])
    train_fraction = M.brain_fraction(train_work.astype(np.float32))
    reference = A.reference_means(train_fraction, train_keys)
    heldout_keys = A.position_keys(heldout["modality"], heldout["orientation"], heldout["slice_mm"])
    relative = {name: A.relative_brain_fraction(M.brain_fraction(Fe.to_size(sets[name], work)), heldout_keys,
                                                reference) for name in ("real", *synthetic)}
    cohort_relative = A.relative_brain_fraction(train_fraction, train_keys, reference)

    ceiling = A.score_attributes(enc_preds["real"], targets)
    columns: dict[str, dict] = {}
    for name in ("real", *synthetic):
        other = "floor" if name == "real" else name
        col: dict = {"realism": {"encoder": _feature_block(enc_feats["real"], enc_feats[other])},
                     "grey_levels": _grey_levels(real, sets[other], modality),
                     "texture": _texture(glcm["real"], glcm[other])}
        if clip:
            col["realism"]["brain_clip"] = _feature_block(clip_feats["real"], clip_feats[other])
        adherence = {"attributes": ceiling if name == "real" else A.score_attributes(enc_preds[name], targets)}
        if clip:
            adherence["clip_score"] = float((clip_feats[name] * prompt_embeds).sum(axis=1).mean())
        col["adherence"] = adherence
        if name == "real":
            groups = [M.mean_pairwise_ms_ssim(item["real"]) for item in diversity]
        else:
            groups = [M.mean_pairwise_ms_ssim(item["synthetic"][name]) for item in diversity]
        valid = [g for g in groups if g is not None]
        col["diversity"] = {"ms_ssim": float(np.mean(valid)) if valid else None, "per_prompt": groups}
        privacy = {"pixel": M.memorisation(pixel_nn[name][0], pixel_nn["real"][0]),
                   "encoder_embedding": M.memorisation(embed_nn[name][0], embed_nn["real"][0], None)}
        if clip:
            privacy["brain_clip_embedding"] = M.memorisation(clip_nn[name][0], clip_nn["real"][0], None)
        col["privacy"] = privacy
        if name == "real":
            col["age_trend"] = {**A.age_slope(train_targets.age, cohort_relative),
                                "heldout": A.age_slope(prompt_ages, relative["real"])}
        else:
            col["age_trend"] = A.age_slope(prompt_ages, relative[name])
        columns[name] = col
    timing["metrics_s"] = time.time() - t

    # --- report ------------------------------------------------------------------------------------------------
    report_data = EvalData(split, prompts, real, floor, modality, synthetic, diversity,
                           latent=clip_feats or enc_feats, latent_space="brain_clip" if clip else "encoder",
                           glcm=glcm)
    for name in ("real", *synthetic):
        sims, idx = pixel_nn[name]
        rel = M.relative_distance(sims)
        order = np.argsort(rel)[:4]
        train_images = Fe.load_slices(data, train.loc[idx[order, 0], "image_path"])
        report_data.nn_pairs[name] = [
            {"query": sets[name][i], "train": train_images[j], "similarity": float(sims[i, 0]),
             "relative_distance": float(rel[i]), "prompt": prompts[i],
             "train_slice": str(train.loc[idx[i, 0], "image_path"])} for j, i in enumerate(order)]
    report_data.age_points = {"cohort (train)": (train_targets.age, cohort_relative),
                              **{name if name != "real" else f"real {split}": (prompt_ages, relative[name])
                                 for name in ("real", *synthetic)}}

    metrics = {
        "settings": {"model": str(model), "data": str(data), "split": split, "n": n, "routes": routes,
                     "steps": steps, "guidance": guidance, "seed": seed, "image_size": size,
                     "seeds": f"synthetic slice i uses seed {seed} + i; diversity samples continue from {seed + n}",
                     "encoder": {**asdict(encoder_config), "reused": reused, **enc.record},
                     "feature_spaces": ["encoder", *(["brain_clip"] if clip else [])],
                     "brain_threshold": M.BRAIN_THRESHOLD,
                     "brain_mask": f"pixels > {M.BRAIN_THRESHOLD} in real and synthetic slices alike",
                     "privacy_reference": f"all {len(train)} train slices, {work}x{work} band-pass "
                                          f"(DoG sigma {M.BANDPASS_SIGMAS} px) correlation and encoder cosine",
                     "near_copy_rule": f"relative distance < {M.NEAR_COPY_RELATIVE_DISTANCE}",
                     "diversity": {"prompts": len(diversity), "samples_per_prompt": diversity_samples},
                     "dallebrain_version": __version__},
        "columns_meaning": {"real": "the real reference measured the same way (see summary.md)",
                            **{r: f"synthetic slices of the {r} route" for r in synthetic}},
        "chance": A.chance_scores(train_targets, targets),
        "columns": columns,
        "warnings": warnings,
        "timing": timing,
    }
    metrics = _json_ready(metrics)
    t = time.time()
    write_report(out, metrics, report_data)
    metrics["timing"]["report_s"] = time.time() - t
    metrics["timing"]["total_s"] = time.time() - t_start
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
