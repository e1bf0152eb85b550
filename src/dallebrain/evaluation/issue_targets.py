"""The numeric targets of the realism issue (12) and the prompt issue (11), checked on one evaluation and printed as
met / missed, so that a reader of summary.md sees where a model stands without redoing the arithmetic.

Realism targets compare each synthetic route with the real/real floor of the same report (real train vs real
held-out); with `--draws` each also says in how many draws it is met, since a distance near its bound can be met by
one draw and missed by the next (BENCHMARKS.md, "The student continued, over three draws"). Prompt targets compare
each route with the real ceiling (the same judge on real held-out slices against their own captions). The
"Where blur comes from" targets (sharpness, the VAE's reconstruction) stay in blur_report.py; the same-seed age
sweep targets need their own sampling and are printed by benchmarks/bench_age_sweep.py."""

from __future__ import annotations

import html

from dallebrain.evaluation.formatting import fmt, lookup
from dallebrain.evaluation.reconstruction import RECONSTRUCTION

# (the spread's key, label, path in a column, times the floor at most)
REALISM = (
    ("encoder_frechet", "Frechet distance (evaluation encoder)", "realism.encoder.frechet", 10.0),
    ("brain_clip_frechet", "Frechet distance (Brain-CLIP)", "realism.brain_clip.frechet", 5.0),
    ("grey_wasserstein1", "grey levels Wasserstein-1", "grey_levels.all.wasserstein1", 2.0),
    ("grey_jensen_shannon", "grey levels Jensen-Shannon", "grey_levels.all.jensen_shannon", 2.0),
    ("glcm_frechet", "GLCM texture Frechet distance", "texture.frechet", 2.0),
)
FRECHET = REALISM[:2]  # the feature-space distances, which the unCLIP route is also held to against the LDM's
JUDGED_RATIO = 1.2  # a route's judged age / level error at most this times the judge's error on real slices
OBEYED = 0.95  # contrast and plane read back by the evaluation encoder
HEAD_RATIO_PERCENT = 3.0  # men / women brain area within this of the cohort's own ratio


def target(issue: int, text: str, route: str, value, threshold: float, higher: bool, detail: str = "") -> dict:
    """One target's record: met when value reaches threshold (>= if higher, else <=); None when unmeasured."""
    met = None if value is None else bool(value >= threshold if higher else value <= threshold)
    return {"issue": issue, "target": text, "set": route, "value": value, "threshold": threshold, "met": met,
            "detail": detail}


def ratio(value, floor):
    """value / floor; None when either is missing or the floor is 0."""
    return value / floor if value is not None and floor else None


def _draws_met(column: dict, key: str, floor, times: float) -> str:
    """', met in k of K draws' with --draws (each draw's value over the same floor), else ''."""
    draws = lookup(column, f"spread.{key}.draws")
    if not draws or len(draws) < 2 or not floor:
        return ""
    return f", met in {sum(v / floor <= times for v in draws)} of {len(draws)} draws"


def realism_targets(columns: dict, route: str) -> list[dict]:
    """Issue 12: each distance of `route` at most so many times its real/real floor."""
    real, column = columns["real"], columns[route]
    out = []
    for key, label, path, times in REALISM:
        floor, value = lookup(real, path), lookup(column, path)
        if floor is None and value is None:  # a feature space the model has not (no Brain-CLIP)
            continue
        out.append(target(12, f"{route}: {label} <= {times:g}x the floor", route, ratio(value, floor), times, False,
                           f"{fmt(value)} vs floor {fmt(floor)}" + _draws_met(column, key, floor, times)))
    return out


def unclip_targets(columns: dict) -> list[dict]:
    """Issue 12: the unCLIP route's Frechet distances no worse than the LDM route's (value: unclip / ldm)."""
    if "ldm" not in columns or "unclip" not in columns:
        return []
    out = []
    for _, label, path, _ in FRECHET:
        ldm, unclip = lookup(columns["ldm"], path), lookup(columns["unclip"], path)
        if ldm is None and unclip is None:
            continue
        out.append(target(12, f"unclip: {label} no worse than the ldm route's", "unclip", ratio(unclip, ldm), 1.0,
                           False, f"{fmt(unclip)} vs ldm {fmt(ldm)}"))
    return out


