"""The anomaly benchmark's report: summary.md (tables and the issue's targets, met or missed), report.html
(the same tables and overlays of example slices, every figure embedded) and metrics.json."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from dallebrain.anomaly.methods import BASELINES, DIFFUSION_METHODS

COLUMNS = (("Dice @ val thr", "dice"), ("best Dice", "dice_best"), ("AUPRC", "auprc"), ("AUROC", "auroc"),
           ("slice AUROC", "slice_auroc"))
DICE_TARGETS = {"tumour": 0.6, "wmh": 0.4, "ms": 0.4}
SLICE_AUROC_TARGET = 0.9
GROUPS = (("by_type", "Per lesion type"), ("by_size", "Per lesion size (area in the slice)"),
          ("by_contrast", "Per contrast"))


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def overall_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    header = ["method", *[c for c, _ in COLUMNS], "healthy px > thr", "healthy slices flagged", "seconds"]
    rows = []
    for name, m in metrics["methods"].items():
        o, h = m["overall"], m["healthy"]
        rows.append([name, *[fmt(o[k]) for _, k in COLUMNS], fmt(h["pixel_fpr"]),
                     fmt(h["slices_over_slice_threshold"]), f"{m['seconds']:.0f}"])
    return header, rows


def group_rows(metrics: dict, key: str) -> tuple[list[str], list[list[str]]]:
    header = [key.removeprefix("by_"), "slices", "method", *[c for c, _ in COLUMNS]]
    groups = sorted({g for m in metrics["methods"].values() for g in m[key]})
    rows = []
    for g in groups:
        for name, m in metrics["methods"].items():
            if g in m[key]:
                r = m[key][g]
                rows.append([g, str(r["n_slices"]), name, *[fmt(r[k]) for _, k in COLUMNS]])
    return header, rows


def target_rows(metrics: dict) -> list[list[str]]:
    """The issue's targets against the best diffusion method of each row."""
    methods = metrics["methods"]
    diffusion = [m for m in methods if m in DIFFUSION_METHODS]
    baselines = [m for m in methods if m in BASELINES]
    rows = []
    if not diffusion:
        return rows
    for kind, target in DICE_TARGETS.items():
        values = [methods[m]["by_type"].get(kind, {}).get("dice") for m in diffusion]
        best = max((v for v in values if v is not None), default=None)
        rows.append([f"Dice at val threshold, {kind}", f">= {target}", fmt(best), _met(best, target)])
    best_slice = max(methods[m]["overall"]["slice_auroc"] for m in diffusion)
    rows.append(["slice-level AUROC", f">= {SLICE_AUROC_TARGET}", fmt(best_slice), _met(best_slice,
                                                                                        SLICE_AUROC_TARGET)])
    if baselines:
        for kind in sorted({k for m in diffusion for k in methods[m]["by_type"]}):
            top = max(methods[m]["by_type"][kind]["auprc"] for m in diffusion)
            base = max(methods[b]["by_type"].get(kind, {}).get("auprc", float("nan")) for b in baselines)
            rows.append([f"diffusion beats baselines (AUPRC), {kind}", f"> {fmt(base)}", fmt(top),
                         "met" if top > base else "missed"])
    return rows


def _met(value, target) -> str:
    return "n/a" if value is None or not np.isfinite(value) else ("met" if value >= target else "missed")


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def summary_markdown(metrics: dict) -> str:
    s = metrics["settings"]
    parts = [f"# Anomaly detection on {s['data']}",
             f"Lesions: {s['lesion_source_used']}; subjects fit/val/test {s['subjects']}; slices: "
             f"{s['n_fit']} fit, {s['n_val']} val, {s['n_healthy_test']} healthy test, {s['n_lesion_test']} lesion "
             f"test; thresholds at {s['fpr']} false-positive rate of healthy validation brain pixels; model "
             f"{s['model_hash'][:12]}.", "", _markdown(*overall_rows(metrics))]
    for key, title in GROUPS:
        parts += ["", f"## {title}", "", _markdown(*group_rows(metrics, key))]
    targets = target_rows(metrics)
    if targets:
        parts += ["", "## Targets", "", _markdown(["target", "wanted", "best diffusion method", ""], targets)]
    return "\n".join(parts) + "\n"


