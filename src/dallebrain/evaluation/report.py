"""The evaluation report: summary.md (one table), report.html (self-contained: every figure is an embedded
PNG, nothing is fetched) and the figures as PNG files under figures/."""

from __future__ import annotations

import base64
import html
import io
import textwrap
from pathlib import Path

import numpy as np

# (section, label, path in a column, what is better) - the rows of the summary table
SUMMARY_ROWS = [
    ("Realism (encoder)", "Frechet distance", "realism.encoder.frechet", "lower"),
    ("Realism (encoder)", "KID", "realism.encoder.kid", "lower"),
    ("Realism (encoder)", "precision", "realism.encoder.precision", "higher"),
    ("Realism (encoder)", "recall", "realism.encoder.recall", "higher"),
    ("Realism (encoder)", "density", "realism.encoder.density", "about 1"),
    ("Realism (encoder)", "coverage", "realism.encoder.coverage", "higher"),
    ("Realism (encoder)", "1-NN accuracy", "realism.encoder.one_nn_accuracy", "as real"),
    ("Realism (Brain-CLIP)", "Frechet distance", "realism.brain_clip.frechet", "lower"),
    ("Realism (Brain-CLIP)", "KID", "realism.brain_clip.kid", "lower"),
    ("Realism (Brain-CLIP)", "precision", "realism.brain_clip.precision", "higher"),
    ("Realism (Brain-CLIP)", "recall", "realism.brain_clip.recall", "higher"),
    ("Realism (Brain-CLIP)", "density", "realism.brain_clip.density", "about 1"),
    ("Realism (Brain-CLIP)", "coverage", "realism.brain_clip.coverage", "higher"),
    ("Realism (Brain-CLIP)", "1-NN accuracy", "realism.brain_clip.one_nn_accuracy", "as real"),
    ("Grey levels", "Wasserstein-1 (brain intensities)", "grey_levels.all.wasserstein1", "lower"),
    ("Grey levels", "Jensen-Shannon (bits)", "grey_levels.all.jensen_shannon", "lower"),
    ("Texture (GLCM)", "radiomics Frechet distance", "texture.frechet", "lower"),
    ("Texture (GLCM)", "mean KS statistic", "texture.ks_mean", "lower"),
    ("Diversity", "MS-SSIM within a prompt", "diversity.ms_ssim", "as real"),
    ("Prompt adherence", "Brain-CLIP score (cosine)", "adherence.clip_score", "as real"),
    ("Prompt adherence", "contrast accuracy", "adherence.attributes.contrast.accuracy", "as real"),
    ("Prompt adherence", "orientation accuracy", "adherence.attributes.orientation.accuracy", "as real"),
    ("Prompt adherence", "slice level MAE (mm)", "adherence.attributes.level_mm.mae", "as real"),
    ("Prompt adherence", "age MAE (years)", "adherence.attributes.age.mae", "as real"),
    ("Prompt adherence", "sex accuracy", "adherence.attributes.sex.accuracy", "as real"),
    ("Prompt adherence", "brain fraction vs age (%/decade)", "age_trend.slope_percent_per_decade", "as real"),
    ("Privacy", "nearest-train correlation (median)", "privacy.pixel.nearest_similarity.median", "as real"),
    ("Privacy", "near-copies (pixels)", "privacy.pixel.near_copies", "0"),
    ("Privacy", "memorisation rate (pixels)", "privacy.pixel.memorisation_rate", "0"),
    ("Privacy", "closer to train than median real (pixels)", "privacy.pixel.closer_than_heldout_median", "about 0.5"),
    ("Privacy", "nearest-train cosine, encoder (median)", "privacy.encoder_embedding.nearest_similarity.median",
     "as real"),
    ("Privacy", "closer to train than median real (encoder)", "privacy.encoder_embedding.closer_than_heldout_median",
     "about 0.5"),
]

REAL_MEANING = {
    "Realism": "real train vs real held-out (floor)",
    "Grey levels": "real train vs real held-out (floor)",
    "Texture": "real train vs real held-out (floor)",
    "Diversity": "real slices of different subjects at the prompt's contrast, orientation and level",
    "Prompt adherence": "real held-out slices against their own captions (ceiling); age trend: the train cohort",
    "Privacy": "real held-out slices against the train split",
}