def prompt_targets(columns: dict, anatomy: dict, route: str) -> list[dict]:
    """Issue 11: the judged age and level errors near the judges' own on real slices, contrast and plane obeyed, men's
    and women's brain areas in the cohort's ratio."""
    out = []
    for label, block in (("age error (age judge)", lookup(anatomy, "age_judge.all")),
                         ("slice level error (level judge)", lookup(anatomy, "level_judge"))):
        real, value = lookup(block or {}, "real.mae"), lookup(block or {}, f"{route}.mae")
        out.append(target(11, f"{route}: {label} <= {JUDGED_RATIO:g}x the judge's on real slices", route,
                           ratio(value, real), JUDGED_RATIO, False, f"{fmt(value)} vs real {fmt(real)}"))
    for attribute in ("contrast", "orientation"):
        value = lookup(columns[route], f"adherence.attributes.{attribute}.accuracy")
        out.append(target(11, f"{route}: {attribute} obeyed (evaluation encoder) >= {OBEYED:g}", route, value, OBEYED,
                           True, f"real {fmt(lookup(columns['real'], f'adherence.attributes.{attribute}.accuracy'))}"))
    head = lookup(anatomy, f"head_size.{route}") or {}
    off = head.get("vs_cohort_percent")
    out.append(target(11, f"{route}: brain area men / women within {HEAD_RATIO_PERCENT:g} % of the cohort's ratio",
                       route, None if off is None else abs(off), HEAD_RATIO_PERCENT, False,
                       f"ratio {fmt(head.get('ratio'))}, cohort {fmt(lookup(anatomy, 'head_size.cohort_train.ratio'))}"
                       f", {fmt(off)} %"))
    return out


def issue_targets(columns: dict, anatomy: dict) -> list[dict]:
    """Every synthetic route's realism and prompt targets, then unCLIP against the LDM; met is None where a value
    cannot be measured (a judge not installed, a cohort without demographics), never counted as met."""
    routes = [c for c in columns if c not in ("real", RECONSTRUCTION)]
    out = [t for route in routes for t in realism_targets(columns, route)]
    out += unclip_targets(columns)
    out += [t for route in routes for t in prompt_targets(columns, anatomy, route)]
    return out


def verdict(met) -> str:
    return "n/a" if met is None else ("met" if met else "missed")


def targets_table(metrics: dict) -> tuple[list[str], list[list[str]]] | None:
    targets = metrics.get("issue_targets")
    if not targets:
        return None
    header = ["issue", "target", "value", "verdict", "detail"]
    return header, [[str(t["issue"]), t["target"], fmt(t["value"]), verdict(t["met"]), t["detail"]]
                    for t in targets]


NOTE = ("Value: the route's number over the floor (realism), over the judge's error on real slices (age, level), the "
        "share read back (contrast, plane), or how far men / women lies from the cohort's ratio, in per cent. The "
        "same-seed age sweep targets are printed by benchmarks/bench_age_sweep.py.")


def summary_lines(metrics: dict) -> list[str]:
    table = targets_table(metrics)
    if table is None:
        return []
    header, rows = table
    met = sum(t["met"] is True for t in metrics["issue_targets"])
    return ["", f"## Targets of issues 11 and 12 ({met} of {len(rows)} met)", "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(r) + " |" for r in rows], "", NOTE]


def html_section(metrics: dict, table_html) -> str:
    table = targets_table(metrics)
    if table is None:
        return ""
    met = sum(t["met"] is True for t in metrics["issue_targets"])
    return "\n".join([f"<h2>Targets of issues 11 and 12 ({met} of {len(table[1])} met)</h2>",
                      table_html(*table, left=2), f"<p class='note'>{html.escape(NOTE)}</p>"])
