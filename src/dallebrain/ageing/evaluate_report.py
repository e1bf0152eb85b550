"""The files of an `evaluate-ageing` run, each written through a temporary file: ageing_pairs.csv (every pair
and method), ageing_examples.png, ageing_report.md (one table per gap, the issue's targets) and, last,
ageing_report.json (every number and the settings; its presence marks a finished report)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

REPORT_JSON, REPORT_MD = "ageing_report.json", "ageing_report.md"
PAIRS_CSV, EXAMPLES_PNG = "ageing_pairs.csv", "ageing_examples.png"
TARGET_GAP = "10"  # the targets are for 10-year predictions
TARGETS = {  # name -> (metric, bound, "min" or "max"), judged on the network's numbers
    "SSIM to the true follow-up (10 y)": ("ssim", 0.93, "min"),
    "ventricle-fraction error / true change (10 y)": ("ventricle_change_error", 0.30, "max"),
    "identity retrieval (10 y)": ("identity_rate", 0.95, "min"),
}
COLUMNS = [("ssim", "SSIM", 3), ("psnr", "PSNR dB", 1), ("ventricles_error", "ventricle frac. err", 4),
           ("gm_error", "GM frac. err", 4), ("wm_error", "WM frac. err", 4),
           ("ventricle_change_error", "ventricle err / change", 2), ("identity_rate", "identity", 2),
           ("pairs", "pairs", 0)]


def _clean(obj):
    """NaN and infinities as null (JSON has no NaN), numpy scalars as Python ones."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _number(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if digits else str(int(value))


def targets(report: dict) -> list[dict]:
    """Each issue target with the network's value and whether it is met (SSIM must also beat the copy)."""
    metrics = report["metrics"]
    network, copy = metrics.get("network", {}).get(TARGET_GAP), metrics.get("copy", {}).get(TARGET_GAP)
    out = []
    for name, (metric, bound, kind) in TARGETS.items():
        value = network.get(metric) if network else None
        met = value is not None and math.isfinite(value) and (value >= bound if kind == "min" else value <= bound)
        if metric == "ssim" and met:
            met = copy is not None and value > copy["ssim"]
        out.append({"target": name, "bound": bound, "kind": kind, "value": value, "met": bool(met)})
    share = report["sequences"]["share"]
    out.append({"target": "monotone ventricle sequences (share of people)", "bound": 0.95, "kind": "min",
                "value": share, "met": bool(math.isfinite(share) and share >= 0.95)})
    return out


