"""The report's tables of metrics.json's "attributes" and "anatomy" (anatomy.py): (title, header, rows, note)
each, written as Markdown into summary.md and as HTML into report.html."""

from __future__ import annotations

from dallebrain.evaluation.formatting import fmt


def attribute_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """Per attribute and judge: real ceiling, each route, chance side by side."""
    routes = [c for c in metrics["columns"] if c != "real"]
    header = ["attribute", "judge", "slices", "measure", f"real {metrics['settings']['split']} (ceiling)", *routes,
              "chance", "real slices"]
    rows = [[r["attribute"], r["judge"], r["slices"], f"{r['measure']} ({r['better']} is better)", fmt(r["real"]),
             *[fmt(r["synthetic"].get(route)) for route in routes], fmt(r["chance"]), fmt(r["n"])]
            for r in metrics.get("attributes", [])]
    return header, rows


def anatomy_tables(metrics: dict) -> list[tuple[str, list[str], list[list[str]], str]]:
    anatomy = metrics.get("anatomy")
    if not anatomy:
        return []
    split = metrics["settings"]["split"]
    tables = [_head_size(anatomy["head_size"], split)]
    if "bias_mm" in (anatomy.get("level_judge") or {}).get("real", {}):
        tables.append(_level_error(anatomy["level_judge"], split))
    if "tissue" in anatomy:
        tables += [_tissue(anatomy["tissue"], split), _ventricles(anatomy, split)]
    return tables


def _label(name: str, split: str) -> str:
    return {"real": f"real {split}", "cohort_train": "cohort (train)",
            "heldout_split": f"real, whole {split} split"}.get(name, name)


def _head_size(sizes: dict, split: str):
    header = ["slices", "men / women (brain area)", "men", "women", "vs real (%)", "vs cohort (%)"]
    rows = [[_label(name, split), fmt(s["ratio"]), fmt(s["men"]), fmt(s["women"]), fmt(s.get("vs_real_percent")),
             fmt(s.get("vs_cohort_percent"))] for name, s in sizes.items()]
    note = ("Brain-mask area of each slice over the train cohort's mean at the same contrast, plane and level, men's "
            "mean over women's; synthetic slices take the sex their prompt asked. Target: within 3 % of real.")
    return "Head size by sex", header, rows, note


def _level_error(level: dict, split: str):
    from dallebrain.evaluation.anatomy import LEVEL_BAND_MM, LEVEL_FAR_MM, LEVEL_NEAR_MM

    header = ["slices", "MAE (mm)", "mean signed error (mm)", f"MAE, each plane's {LEVEL_BAND_MM:g} mm band's median "
              "error removed", f"within {LEVEL_NEAR_MM:g} mm", f"beyond {LEVEL_FAR_MM:g} mm", "their share of the MAE",
              "slices judged"]
    rows = [[_label(name, split), fmt(e["mae"]), fmt(e["bias_mm"]), fmt(e.get("scatter_mae")), fmt(e["within_near"]),
             fmt(e["beyond_far"]), fmt(e["far_share_of_error"]), fmt(e["n"])]
            for name, e in level.items() if name != "chance"]
    note = ("The level judge's error (real slices against their true level, synthetic ones against their prompt's; "
            "sagittal as |x|), taken apart: the mean signed error is where slices land on average, which a "
            "correction of the prompt (the model's level map) can move; with each plane and band of asked levels "
            "given its own median error back (fitted on these slices: no such shift does better), what is left "
            "is scatter, draws that land elsewhere, which only a model that holds the level tighter removes.")
    return "Slice level error: bias and scatter", header, rows, note


def _tissue(tissue: dict, split: str):
    """Per contrast and fraction: the judge against the labels on real slices, then each route against real."""
    routes = list(tissue["paired_with_real"])
    labels = tissue.get("judge_on_real_vs_labels")
    header = ["contrast", "fraction", f"real {split} mean", *[f"{r} mean" for r in routes]]
    header += ["judge vs labels MAE (real)"] if labels else []
    for r in routes:
        header += [f"{r} vs real MAE", f"{r} vs real r"]
    header.append("pairs")
    first = tissue["paired_with_real"][routes[0]] if routes else {}
    rows = []
    for group, by_fraction in first.items():
        for fraction, cell in by_fraction.items():
            row = [group, fraction]
            row += [fmt(tissue["mean_fraction"][name][fraction]) if group == "all" else ""
                    for name in ("real", *routes)]
            row += [fmt(labels[group][fraction]["mae"])] if labels else []
            for r in routes:
                paired = tissue["paired_with_real"][r][group][fraction]
                row += [fmt(paired["mae"]), fmt(paired["pearson_r"])]
            rows.append([*row, fmt(cell["n"])])
    note = ("Tissue judge fractions of the brain area (csf: outside the lateral ventricles). Each synthetic slice is "
            "paired with the real slice whose caption was its prompt: mean absolute difference and Pearson r over "
            "the pairs. 'judge vs labels' is the judge's own error on real slices: differences below it are noise.")
    return "Tissue fractions: synthetic against real", header, rows, note


def _ventricles(anatomy: dict, split: str):
    low, high = anatomy["ventricle_band_mm"]
    header = ["slices", "Pearson r (ventricle fraction, age)", "slices in the band"]
    rows = [[_label(name, split), fmt(v["pearson_r"]), fmt(v["n"])]
            for name, v in anatomy["ventricles_vs_age"].items()]
    note = (f"Axial slices at z {low:g}-{high:g} mm (through the lateral ventricles): the judged ventricle fraction "
            "against age (synthetic: the age the prompt asked).")
    return "Ventricles against age", header, rows, note


def markdown(title: str, header: list[str], rows: list[list[str]], note: str = "") -> list[str]:
    lines = ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + (["", note] if note else [])


def summary_lines(metrics: dict) -> list[str]:
    """summary.md's attribute and anatomy sections, with the notes on what was skipped."""
    header, rows = attribute_rows(metrics)
    lines = markdown("Attributes: real ceiling, synthetic, chance", header, rows) if rows else []
    for table in anatomy_tables(metrics):
        lines += markdown(*table)
    notes = metrics.get("anatomy", {}).get("notes", [])
    return lines + ([""] + [f"- note: {n}" for n in notes] if notes else [])


def html_section(metrics: dict, table_html) -> str:
    """report.html's section; `table_html(header, rows, left)` is the report's table writer."""
    import html

    header, rows = attribute_rows(metrics)
    parts = ["<h2>Attributes: real ceiling, synthetic, chance</h2>",
             "<p class='note'>Real held-out slices judged against their truth (the ceiling), synthetic slices "
             "against what their prompt asked, chance ignoring the image (train majority / mean).</p>",
             table_html(header, rows, 4)]
    for title, header, rows, note in anatomy_tables(metrics):
        parts += [f"<h2>{html.escape(title)}</h2>", f"<p class='note'>{html.escape(note)}</p>",
                  table_html(header, rows, 2 if title.startswith("Tissue") else 1)]
    parts += [f"<p class='warn'>note: {html.escape(n)}</p>" for n in metrics.get("anatomy", {}).get("notes", [])]
    return "\n".join(parts)
