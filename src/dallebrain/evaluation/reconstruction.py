"""The VAE's ceiling: real held-out slices through the model's own VAE (encode to the posterior mean, decode),
measured like a route. A generator whose images live in the VAE's latent space cannot look more real than
this column, so a reconstruction far from the real floor says the VAE, not the diffusion model, limits realism
(issue 12: "know where blur comes from")."""

from __future__ import annotations

import numpy as np

RECONSTRUCTION = "reconstruction"  # the column's name in metrics.json and the report
BATCH = 32  # slices encoded and decoded at once: a batch of 128x128 slices holds well under 1 GB of activations


def reconstruct(vae, images: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
    """(N, S, S) slices in [0, 1] -> their VAE reconstructions (N, S, S) float32, without gradients.

    The posterior mean, not a sample: the latents the LDM is trained on are cached the same way
    (training/cache.py), so this is exactly the image a perfect diffusion model would decode."""
    import torch

    from dallebrain.models.vae import decode_latents, encode_images

    images = np.asarray(images, dtype=np.float32)
    out = np.empty_like(images)
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start:start + batch_size])[:, None]
            out[start:start + len(x)] = decode_latents(vae, encode_images(vae, x))[:, 0].float().cpu().numpy()
    return out


def reconstruct_reference(vae, heldout: np.ndarray, diversity: list[dict], pipe=None,
                          contrasts: list[str] | None = None) -> np.ndarray:
    """The held-out slices' reconstructions; each diversity item gets its real slices' reconstructions under
    item["synthetic"][RECONSTRUCTION] (the VAE should keep the real spread of different subjects).

    With `pipe` (and the held-out slices' `contrasts`), a reconstruction loses the decoder's halo wherever the
    pipeline's own slices of that contrast do (`Text2MRIPipeline.trims`, models/brain_outline.py): the column is
    what the pipeline would give for a perfect latent, and its decoding includes the trim."""
    from dallebrain.data.prompts import parse_prompt

    def trimmed(images: np.ndarray, of: list[str | None]) -> np.ndarray:
        rows = np.array([pipe is not None and pipe.trims(c) for c in of], dtype=bool)
        if rows.any():
            images[rows] = pipe.brain_outline.trim(images[rows])
        return images

    for item in diversity:  # a diversity item's real slices share its prompt's contrast
        item["synthetic"][RECONSTRUCTION] = trimmed(reconstruct(vae, item["real"]),
                                                    [parse_prompt(item["prompt"]).modality] * len(item["real"]))
    return trimmed(reconstruct(vae, heldout), list(contrasts) if contrasts is not None else [None] * len(heldout))
