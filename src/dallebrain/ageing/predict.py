"""A slice at other ages with the ageing network: every target age predicted straight from the source slice
(never chained through the ages between: errors would add up), on the network's pixel grid."""

from __future__ import annotations

import numpy as np

from dallebrain.ageing.network import AgeingNet, check_ages

BATCH = 32


def age_slices(net: AgeingNet, images, source_ages, target_ages) -> np.ndarray:
    """images [N, H, W] in [0, 1] (prepare's normalisation, MNI grid) at source_ages [N] -> the same slices at
    target_ages [N], float32 in [0, 1], at the input's size."""
    import torch
    from torch.nn import functional

    from dallebrain.judges.tissue import check_images

    array = check_images(images)
    source = check_ages(source_ages, "source ages")
    target = check_ages(target_ages, "target ages")
    if not len(source) == len(target) == len(array):
        raise ValueError(f"{len(array)} images need as many source and target ages "
                         f"(got {len(source)} and {len(target)})")
    size, grid = array.shape[1:], (net.config.image_size,) * 2
    out = []
    with torch.no_grad():
        for start in range(0, len(array), BATCH):
            x = torch.from_numpy(array[start:start + BATCH])[:, None]
            if size != grid:
                x = functional.interpolate(x, size=grid, mode="bilinear", antialias=True)
            y = net(x, source[start:start + BATCH], target[start:start + BATCH])
            if size != grid:
                y = functional.interpolate(y, size=size, mode="bilinear", antialias=True)
            out.append(y[:, 0].clamp(0, 1).numpy())
    return np.concatenate(out).astype(np.float32)


def age_sequence(net: AgeingNet, image, source_age: float, ages) -> np.ndarray:
    """One slice [H, W] at source_age -> [len(ages), H, W], one frame per age (the source age itself included
    if asked for: the network returns the slice nearly unchanged at a zero gap)."""
    ages = list(ages)
    if not ages:
        raise ValueError("give at least one target age")
    image = np.asarray(image, dtype=np.float32)
    return age_slices(net, np.repeat(image[None], len(ages), axis=0), [source_age] * len(ages), ages)
