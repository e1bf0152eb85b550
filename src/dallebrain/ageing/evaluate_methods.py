"""The follow-up predictors `evaluate-ageing` sets side by side, each from the first session's slice alone:

- `network`: the ageing network (predict.age_slices);
- `copy`: the baseline slice itself (no change at all: what any method must beat on the change, and a high
  bar on SSIM and identity, since a few years change a brain little);
- `cohort-mean`: the baseline plus the train people's mean change at that contrast, plane, slice position and
  gap (follow-up minus first session): the population's ageing with none of the person's own;
- `sdedit` (with an LDM): the baseline's latent noised to a strength and denoised under a prompt naming the
  new age (Meng et al. 2022), the issue's candidate (a).
"""

from __future__ import annotations

import numpy as np

from dallebrain.ageing.pairs import load_images

COPY, NETWORK, COHORT_MEAN, SDEDIT = "copy", "network", "cohort-mean", "sdedit"
# the cohort's change is averaged per position and whole years apart (sessions of one gap differ by days)
COHORT_KEY = ["modality", "orientation", "slice_index", "gap"]


def with_gap(pairs):
    """The pairs with `gap`: years apart, rounded to whole years (the report's and the cohort mean's groups)."""
    return pairs.assign(gap=pairs["years"].round().astype(int))


def cohort_changes(data, train_pairs, wanted: set[tuple]) -> dict[tuple, np.ndarray]:
    """The train split's mean change [H, W] per COHORT_KEY, for the keys in `wanted` only (a held-out chunk's):
    only those slices are read. `train_pairs` are the train split's first-session pairs (with `gap`)."""
    keys = list(zip(*(train_pairs[c] for c in COHORT_KEY), strict=True))
    rows = train_pairs[[k in wanted for k in keys]]
    if rows.empty:
        return {}
    images, index = load_images(data, [*rows["source_image_path"], *rows["target_image_path"]])
    change = (images[rows["target_image_path"].map(index).to_numpy()]
              - images[rows["source_image_path"].map(index).to_numpy()])
    return {key: change[at].mean(axis=0) for key, at in rows.groupby(COHORT_KEY).indices.items()}


def cohort_mean_predictions(sources: np.ndarray, pairs, changes: dict[tuple, np.ndarray]) -> tuple[np.ndarray, int]:
    """Each baseline plus its key's mean change, clipped to [0, 1]; a key no train pair has gets no change
    (the copy). Returns (predictions, how many pairs had no cohort change)."""
    keys = list(zip(*(pairs[c] for c in COHORT_KEY), strict=True))
    missing = sum(k not in changes for k in keys)
    zero = np.zeros(sources.shape[1:], np.float32)
    change = np.stack([changes.get(k, zero) for k in keys])
    return np.clip(sources + change, 0.0, 1.0).astype(np.float32), missing


def network_predictions(net, sources: np.ndarray, pairs) -> np.ndarray:
    from dallebrain.ageing.predict import age_slices

    return age_slices(net, sources, pairs["source_age"].to_numpy(), pairs["target_age"].to_numpy())


def follow_up_prompt(row) -> str:
    """The caption writer's canonical caption of the follow-up slice: contrast, plane, level, sex and the new
    age (what the LDM was trained to read)."""
    from dallebrain.data.captions import SliceFacts, build_captions

    sex = row["sex"] if row["sex"] in ("F", "M") else None
    facts = SliceFacts(row["orientation"], float(row["slice_mm"]), row["modality"], age=float(row["target_age"]),
                       sex=sex)
    return build_captions(facts, n=1)[0]


def sdedit_predictions(pipe, sources: np.ndarray, pairs, strength: float, steps: int, guidance: float,
                       seed: int = 0) -> np.ndarray:
    """Partial noising of each baseline's latent to `strength` and re-denoising under its follow-up prompt, the
    anomaly code's `denoise_from` (same noise for every slice), grey levels fitted back to the baseline's (the
    model renders a contrast a little differently from the simulator; that is not ageing)."""
    import torch

    from dallebrain.anomaly.diffusion import PartialNoising, denoise_from, match_intensity
    from dallebrain.anomaly.maps import brain_mask
    from dallebrain.models.vae import decode_latents, encode_images

    setting = PartialNoising(levels=(strength,), steps=steps, guidance=guidance, seed=seed)
    model_size = pipe.unet.config.sample_size * 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    x = _resized(sources, model_size)
    out = []
    with torch.no_grad():
        for start in range(0, len(x), 8):
            chunk = x[start:start + 8]
            rows = pairs.iloc[start:start + 8]
            z0 = encode_images(pipe.vae, torch.from_numpy(chunk)[:, None].to(pipe.device))
            cond = torch.cat([pipe.encode_prompt(follow_up_prompt(r))[0] for _, r in rows.iterrows()])
            uncond = pipe.encode_prompt("")[0].expand_as(cond)
            healed = decode_latents(pipe.vae, denoise_from(pipe, z0, cond, uncond, strength, setting))
            out.extend(healed[:, 0].float().cpu().numpy())
    aged = _resized(np.stack(out), sources.shape[-1])
    return np.stack([match_intensity(a, s, brain_mask(s)) for a, s in zip(aged, sources, strict=True)])


def _resized(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[-1] == size:
        return images.astype(np.float32)
    from skimage.transform import resize

    return np.stack([resize(i, (size, size), order=1, anti_aliasing=size < i.shape[-1]) for i in images]
                    ).astype(np.float32)


def pick_sdedit_pairs(pairs, n: int, seed: int):
    """The index labels of the `n` pairs sdedit runs on (slow on a CPU): a seeded draw over all held-out pairs."""
    return set(pairs.sample(min(n, len(pairs)), random_state=seed).index)