COLOURS = {"real": "#1f77b4", "floor": "#7f7f7f", "ldm": "#d62728", "unclip": "#2ca02c", "cohort (train)": "#bbbbbb"}


def lookup(column: dict, path: str):
    value = column
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000 or abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.4g}"
    return str(value)


def summary_table(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the summary: a row per metric present in some column."""
    columns = metrics["columns"]
    names = list(columns)
    header = ["section", "metric", "better", *[f"real ({metrics['settings']['split']})" if c == "real" else c
                                               for c in names]]
    rows = []
    for section, label, path, better in SUMMARY_ROWS:
        values = [lookup(columns[c], path) for c in names]
        if all(v is None for v in values):
            continue
        rows.append([section, label, better, *[fmt(v) for v in values]])
    return header, rows


def write_summary(out: Path, metrics: dict) -> Path:
    s = metrics["settings"]
    header, rows = summary_table(metrics)
    lines = [f"# Evaluation of {s['model']}", "",
             f"{s['n']} held-out real slices ({s['split']} split of {s['data']}) and as many synthetic slices per "
             f"route ({', '.join(s['routes'])}; {s['steps']} steps, guidance {s['guidance']}, seed {s['seed']} + i).",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "The `real` column is the reference measured the same way:"]
    lines += [f"- {k}: {v}" for k, v in REAL_MEANING.items()]
    lines += ["- The floor's train slices and the synthetic slices are both matched to the held-out slices, so a "
              "1-NN accuracy below 0.5 is what a perfect generator scores too: compare with the real column."]
    chance = metrics.get("chance", {})
    if chance:
        parts = [f"{k} {fmt(v.get('accuracy', v.get('mae')))}" for k, v in chance.items()]
        lines += [f"- Attribute chance level (train majority / mean): {', '.join(parts)}"]
    if metrics.get("warnings"):
        lines += ["", "Warnings:"] + [f"- {w}" for w in metrics["warnings"]]
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


# --- figures ---------------------------------------------------------------------------------------------------


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


# --- HTML ---------------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; }
.note { color: #555; font-size: 0.9em; } .warn { color: #a15c00; }
"""


def _table_html(header: list[str], rows: list[list[str]], left: int = 3) -> str:
    head = "".join(f"<th class='l'>{html.escape(h)}</th>" if i < left else f"<th>{html.escape(h)}</th>"
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td class='l'>{html.escape(c)}</td>" if i < left else
                                    f"<td>{html.escape(c)}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return "<p class='note'>(not available)</p>"
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _per_contrast_table(metrics: dict) -> str:
    cols = list(metrics["columns"])
    groups = list(metrics["columns"]["real"]["grey_levels"])
    header = ["contrast", "metric", *[("real train vs " + metrics["settings"]["split"]) if c == "real" else c
                                      for c in cols]]
    rows = []
    for g in groups:
        for key, label in (("wasserstein1", "Wasserstein-1"), ("jensen_shannon", "Jensen-Shannon (bits)")):
            rows.append([g, label, *[fmt(lookup(metrics["columns"][c], f"grey_levels.{g}.{key}")) for c in cols]])
    return _table_html(header, rows, left=2)


def _ks_table(metrics: dict) -> str:
    cols = list(metrics["columns"])
    names = list(metrics["columns"]["real"]["texture"]["ks"])
    header = ["GLCM feature", *[("real train vs " + metrics["settings"]["split"]) if c == "real" else c
                                for c in cols]]
    rows = [[f, *[fmt(metrics["columns"][c]["texture"]["ks"][f]) for c in cols]] for f in names]
    return _table_html(header, rows, left=1)


def write_report(out: str | Path, metrics: dict, data) -> Path:
    """Write summary.md, report.html and figures/*.png into `out`; returns the HTML path."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out)
    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    figures = {"pairs": fig_pairs(data), "diversity": fig_diversity(data), "histograms": fig_histograms(data, metrics),
               "glcm": fig_glcm(data), "latent": fig_latent(data), "nearest": fig_nearest(data),
               "age": fig_age(data, metrics)}
    for name, png in figures.items():
        if png is not None:
            (figures_dir / f"{name}.png").write_bytes(png)
    write_summary(out, metrics)

    s = metrics["settings"]
    header, rows = summary_table(metrics)
    chance = metrics.get("chance", {})
    chance_text = ", ".join(f"{k} {fmt(v.get('accuracy', v.get('mae')))}" for k, v in chance.items())
    warnings = "".join(f"<p class='warn'>warning: {html.escape(w)}</p>" for w in metrics.get("warnings", []))
    esc = html.escape
    space = "Brain-CLIP image tower" if data.latent_space == "brain_clip" else \
        "evaluation encoder (the model folder has no clip/)"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>dallebrain evaluation: {esc(Path(s['model']).name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Evaluation of {esc(s['model'])}</h1>",
        f"<p>{s['n']} held-out real slices from the <b>{esc(s['split'])}</b> split of {esc(s['data'])}; one "
        f"synthetic slice per caption and route ({esc(', '.join(s['routes']))}), {s['steps']} denoising steps, "
        f"guidance {s['guidance']}, slice <i>i</i> with seed {s['seed']} + <i>i</i>. Feature spaces: "
        f"{esc(', '.join(s['feature_spaces']))}. The <b>real</b> column is the reference measured the same way: "
        "real train vs real held-out for distances (the floor), real held-out against their own captions for "
        "adherence (the ceiling).</p>",
        warnings,
        "<h2>Summary</h2>", _table_html(header, rows),
        f"<p class='note'>Attribute chance level (train majority class / mean): {esc(chance_text)}. Distances "
        "depend on N: compare columns, not runs of different N. The floor's train slices and the synthetic slices are "
        "both matched to the held-out slices (same position / same caption), so a 1-NN accuracy below 0.5 is what a "
        "perfect generator scores too: compare it with the real column. The brain-fraction slope is n/a when the "
        "held-out slices span less than a year of age.</p>",
        "<h2>Real vs synthetic, per prompt</h2>", _img(figures["pairs"], "real and synthetic pairs"),
        "<h2>Diversity (MS-SSIM)</h2>",
        "<p class='note'>Mean MS-SSIM among samples of one prompt against real slices of different subjects at the "
        "prompt's contrast, orientation and level; much higher than real means mode collapse.</p>",
        _img(figures["diversity"], "diversity montage"),
        "<h2>Grey levels inside the brain</h2>",
        f"<p class='note'>Brain = pixels above {s['brain_threshold']} in real and synthetic slices alike.</p>",
        _img(figures["histograms"], "intensity histograms"), _per_contrast_table(metrics),
        "<h2>Texture (GLCM)</h2>",
        "<p class='note'>Grey-level co-occurrence features at distances 1, 2, 4 px, averaged over 4 angles, of the "
        "brain only (32 levels); KS statistic per feature and a Frechet distance over the z-scored features.</p>",
        _img(figures["glcm"], "GLCM box plots"), _ks_table(metrics),
        "<h2>Latent space</h2>", f"<p class='note'>Embeddings of the {esc(space)}.</p>",
        _img(figures["latent"], "latent map"),
        "<h2>Privacy and memorisation</h2>",
        f"<p class='note'>Each slice against all train slices ({esc(s['privacy_reference'])}). A near-copy has "
        f"{esc(s['near_copy_rule'])}: its nearest training slice is over ten times closer than the next five. "
        "Shown: the closest pairs of each set.</p>",
        _img(figures["nearest"], "nearest training pairs"),
        "<h2>Brain volume against age</h2>",
        "<p class='note'>Brain pixel fraction of each slice over the train cohort's mean at the same contrast, "
        "orientation and level; synthetic slices plotted at their prompted age.</p>",
        _img(figures["age"], "age trend"),
        "<h2>Settings and timing</h2>",
        f"<pre>{esc(_pretty({'settings': s, 'timing': metrics.get('timing', {})}))}</pre>",
        "</body></html>",
    ]
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path


def _pretty(obj) -> str:
    import json

    return json.dumps(obj, indent=2, default=str)