def _table_html(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def overlay_figure(chosen, runs: dict, kind: str, per_type: int = 2) -> bytes | None:
    """Example slices of one lesion type: input with the true outline, a pseudo-healthy reconstruction, and each
    method's map with its detection (validation threshold) outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dallebrain.anomaly.fitting import threshold_for

    n_healthy = len(chosen.healthy)
    idx = [i for i, c in enumerate(chosen.lesions) if c.lesion_type == kind][:per_type]
    if not idx:
        return None
    recon_method = next((m for m in runs if m in DIFFUSION_METHODS), None) or \
        next((m for m in runs if runs[m].reconstructions is not None), None)
    cols = 2 + len(runs)
    fig, axes = plt.subplots(len(idx), cols, figsize=(1.9 * cols, 2.0 * len(idx)), squeeze=False)
    for r, i in enumerate(idx):
        case = chosen.lesions[i]
        axes[r, 0].imshow(case.image, cmap="gray", vmin=0, vmax=1)
        axes[r, 0].contour(case.mask > 0, levels=[0.5], colors="lime", linewidths=0.7)
        axes[r, 0].set_title(f"{case.attributes.modality} {case.attributes.orientation}", fontsize=7)
        if recon_method:
            axes[r, 1].imshow(runs[recon_method].reconstructions[n_healthy + i], cmap="gray", vmin=0, vmax=1)
            axes[r, 1].set_title(f"pseudo-healthy\n({recon_method})", fontsize=7)
        for c, (name, run) in enumerate(runs.items(), start=2):
            m = run.maps[n_healthy + i]
            thr = threshold_for(run.thresholds, case.attributes.modality)["pixel"]
            axes[r, c].imshow(m, cmap="hot", vmin=0, vmax=max(float(m.max()), thr * 1.5, 1e-6))
            if (m > thr).any():
                axes[r, c].contour(m > thr, levels=[0.5], colors="cyan", linewidths=0.7)
            axes[r, c].set_title(name, fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def report_html(metrics: dict, figures: dict[str, bytes | None]) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>dallebrain anomaly benchmark</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:auto} table{border-collapse:collapse;"
             "font-size:.85em} td,th{border:1px solid #ddd;padding:2px 6px} img{max-width:100%}</style></head><body>",
             "<pre>" + esc(summary_markdown(metrics).split("\n\n")[0]) + "</pre>",
             _table_html(*overall_rows(metrics))]
    for key, title in GROUPS:
        parts += [f"<h2>{title}</h2>", _table_html(*group_rows(metrics, key))]
    targets = target_rows(metrics)
    if targets:
        parts += ["<h2>Targets</h2>", _table_html(["target", "wanted", "best diffusion method", ""], targets)]
    parts.append("<h2>Examples</h2><p>Green: true lesion outline. Cyan: detection at the validation threshold.</p>")
    for kind, png in figures.items():
        if png is not None:
            parts.append(f"<h3>{esc(kind)}</h3><img alt='{esc(kind)}' "
                         f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def json_ready(obj):
    """NaN and infinities (a score with nothing to score) as null: metrics.json stays strict JSON."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (float, np.floating)) and not np.isfinite(obj):
        return None
    return obj


def write_benchmark_report(out: Path, metrics: dict, chosen, runs: dict) -> None:
    """metrics.json, summary.md, report.html and figures/<lesion type>.png, each through a temporary name."""
    from dallebrain.data.io import atomic_path, write_json_atomic, write_text_atomic

    write_json_atomic(out / "metrics.json", json_ready(metrics))
    write_text_atomic(out / "summary.md", summary_markdown(metrics))
    kinds = sorted({c.lesion_type for c in chosen.lesions})
    figures = {k: overlay_figure(chosen, runs, k) for k in kinds}
    for kind, png in figures.items():
        if png is not None:
            with atomic_path(out / "figures" / f"{kind}.png") as tmp:
                tmp.write_bytes(png)
    write_text_atomic(out / "report.html", report_html(metrics, figures))
