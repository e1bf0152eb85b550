"""The synthetic side of an evaluation: per route, one slice per held-out caption (slice i with seed + i) and
the diversity samples, through the pipelines' public `sample`; saved as out/samples_ROUTE.npz. Beside them,
the held-out slices through the model's VAE (reconstruction.py), saved as out/samples_reconstruction.npz."""

from __future__ import annotations

import time

import numpy as np

from dallebrain.evaluation.options import DRAW_SEED_STRIDE, EvaluationOptions
from dallebrain.evaluation.reconstruction import RECONSTRUCTION, reconstruct_reference
from dallebrain.evaluation.reference import RealSlices


def pipeline_size(pipe) -> int:
    """Side of the slices a pipeline makes: latent side times the VAE's upsampling."""
    return int(pipe.unet.config.sample_size) * int(2 ** (len(pipe.vae.config.block_out_channels) - 1))


def synthetic_slices(options: EvaluationOptions, routes: list[str], reference: RealSlices, diversity: list[dict],
                     timing: dict[str, float], draws: dict[str, list[np.ndarray]] | None = None
                     ) -> dict[str, np.ndarray]:
    """{route: (n, S, S) slices, then RECONSTRUCTION: the held-out slices through the first route's VAE (both
    routes read the folder's one vae/)}; each diversity item gets its samples under item["synthetic"][name].
    With options.draws > 1, `draws[route]` gets the further draws' (n, S, S) slices (draw j: seeds
    seed + j * DRAW_SEED_STRIDE + i), the route's pipeline loaded once for all."""
    from dallebrain.api import load_pipeline
    from dallebrain.data.io import atomic_path

    prompts, seed, n = reference.prompts, options.seed, len(reference.prompts)
    div_prompts = [item["prompt"] for item in diversity for _ in item["seeds"]]
    div_seeds = [s for item in diversity for s in item["seeds"]]
    synthetic: dict[str, np.ndarray] = {}
    reconstruction = None
    for route in routes:
        t = time.time()
        pipe = load_pipeline(options.model, route=route, device=options.device)
        made = pipeline_size(pipe)
        if made != reference.size:
            raise ValueError(f"route {route} makes {made}x{made} slices but {options.data} holds "
                             f"{reference.size}x{reference.size}: evaluate on a data set prepared at the model's size")
        if route == "unclip":
            pipe.prior_guidance = options.prior_guidance
        if reconstruction is None:
            t_vae = time.time()
            reconstruction = reconstruct_reference(pipe.vae, reference.real, diversity, pipe, reference.modality)
            timing["reconstruct_s"] = time.time() - t_vae
        images = pipe.sample(prompts + div_prompts, [seed + i for i in range(n)] + div_seeds, options.steps,
                             options.guidance, options.sampler, progress=options.progress)
        for j in range(1, options.draws):
            start_seed = seed + j * DRAW_SEED_STRIDE
            draw = pipe.sample(prompts, [start_seed + i for i in range(n)], options.steps, options.guidance,
                               options.sampler, progress=options.progress)
            if draws is not None:
                draws.setdefault(route, []).append(draw)
        del pipe
        synthetic[route] = images[:n]
        start = n
        for item in diversity:
            item["synthetic"][route] = images[start:start + len(item["seeds"])]
            start += len(item["seeds"])
        timing[f"generate_{route}_s"] = time.time() - t
        with atomic_path(options.out / f"samples_{route}.npz") as tmp:
            np.savez_compressed(tmp, images=synthetic[route].astype(np.float16), prompts=np.array(prompts),
                                seeds=np.arange(seed, seed + n))
    with atomic_path(options.out / f"samples_{RECONSTRUCTION}.npz") as tmp:
        np.savez_compressed(tmp, images=reconstruction.astype(np.float16), prompts=np.array(prompts))
    return {**synthetic, RECONSTRUCTION: reconstruction}
