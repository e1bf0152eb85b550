"""The evaluation report's figures, each a PNG (bytes) drawn from the report data (report_data.ReportData) and,
where a figure quotes numbers, metrics.json."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np

COLOURS = {"real": "#1f77b4", "floor": "#7f7f7f", "ldm": "#d62728", "unclip": "#2ca02c", "reconstruction": "#9467bd",
           "cohort (train)": "#bbbbbb"}


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _short(prompt: str, width: int = 38, lines: int = 3) -> str:
    wrapped = textwrap.wrap(prompt, width)
    return "\n".join(wrapped[:lines]) + (" ..." if len(wrapped) > lines else "")


def _show(ax, image, title: str | None = None, fontsize: float = 7) -> None:
    ax.imshow(np.asarray(image, dtype=np.float32), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def fig_pairs(data, rows: int = 8) -> bytes:
    """Real held-out slice beside the synthetic slice(s) made from its caption."""
    import matplotlib.pyplot as plt

    routes = list(data.synthetic)
    rows = min(rows, len(data.prompts))
    picks = np.linspace(0, len(data.prompts) - 1, rows).round().astype(int)
    cols = 1 + len(routes)
    fig, axes = plt.subplots(rows, cols + 1, figsize=(2.0 * cols + 3.2, 2.0 * rows + 0.4), layout="constrained",
                             gridspec_kw={"width_ratios": [1.6] + [1] * cols}, squeeze=False)
    for r, i in enumerate(picks):
        axes[r, 0].axis("off")
        axes[r, 0].text(0, 0.5, _short(data.prompts[i], 36, 5), fontsize=7, va="center", ha="left")
        _show(axes[r, 1], data.real[i], f"real ({data.split})" if r == 0 else None, 9)
        for c, route in enumerate(routes):
            _show(axes[r, 2 + c], data.synthetic[route][i], route if r == 0 else None, 9)
    fig.suptitle("Held-out real slices and synthetic slices from their captions", fontsize=10)
    return _png(fig)


def fig_diversity(data) -> bytes | None:
    """Per prompt: several synthetic samples per route, and real slices of other subjects at that position."""
    import matplotlib.pyplot as plt

    if not data.diversity:
        return None
    routes = list(data.synthetic)
    k = max(max(len(item["real"]) for item in data.diversity),
            max(len(v) for item in data.diversity for v in item["synthetic"].values()))
    rows = len(data.diversity) * (1 + len(routes))
    fig, axes = plt.subplots(rows, k + 1, figsize=(1.6 * k + 3.0, 1.6 * rows + 0.4), layout="constrained",
                             gridspec_kw={"width_ratios": [1.8] + [1] * k}, squeeze=False)
    r = 0
    for item in data.diversity:
        for label, images in [("real, other subjects", item["real"]),
                              *[(route, item["synthetic"][route]) for route in routes]]:
            axes[r, 0].axis("off")
            text = (_short(item["prompt"], 30) + "\n\n" if label.startswith("real") else "") + label
            axes[r, 0].text(0, 0.5, text, fontsize=6.5, va="center", ha="left")
            for c in range(k):
                if c < len(images):
                    _show(axes[r, 1 + c], images[c])
                else:
                    axes[r, 1 + c].axis("off")
            r += 1
    fig.suptitle("Diversity: samples of one prompt vs real slices of different subjects", fontsize=10)
    return _png(fig)


def fig_histograms(data, metrics: dict) -> bytes:
    """Brain-intensity histograms per contrast."""
    import matplotlib.pyplot as plt

    from dallebrain.evaluation.metrics import BRAIN_THRESHOLD, intensity_histogram

    modality = np.asarray(data.modality)
    groups = ["all", *dict.fromkeys(modality.tolist())]
    sets = {f"real ({data.split})": data.real, "real (train)": data.floor, **data.synthetic}
    colours = [COLOURS["real"], COLOURS["floor"], *[COLOURS.get(r, "k") for r in data.synthetic]]
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 2.8), squeeze=False)
    bins = 48
    centres = BRAIN_THRESHOLD + (np.arange(bins) + 0.5) * (1 - BRAIN_THRESHOLD) / bins
    for ax, group in zip(axes[0], groups, strict=True):
        mask = np.ones(len(modality), bool) if group == "all" else modality == group
        for (name, images), colour in zip(sets.items(), colours, strict=True):
            ax.plot(centres, intensity_histogram(images[mask], bins), color=colour, label=name,
                    lw=2 if name.startswith("real (") and "train" not in name else 1.2,
                    ls="--" if "train" in name else "-")
        title = group
        for route in data.synthetic:
            d = metrics["columns"][route]["grey_levels"].get(group)
            if d:
                title += f"\n{route}: W1 {d['wasserstein1']:.3f}, JS {d['jensen_shannon']:.3f}"
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("intensity (brain pixels)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].set_ylabel("fraction of brain pixels", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def fig_glcm(data) -> bytes:
    """Box plots of the GLCM features at distance 1 (all distances are in metrics.json)."""
    import matplotlib.pyplot as plt

    from dallebrain.evaluation.metrics import GLCM_PROPERTIES, glcm_feature_names

    names = glcm_feature_names()
    sets = {f"real ({data.split})": data.glcm["real"], "real (train)": data.glcm["floor"],
            **{r: data.glcm[r] for r in data.synthetic}}
    colours = [COLOURS["real"], COLOURS["floor"], *[COLOURS.get(r, "k") for r in data.synthetic]]
    fig, axes = plt.subplots(1, len(GLCM_PROPERTIES), figsize=(2.4 * len(GLCM_PROPERTIES), 2.8))
    for ax, prop in zip(axes, GLCM_PROPERTIES, strict=True):
        j = names.index(f"{prop}_d1")
        box = ax.boxplot([v[:, j] for v in sets.values()], patch_artist=True, widths=0.6)
        for patch, colour in zip(box["boxes"], colours, strict=True):
            patch.set_facecolor(colour)
            patch.set_alpha(0.6)
        ax.set_xticks(range(1, len(sets) + 1), list(sets), rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{prop} (d=1)", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return _png(fig)


def fig_latent(data) -> bytes:
    """2-D maps of the embeddings: PCA fitted on the real slices, and t-SNE of all of them."""
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    names = ["real", *data.synthetic]
    embeds = [np.asarray(data.latent[n], dtype=np.float64) for n in names]
    labels = np.concatenate([[n] * len(e) for n, e in zip(names, embeds, strict=True)])
    contrast = np.concatenate([data.modality] * len(names))
    both = np.concatenate(embeds)
    pca = PCA(n_components=2).fit(embeds[0])
    maps = {"PCA (fitted on real)": pca.transform(both)}
    if len(both) >= 8:
        perplexity = float(min(30, max(2, (len(both) - 1) / 3)))
        maps["t-SNE"] = TSNE(2, perplexity=perplexity, init="pca", random_state=0).fit_transform(both)
    markers = {"T1w": "o", "T2w": "s", "PDw": "^", "FLAIR": "D"}
    fig, axes = plt.subplots(1, len(maps), figsize=(5.2 * len(maps), 4.2), squeeze=False)
    for ax, (title, xy) in zip(axes[0], maps.items(), strict=True):
        for name in names:
            for m, marker in markers.items():
                sel = (labels == name) & (contrast == m)
                if sel.any():
                    ax.scatter(xy[sel, 0], xy[sel, 1], s=22, marker=marker, alpha=0.75,
                               color=COLOURS.get(name, "k"), edgecolors="none",
                               label=f"{'real ' + data.split if name == 'real' else name}, {m}")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, -1].legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    space = "Brain-CLIP image" if data.latent_space == "brain_clip" else "evaluation-encoder"
    fig.suptitle(f"{space} embeddings: colour = set, marker = contrast", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def fig_nearest(data) -> bytes:
    """Per set, the slices closest to a training slice (smallest relative distance), beside that slice."""
    import matplotlib.pyplot as plt

    sets = list(data.nn_pairs)
    k = max(len(v) for v in data.nn_pairs.values())
    fig, axes = plt.subplots(len(sets), 2 * k, figsize=(1.9 * 2 * k, 2.3 * len(sets) + 0.4), layout="constrained",
                             squeeze=False)
    for r, name in enumerate(sets):
        label = f"real {data.split}" if name == "real" else name
        for c in range(k):
            if c >= len(data.nn_pairs[name]):
                axes[r, 2 * c].axis("off")
                axes[r, 2 * c + 1].axis("off")
                continue
            pair = data.nn_pairs[name][c]
            _show(axes[r, 2 * c], pair["query"], f"{label}\nrel. dist {pair['relative_distance']:.2f}", 7)
            _show(axes[r, 2 * c + 1], pair["train"], f"nearest train\ncorr {pair['similarity']:.3f}", 7)
    fig.suptitle("Closest pairs to the training set (band-pass pixel correlation)", fontsize=10)
    return _png(fig)


def fig_age(data, metrics: dict) -> bytes:
    """Brain fraction relative to the cohort mean at the same position, against (prompted) age."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for name, (ages, rel) in data.age_points.items():
        ages, rel = np.asarray(ages, dtype=float), np.asarray(rel, dtype=float)
        ok = np.isfinite(ages) & np.isfinite(rel)
        colour = COLOURS.get(name, COLOURS["real"] if name.startswith("real") else "k")
        jitter = np.random.default_rng(0).uniform(-0.6, 0.6, ok.sum())
        ax.scatter(ages[ok] + jitter, rel[ok], s=8 if name.startswith("cohort") else 16, alpha=0.5,
                   color=colour, label=name, edgecolors="none")
        if ok.sum() >= 3 and np.ptp(ages[ok]) >= 1:
            slope, intercept = np.polyfit(ages[ok], rel[ok], 1)
            xs = np.array([ages[ok].min(), ages[ok].max()])
            ax.plot(xs, intercept + slope * xs, color=colour, lw=2,
                    label=f"{name}: {slope * 1000:+.1f} %/decade")
    ax.axhline(1.0, color="k", lw=0.5, ls=":")
    ax.set_xlabel("age (years; prompted age for synthetic slices)", fontsize=8)
    ax.set_ylabel("brain fraction / cohort mean\nat the same position", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return _png(fig)


def draw_figures(metrics: dict, data) -> dict[str, bytes | None]:
    """{name: PNG} of every figure, in report order (None where there is nothing to draw)."""
    import matplotlib

    matplotlib.use("Agg")
    return {"pairs": fig_pairs(data), "diversity": fig_diversity(data), "histograms": fig_histograms(data, metrics),
            "glcm": fig_glcm(data), "latent": fig_latent(data), "nearest": fig_nearest(data),
            "age": fig_age(data, metrics)}


def write_figures(folder: str | Path, figures: dict[str, bytes | None]) -> None:
    """figures/NAME.png for each figure drawn, each through a temporary name."""
    from dallebrain.data.io import atomic_path

    for name, png in figures.items():
        if png is not None:
            with atomic_path(Path(folder) / f"{name}.png") as tmp:
                tmp.write_bytes(png)