def _table(metrics: dict, gap: str) -> list[str]:
    lines = ["| method | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    for method, by_gap in metrics.items():
        if gap in by_gap:
            row = by_gap[gap]
            lines.append(f"| {method} | " + " | ".join(_number(row.get(k), d) for k, _, d in COLUMNS) + " |")
    return lines


def _gaps(metrics: dict) -> list[str]:
    gaps = {g for by_gap in metrics.values() for g in by_gap if g != "all"}
    return ["all", *sorted(gaps, key=int)]


def markdown(report: dict) -> str:
    held = report["held_out"]
    lines = ["# Ageing evaluation", "",
             f"{held['people']} held-out people ({'/'.join(held['splits'])}), {held['pairs']} first-session -> "
             f"follow-up pairs; model: {report['model']['folder']}. Tissue fractions are the tissue judge's; "
             "'ventricle err / change' is mean |v_pred - v_true| / mean |v_true - v_source| over axial and coronal "
             "slices showing the ventricles (copy scores 1 by construction). Identity: the prediction's nearest "
             "true follow-up (MSE) at the same position and session is its own person's; the copy baseline scores "
             "high too, since a person's anatomy differs from another's far more than from its own older self.", ""]
    for gap in _gaps(report["metrics"]):
        lines += [f"## {'All gaps' if gap == 'all' else gap + ' years'}", "", *_table(report["metrics"], gap), ""]
    if report.get("sdedit_subset"):
        lines += ["## Every method on sdedit's pairs only (all gaps)", "", *_table(report["sdedit_subset"], "all"), ""]
    seq = report["sequences"]
    lines += ["## Monotone sequences", "",
              f"{seq['monotone']} of {seq['people']} people: judged ventricle pixels over the first session's "
              f"axial T1w slices through the ventricles never fall (tolerance {seq['tolerance']:.1%} of the first) "
              "from the source age to +30 years in 5-year steps (network); in "
              f"{seq['grew']} of them the ventricles grew at all (a network that changes nothing is monotone too).",
              "",
              "## Targets (the network)", "", "| target | bound | value | met |", "|---|---|---|---|"]
    for t in targets(report):
        bound = f"{'>=' if t['kind'] == 'min' else '<='} {t['bound']:g}"
        lines.append(f"| {t['target']} | {bound} | {_number(t['value'], 3)} | {'yes' if t['met'] else 'no'} |")
    lines += ["", f"{report['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def example_rows(per_pair, n: int):
    """One pair per example person (the first n by id): axial T1w where there is one, the longest gap, the slice
    showing most ventricle (where ageing shows)."""
    rows = per_pair[per_pair["method"] == "network"]
    people = sorted(rows["subject_id"].unique())[:n]
    picked = []
    for person in people:
        mine = rows[rows["subject_id"] == person]
        preferred = mine[(mine["orientation"] == "axial") & (mine["modality"] == "T1w")]
        mine = preferred if len(preferred) else mine
        mine = mine[mine["gap"] == mine["gap"].max()]
        picked.append(mine.loc[mine["ventricles_source"].idxmax()])
    return picked


def examples_figure(path: Path, rows: list, context: dict) -> None:
    """baseline / true follow-up / network / copy / |network - truth| / |copy - truth| per example person."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from dallebrain.ageing.evaluate_methods import network_predictions
    from dallebrain.ageing.pairs import load_images
    from dallebrain.data.io import atomic_path

    titles = ["baseline", "true follow-up", "network", "copy", "|network - true|", "|copy - true|"]
    fig, axes = plt.subplots(len(rows), len(titles), figsize=(2 * len(titles), 2.1 * len(rows)), squeeze=False)
    for r, (ax_row, row) in enumerate(zip(axes, rows, strict=True)):
        images, index = load_images(context["data"], [row["source_image_path"], row["target_image_path"]])
        source, truth = images[index[row["source_image_path"]]], images[index[row["target_image_path"]]]
        network = network_predictions(context["net"], source[None], pd.DataFrame([row]))[0]
        top = max(float(np.abs(network - truth).max()), float(np.abs(source - truth).max()), 1e-6)
        panels = [source, truth, network, source, np.abs(network - truth), np.abs(source - truth)]
        for i, (ax, image) in enumerate(zip(ax_row, panels, strict=True)):
            ax.imshow(image, cmap="gray" if i < 4 else "magma", vmin=0, vmax=1 if i < 4 else top)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(titles[i] if r == 0 else "", fontsize=8)
        ax_row[0].set_ylabel(f"{row['subject_id']}\n{row['modality']} {row['orientation']} {row['slice_mm']:g} mm\n"
                             f"{row['source_age']:.0f} -> {row['target_age']:.0f} y", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_report(out: Path, report: dict, per_pair, context: dict, n_examples: int) -> None:
    """Every output, the JSON last (an interrupted run leaves no report that looks finished)."""
    from dallebrain.data.io import atomic_path, write_json_atomic, write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / PAIRS_CSV) as tmp:
        per_pair.to_csv(tmp, index=False)
    if n_examples:
        examples_figure(out / EXAMPLES_PNG, example_rows(per_pair, n_examples), context)
    report["targets"] = targets(report)
    write_text_atomic(out / REPORT_MD, markdown(report))
    write_json_atomic(out / REPORT_JSON, _clean(report))
