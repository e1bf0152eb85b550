"""Where blur comes from (issue 12): the targets on the reconstruction and sharpness columns, checked as met or
missed, and the sharpness table per contrast and plane, for summary.md and report.html."""

from __future__ import annotations

import html

from dallebrain.evaluation.formatting import fmt, lookup
from dallebrain.evaluation.issue_targets import ratio, target, verdict
from dallebrain.evaluation.reconstruction import RECONSTRUCTION

SYNTHETIC_SHARPNESS = 0.8  # synthetic / real sharpness at every contrast
RECONSTRUCTION_SHARPNESS = 0.9  # reconstruction / real sharpness at every contrast
RECONSTRUCTION_FRECHET = 3.0  # reconstruction Frechet distance over the real floor, per feature space
SPACES = {"encoder": "evaluation encoder", "brain_clip": "Brain-CLIP"}


def _worst_contrast(column: dict) -> tuple[float | None, str | None]:
    """The lowest sharpness ratio over the contrasts, and its contrast."""
    ratios = {m: b["ratio"] for m, b in column.get("sharpness", {}).get("by_contrast", {}).items()
              if b["ratio"] is not None}
    if not ratios:
        return None, None
    worst = min(ratios, key=ratios.get)
    return ratios[worst], worst


def blur_targets(columns: dict) -> list[dict]:
    """Issue 12's targets on these columns: every route's sharpness, the reconstruction's Frechet distance per
    feature space and its sharpness; met is None when a value cannot be measured (never counted as met)."""
    out = []
    for name in [c for c in columns if c not in ("real", RECONSTRUCTION)]:
        value, worst = _worst_contrast(columns[name])
        out.append(target(12, f"sharpness {name} / real >= {SYNTHETIC_SHARPNESS} at every contrast", name, value,
                           SYNTHETIC_SHARPNESS, True, f"lowest: {worst}" if worst else ""))
    if RECONSTRUCTION not in columns:
        return out
    recon, real = columns[RECONSTRUCTION], columns["real"]
    for space, label in SPACES.items():
        floor, value = lookup(real, f"realism.{space}.frechet"), lookup(recon, f"realism.{space}.frechet")
        if floor is None and value is None:
            continue
        out.append(target(12, f"reconstruction Frechet distance ({label}) <= {RECONSTRUCTION_FRECHET:g}x the floor",
                           RECONSTRUCTION, ratio(value, floor), RECONSTRUCTION_FRECHET, False,
                           f"{fmt(value)} vs floor {fmt(floor)}"))
    value, worst = _worst_contrast(recon)
    out.append(target(12, f"sharpness reconstruction / real >= {RECONSTRUCTION_SHARPNESS} at every contrast",
                       RECONSTRUCTION, value, RECONSTRUCTION_SHARPNESS, True, f"lowest: {worst}" if worst else ""))
    return out


def targets_table(metrics: dict) -> tuple[list[str], list[list[str]]]:
    header = ["target (issue 12)", "value", "verdict", "detail"]
    return header, [[t["target"], fmt(t["value"]), verdict(t["met"]), t["detail"]] for t in metrics["targets"]]


def sharpness_table(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """Rows: all slices, each contrast, each contrast and plane; a column per set (real: the floor's ratio)."""
    columns = metrics["columns"]
    names = list(columns)
    real = columns["real"]["sharpness"]
    header = ["slices", "real sharpness", *[f"{'real train' if c == 'real' else c} / real" for c in names]]
    groups = [(None, "all")] + [("by_contrast", m) for m in real["by_contrast"]] + \
        [("by_contrast_plane", k) for k in real["by_contrast_plane"]]
    rows = []
    for section, key in groups:
        def block(sharpness: dict, section=section, key=key) -> dict:
            empty = {"ratio": None, "real": None}
            return sharpness.get(key, empty) if section is None else sharpness[section].get(key, empty)

        rows.append([key, fmt(block(real)["real"]), *[fmt(block(columns[c]["sharpness"])["ratio"]) for c in names]])
    return header, rows


def texture_table(metrics: dict) -> tuple[list[str], list[list[str]]] | None:
    """Rows: each contrast; per set its GLCM Frechet distance to the real held-out slices of that contrast and
    its share of brain pixels at the top of the range (clipped white). None for metrics without them."""
    columns = metrics["columns"]
    names = list(columns)
    by_contrast = columns["real"]["texture"].get("by_contrast")
    if not by_contrast:
        return None
    label = {c: "real train" if c == "real" else c for c in names}
    header = ["contrast", *[f"GLCM Frechet, {label[c]}" for c in names],
              *[f"brain at >= 0.99, {label[c]}" for c in names]]
    rows = [[m, *[fmt(lookup(columns[c], f"texture.by_contrast.{m}.frechet")) for c in names],
             *[fmt(lookup(columns[c], f"grey_levels.{m}.top_share")) for c in names]] for m in by_contrast]
    return header, rows


TEXTURE_NOTE = ("GLCM Frechet distance of each contrast's slices alone (18 features z-scored on the real held-out "
                "slices of that contrast), and the share of brain pixels at 0.99 or above: the decoder's output is "
                "clamped to [0, 1], so a set that overshoots has flat white patches with no texture, which the "
                "pooled GLCM distance reads as one huge energy/ASM outlier.")

SHARPNESS_NOTE = ("Sharpness = mean gradient magnitude inside the brain (prepare's brain mask outlined again at "
                  "half its median intensity and eroded 3 px, so the outline does not count, blurred or not) over "
                  "the slice's mean brain intensity (a global gain does not count); a set's mean over the real "
                  "held-out slices' at the same contrast and plane. The real column is the floor (matched train "
                  "slices over held-out ones, about 1); the reconstruction column is the held-out slices through the "
                  "model's VAE (the ceiling a latent generator can reach).")


def summary_lines(metrics: dict) -> list[str]:
    """summary.md's section: the targets, then the sharpness table."""
    if "targets" not in metrics:
        return []
    lines = ["", "## Where blur comes from", ""]
    for header, rows in (targets_table(metrics), sharpness_table(metrics)):
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    lines += [SHARPNESS_NOTE]
    texture = texture_table(metrics)
    if texture:
        header, rows = texture
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows] + ["", TEXTURE_NOTE]
    return lines


def html_section(metrics: dict, table_html) -> str:
    if "targets" not in metrics:
        return ""
    parts = ["<h2>Where blur comes from</h2>", table_html(*targets_table(metrics), left=1),
             table_html(*sharpness_table(metrics), left=1), f"<p class='note'>{html.escape(SHARPNESS_NOTE)}</p>"]
    texture = texture_table(metrics)
    if texture:
        parts += [table_html(*texture, left=1), f"<p class='note'>{html.escape(TEXTURE_NOTE)}</p>"]
    return "\n".join(parts)
