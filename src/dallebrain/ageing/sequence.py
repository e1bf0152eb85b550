"""`dallebrain age`'s outputs: one slice per age (PNG + NIfTI + JSON, as `generate` writes them), the measured
tissue fractions per age (the tissue judge), a strip figure with the ventricle fraction under each frame, an
animated GIF of the sequence and ageing.json (the whole request). Every file goes through a temporary name."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dallebrain.ageing.source import Source
from dallebrain.data.io import atomic_path, write_json_atomic

STRIP, GIF, SUMMARY = "ageing_strip.png", "ageing.gif", "ageing.json"
GIF_FRAME_MS = 700


def frame_stem(age: float) -> str:
    return f"age-{age:05.1f}".replace(".", "p")  # age-070p0: sorts by age, no dot before the suffix


def parse_ages(text: str) -> list[float]:
    """'30,50,70,90' -> [30.0, 50.0, 70.0, 90.0]; a one-line ValueError for anything else."""
    from dallebrain.ageing.network import AGE_RANGE

    try:
        ages = [float(a) for a in str(text).split(",") if a.strip()]
    except ValueError:
        raise ValueError(f"--ages must be comma-separated years, e.g. 30,50,70,90; got {text!r}") from None
    if not ages:
        raise ValueError("--ages is empty: give years, e.g. 30,50,70,90")
    if any(not np.isfinite(a) or not AGE_RANGE[0] <= a <= AGE_RANGE[1] for a in ages):
        raise ValueError(f"--ages must lie between {AGE_RANGE[0]:g} and {AGE_RANGE[1]:g} years, got {text!r}")
    if len({frame_stem(a) for a in ages}) != len(ages):  # 30 and 30.04 would share the frame age-030p0
        raise ValueError(f"--ages repeats an age (ages are kept to 0.1 year): {text!r}")
    return ages


def output_stems(ages: list[float]) -> list[str]:
    return [frame_stem(a) for a in ages]


def write_sequence(out: Path, source: Source, ages: list[float], frames: np.ndarray, net_record: dict,
                   png16: bool = False) -> dict:
    """Write every output of one sequence; returns the summary written to ageing.json."""
    from dallebrain._version import __version__
    from dallebrain.data.grid import prepared_grid
    from dallebrain.judges.tissue import load_tissue_judge
    from dallebrain.pipelines.output import prompt_warnings, save_outputs

    out.mkdir(parents=True, exist_ok=True)
    fractions = load_tissue_judge().fractions(np.concatenate([source.image[None], frames]))
    per_frame = [{k: float(v[i + 1]) for k, v in fractions.items()} for i in range(len(ages))]
    grid = prepared_grid(frames.shape[-1])
    placement_prompt = source.placement_prompt()
    written = []
    for age, frame, measured in zip(ages, frames, per_frame, strict=True):
        sidecar = {"mode": "ageing", "age": age, "source_age": source.age, "years_from_source": age - source.age,
                   **source.record, "method": "ageing network (direct from the source slice)",
                   "ageing_model": net_record, "tissue_fractions": measured, "dallebrain_version": __version__,
                   "warnings": prompt_warnings(source.record.get("source_prompt", "")), "synthetic": True,
                   "note": "synthetic image; not from any real person"}
        written.append(save_outputs(out, frame_stem(age), frame, sidecar, grid, placement_prompt, png16,
                                    overwrite=True))
    _strip(out / STRIP, source, ages, frames, per_frame)
    _gif(out / GIF, ages, frames)
    summary = {"source": {**source.record, "age": source.age, "orientation": source.orientation,
                          "level_mm": source.level_mm,
                          "tissue_fractions": {k: float(v[0]) for k, v in fractions.items()}},
               "ages": ages, "tissue_fractions": per_frame, "ageing_model": net_record,
               "files": [{k: Path(v).name for k, v in w.items()} for w in written], "strip": STRIP, "gif": GIF}
    write_json_atomic(out / SUMMARY, summary)
    return summary


def _strip(path: Path, source: Source, ages, frames, fractions) -> None:
    """Source then one frame per age, the judged ventricle and grey-matter fractions under each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(ages) + 1
    fig, axes = plt.subplots(1, n, figsize=(1.9 * n, 3.0), squeeze=False)
    panels = [(source.image, f"source, {source.age:g} y"), *((f, f"{a:g} y") for a, f in zip(ages, frames,
                                                                                            strict=True))]
    for ax, (image, title), measured in zip(axes[0], panels, [None, *fractions], strict=True):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if measured is not None:
            ax.set_xlabel(f"ventricles {100 * measured['ventricles']:.1f} %\nGM {100 * measured['gm']:.0f} %",
                          fontsize=8)
    fig.suptitle("Same brain at other ages (ageing network; fractions of the brain area by the tissue judge)",
                 fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _gif(path: Path, ages, frames) -> None:
    from PIL import Image, ImageDraw

    images = []
    for age, frame in zip(ages, frames, strict=True):
        im = Image.fromarray(np.round(np.clip(frame, 0, 1) * 255).astype(np.uint8)).convert("L")
        ImageDraw.Draw(im).text((3, 2), f"{age:g} y", fill=255)
        images.append(im)
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=GIF_FRAME_MS, loop=0)
