"""What an unCLIP variation kept of its source slice: contrast and plane as Brain-CLIP reads them (zero-shot, the
pipeline's own CLIP), level as the level judge reads it on that plane. The source's reading goes into every
variation's sidecar (`source_estimated`), each variation's own beside it (`estimated`) with what matches
(`kept`), so a user sees a variation that drifted to another plane or level without opening it."""

from __future__ import annotations

import numpy as np
import torch

LEVEL_TOLERANCE_MM = 10.0  # a variation "keeps" the level within this (the level judge: 0.3 mm on real slices)


@torch.no_grad()
def describe(clip, images: np.ndarray, embeds: torch.Tensor | None = None) -> list[dict]:
    """Per (H, W) slice in [0, 1]: the contrast and plane Brain-CLIP reads and the level the level judge reads."""
    from dallebrain.judges.level import estimate_levels
    from dallebrain.models.clip_zero_shot import zero_shot

    images = np.asarray(images, dtype=np.float32)
    if embeds is None:
        embeds = clip.encode_image(torch.from_numpy(images)[:, None].to(clip.device)).float()
    contrasts, planes = zero_shot(clip, embeds)
    levels = estimate_levels(images, planes)
    return [{"contrast": c, "orientation": o, "level_mm": round(float(z), 1)}
            for c, o, z in zip(contrasts, planes, levels, strict=True)]


def kept(source: dict, variation: dict) -> dict:
    """Which of the source's readings the variation shares (the level only on the same plane)."""
    same_plane = source["orientation"] == variation["orientation"]
    return {"contrast": source["contrast"] == variation["contrast"], "orientation": same_plane,
            "level": same_plane and abs(source["level_mm"] - variation["level_mm"]) <= LEVEL_TOLERANCE_MM}


def with_readings(chunks, clip, source: dict):
    """The variation passes, each GenerationResult given its images' readings (per_image, for the sidecars)."""
    for result in chunks:
        readings = describe(clip, result.images)
        result.per_image = [{"estimated": r, "kept": kept(source, r)} for r in readings]
        yield result
