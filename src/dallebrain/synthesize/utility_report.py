"""What `evaluate-utility` writes: utility.json (every number), utility.md (the table, the train-on-synthetic
ratios and whether adding synthetic slices helped the scarce setting) and utility.png (the same as bars)."""

from __future__ import annotations

from pathlib import Path

from dallebrain.data.io import atomic_path, write_json_atomic, write_text_atomic
from dallebrain.synthesize.utility_settings import SETTINGS

TASK_NAMES = {"contrast": "contrast acc.", "orientation": "plane acc.", "sex": "sex acc.", "age": "age MAE (y)",
              "level_mm": "level MAE (mm)"}
HIGHER_IS_BETTER = {"contrast": True, "orientation": True, "sex": True, "age": False, "level_mm": False}


def ordered(summary: dict) -> list[str]:
    """The settings a summary holds, in SETTINGS order (utility.json stores its keys sorted)."""
    return [name for name in SETTINGS if name in summary["settings"]]


def _cell(entry: dict, accuracy: bool) -> str:
    if entry["mean"] is None:
        return "n/a"
    text = f"{entry['mean']:.1%}" if accuracy else f"{entry['mean']:.1f}"
    if entry.get("sd") is not None:
        text += f" ± {entry['sd']:.1%}" if accuracy else f" ± {entry['sd']:.1f}"
    return text


def table_lines(summary: dict) -> list[str]:
    tasks = list(TASK_NAMES)
    lines = ["| setting | real slices (subjects) | synthetic slices | " + " | ".join(TASK_NAMES.values()) + " |",
             "|---" * (3 + len(tasks)) + "|"]
    for name in ordered(summary):
        s = summary["settings"][name]
        cells = [_cell(s[t], HIGHER_IS_BETTER[t]) for t in tasks]
        lines.append(f"| {name} | {s['real_slices']} ({s['real_subjects']}) | {s['synthetic_slices']} | "
                     + " | ".join(cells) + " |")
    chance = [(f"{summary['chance'][t]:.1%}" if HIGHER_IS_BETTER[t] else f"{summary['chance'][t]:.1f}")
              if summary["chance"][t] is not None else "n/a" for t in tasks]
    lines.append("| chance (train majority / mean) | - | - | " + " | ".join(chance) + " |")
    return lines


# A task counts as learnt from real slices when the real-trained network beats chance on held-out real slices by
# at least this: 5 accuracy points, or a tenth off the chance error.
LEARNT_ACCURACY_MARGIN = 0.05
LEARNT_ERROR_FRACTION = 0.9


def learnable(summary: dict) -> list[str]:
    """Whether each task's network, trained on real slices, beats chance on held-out real slices: a task it does
    not learn from real slices can say nothing about synthetic ones."""
    if "real" not in summary["settings"]:
        return []
    out = []
    for task, name in TASK_NAMES.items():
        real, chance = summary["settings"]["real"][task]["mean"], summary["chance"][task]
        if real is None or chance is None:
            continue
        if HIGHER_IS_BETTER[task]:
            works, shown = real >= chance + LEARNT_ACCURACY_MARGIN, f"{real:.1%} vs chance {chance:.1%}"
        else:
            works, shown = real <= LEARNT_ERROR_FRACTION * chance, f"{real:.1f} vs chance {chance:.1f}"
        out.append(f"- trained on real, {name} on held-out real: {shown}: "
                   + ("learnt" if works else "at chance, so it says nothing about synthetic slices here"))
    return out


def findings(summary: dict) -> list[str]:
    """TSTR ratios (synthetic-only over real-only) and the change synthetic slices make to the scarce setting."""
    s = summary["settings"]
    out = learnable(summary)
    for task in ("contrast", "orientation", "sex") if {"real", "synthetic"} <= set(s) else ():
        real, synth = s["real"][task]["mean"], s["synthetic"][task]["mean"]
        if real and synth is not None:
            out.append(f"- TSTR {TASK_NAMES[task]}: synthetic-only reaches {synth / real:.1%} of real-only "
                       f"({synth:.1%} vs {real:.1%})")
    for task, name in TASK_NAMES.items() if {"scarce", "scarce+synthetic"} <= set(s) else ():
        before, after = s["scarce"][task]["mean"], s["scarce+synthetic"][task]["mean"]
        if before is None or after is None:
            continue
        change = f"{after - before:+.1%}" if HIGHER_IS_BETTER[task] else f"{after - before:+.2f}"
        better = after > before if HIGHER_IS_BETTER[task] else after < before
        verdict = "same" if change.strip("+-0.%") == "" else "better" if better else "not better"
        out.append(f"- scarce real ({s['scarce']['real_subjects']} subject(s)) + synthetic, {name}: {verdict} "
                   f"({change})")
    return out


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    settings = ordered(summary)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    for ax, tasks, unit in ((axes[0], ("contrast", "orientation", "sex"), "accuracy on real test slices"),
                            (axes[1], ("age", "level_mm"), "mean absolute error on real test slices")):
        width = 0.8 / len(settings)
        for i, setting in enumerate(settings):
            entries = [summary["settings"][setting][t] for t in tasks]
            means = [e["mean"] if e["mean"] is not None else np.nan for e in entries]
            sds = [e["sd"] or 0 for e in entries]
            ax.bar(np.arange(len(tasks)) + (i - (len(settings) - 1) / 2) * width, means, width, yerr=sds,
                   label=setting, capsize=2)
        for j, task in enumerate(tasks):
            if summary["chance"][task] is not None:
                ax.hlines(summary["chance"][task], j - 0.4, j + 0.4, colors="k", linestyles="dashed",
                          label="chance" if j == 0 else None)
        ax.set_xticks(range(len(tasks)), [TASK_NAMES[t] for t in tasks])
        ax.set_ylabel(unit)
    axes[0].set_ylim(0, 1.05)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(f"Train on real / synthetic / both, test on {summary['test_slices']} held-out real slices "
                 f"({summary['test_subjects']} subjects)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_report(out: Path, summary: dict) -> None:
    """utility.png, utility.md, then utility.json, each through a temporary file: the record last, so a run that
    fails in the plot leaves an earlier report whole, never a new table beside an old plot and record."""
    out.mkdir(parents=True, exist_ok=True)
    plot(summary, out / "utility.png")
    which = " (on-prompt slices only)" if summary.get("on_prompt_only") else ""
    text = [f"# Utility of {summary['synthetic']}{which} for training (tested on real {summary['real']})", "",
            f"{summary['steps']} optimiser steps per network, {summary['repeats']} repeat(s) (mean ± SD); "
            f"R = {summary['r']} slices.", "", *table_lines(summary), "", *findings(summary), "",
            "Tissue segmentation is not among the tasks: prepared slices carry no tissue labels (only per-subject "
            "volumes), so there is nothing to train or test a segmenter on.", ""]
    write_text_atomic(out / "utility.md", "\n".join(text))
    write_json_atomic(out / "utility.json", summary)
