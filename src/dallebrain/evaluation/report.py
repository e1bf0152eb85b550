"""The evaluation report: summary.md (one table), report.html (self-contained: every figure is an embedded
PNG, nothing is fetched) and the figures as PNG files under figures/."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from dallebrain.evaluation import blur_report, issue_targets, spread
from dallebrain.evaluation.anatomy_report import html_section, summary_lines
from dallebrain.evaluation.formatting import fmt, lookup

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
    ("Sharpness", "in-brain gradient energy / real", "sharpness.all.ratio", "about 1"),
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
    "Sharpness": "real train over real held-out at the same contrast and plane (floor, about 1)",
    "Diversity": "real slices of different subjects at the prompt's contrast, orientation and level",
    "Prompt adherence": "real held-out slices against their own captions (ceiling); age trend: the train cohort",
    "Privacy": "real held-out slices against the train split",
}



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


def _sampling_words(settings: dict) -> str:
    """"unipc, 12 steps" for one sampler asked; "20 steps" where the default ("auto") chose per contrast."""
    sampler = settings.get("sampler", {}).get("requested", "auto")
    return f"{settings['steps']} steps" if sampler == "auto" else f"{sampler}, {settings['steps']} steps"


def write_summary(out: Path, metrics: dict) -> Path:
    s = metrics["settings"]
    header, rows = summary_table(metrics)
    lines = [f"# Evaluation of {s['model']}", "",
             f"{s['n']} held-out real slices ({s['split']} split of {s['data']}) and as many synthetic slices per "
             f"route ({', '.join(s['routes'])}; {_sampling_words(s)}, guidance {s['guidance']}, seed {s['seed']} + i).",
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
    lines += issue_targets.summary_lines(metrics)
    lines += blur_report.summary_lines(metrics)
    lines += spread.summary_lines(metrics)
    lines += summary_lines(metrics)
    if metrics.get("warnings"):
        lines += ["", "Warnings:"] + [f"- {w}" for w in metrics["warnings"]]
    from dallebrain.data.io import write_text_atomic

    path = Path(out) / "summary.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


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
    """Write figures/*.png, summary.md and report.html into `out`, each through a temporary name (a killed run
    leaves the earlier file or none); returns the HTML path."""
    from dallebrain.data.io import write_text_atomic
    from dallebrain.evaluation.figures import draw_figures, write_figures

    out = Path(out)
    figures = draw_figures(metrics, data)
    write_figures(out / "figures", figures)
    write_summary(out, metrics)
    path = out / "report.html"
    write_text_atomic(path, report_html(metrics, data, figures))
    return path


def report_html(metrics: dict, data, figures: dict[str, bytes | None]) -> str:
    """The self-contained page: the summary table, then every figure as an embedded PNG with its tables."""
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
        issue_targets.html_section(metrics, _table_html),
        blur_report.html_section(metrics, _table_html),
        spread.html_section(metrics, _table_html),
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
        html_section(metrics, _table_html),
        "<h2>Settings and timing</h2>",
        f"<pre>{esc(_pretty({'settings': s, 'timing': metrics.get('timing', {})}))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _pretty(obj) -> str:
    import json

    return json.dumps(obj, indent=2, default=str)
