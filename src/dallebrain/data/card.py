"""The dataset card (README.md) of a prepared data set: counts, provenance, licences, how to read it."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import pandas as pd

from dallebrain.data.io import write_text_atomic
from dallebrain.data.templates import ATLAS_LICENCE, TEMPLATE_LICENCE

SOURCE_LICENCES = {
    "simulated": "Simulated by dallebrain from the MNI152 template and the Neuromorphometrics atlas "
                 "(licences below); contains no data of any real person.",
    "bids": "As the licence of the BIDS data set you supplied.",
    "ixi": "IXI data set, CC BY-SA 3.0 (brain-development.org/ixi-dataset).",
    "oasis1": "OASIS-1 cross-sectional, OASIS data use agreement (no redistribution of the images; cite "
              "Marcus et al. 2007).",
    "hcp": "HCP Young Adult, WU-Minn HCP open access data use terms (no re-identification; cite Van Essen "
           "et al. 2013).",
}



def card_text(slices: pd.DataFrame, failures: pd.DataFrame, options) -> str:
    from dallebrain._version import __version__

    subjects = slices.drop_duplicates("subject_id")
    per_split = subjects["split"].value_counts().reindex(["train", "val", "test"], fill_value=0)
    ages = subjects["age"].dropna()
    age_text = f"{ages.min():.0f}-{ages.max():.0f} years (median {ages.median():.0f})" if len(ages) else "unknown"
    sexes = subjects["sex"].fillna("unknown").value_counts().to_dict()
    grid = options.grid
    example = slices.iloc[len(slices) // 2]
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files: metadata.parquet",
        "---",
        f"# Prepared brain MRI slices ({options.source})",
        "",
        f"Made by `dallebrain data prepare` {__version__} on {_dt.date.today().isoformat()} from "
        f"`{options.input_dir}` (source `{options.source}`).",
        "",
        "## Counts",
        f"- subjects: {len(subjects)} (train {per_split['train']}, val {per_split['val']}, "
        f"test {per_split['test']}); no subject is in two splits",
        f"- slices: {len(slices)}; failed subjects: {len(failures)} (see failures.csv)",
        f"- ages: {age_text}; sex: {sexes}",
        *_longitudinal_and_lesion_lines(slices),
        "",
        "Slices per modality and split:",
        "",
        "```", slices.pivot_table(index="modality", columns="split", values="image_path", aggfunc="count",
                                  fill_value=0).to_string(), "```",
        "",
        "Slices per orientation and split:",
        "",
        "```", slices.pivot_table(index="orientation", columns="split", values="image_path", aggfunc="count",
                                  fill_value=0).to_string(), "```",
        "",
        "## Images",
        f"- 16-bit grey-scale PNG, {grid.shape[0]}x{grid.shape[1]} pixels at {grid.spacing_mm:g} mm, on a "
        f"fixed MNI152 grid (origin {tuple(round(o, 2) for o in grid.origin_mm)} mm, RAS+); a slice every "
        f"{options.slice_step_mm:g} mm in axial, coronal and sagittal planes, kept where the brain covers at "
        f"least {options.min_brain_fraction:.0%} of the image.",
        "- Radiological display: subject's right on the image's left; anterior (axial) or superior "
        "(coronal, sagittal) at the top; sagittal images face left. `dallebrain.data.grid.slice_affine` "
        "gives each slice's exact placement in MNI space.",
        "- Intensities: skull-stripped, scaled so the 99.5th percentile inside the brain is 1 (65535), "
        "clipped, zero outside the brain.",
        "",
        "## Table `metadata.parquet`",
        "One row per slice: `image_path` (relative), `subject_id`, `split`, `source`, `modality`, "
        "`field_strength` (T), `orientation`, `slice_index`, `slice_mm` (MNI z, y or x), `landmark`, "
        "`brain_fraction`, `structures` (largest named atlas structures visible), `age`, `sex`, `site`, "
        "volumes (`icv_ml`, `gm_ml`, `wm_ml`, `csf_ml`, `lateral_ventricles_ml`, `nwbv`), `ventricles_z` and "
        "`brain_volume_z` (against the cohort's own age trend), `caption` and `captions` (several phrasings).",
        "",
        f"Example caption: \"{example['caption']}\"",
        "",
        "Read it with `pandas.read_parquet('metadata.parquet')` or "
        "`datasets.load_dataset('parquet', data_files='metadata.parquet')`.",
        "",
        "## Licences and provenance",
        f"- Source data: {SOURCE_LICENCES.get(options.source, 'see the source')}",
        f"- {TEMPLATE_LICENCE}",
        f"- Structure labels: {ATLAS_LICENCE}",
        "",
        "## Settings",
        "```",
        *(f"{k}: {v}" for k, v in sorted(vars(options).items()) if k not in ("input_dir", "out_dir")),
        "```",
    ]
    return "\n".join(lines) + "\n"


def _longitudinal_and_lesion_lines(slices: pd.DataFrame) -> list[str]:
    """Extra count lines for a longitudinal or lesion data set (none for a healthy cross-sectional one)."""
    lines = []
    if "session_id" in slices:
        scans = slices.drop_duplicates(["subject_id", "session_id"])
        lines.append(f"- sessions: {len(scans)} scans (column `session_id`, `years_from_baseline`); all sessions "
                     "of a subject are in its split")
    if "healthy" in slices:
        keys = ["subject_id", "session_id"] if "session_id" in slices else ["subject_id"]
        scans = slices.drop_duplicates(keys)
        types = scans.loc[~scans["healthy"].astype(bool), "lesion_type"].value_counts().to_dict()
        lines.append(f"- lesions: {types or 'none'} scans with a lesion, {int(scans['healthy'].astype(bool).sum())} "
                     "healthy; per slice `lesion_labels` (mask values in view) and `mask_path` (8-bit PNG of the "
                     "mask labels: 1 WMH, 2 MS, 3 infarct, 4 tumour, 5 necrosis, 6 oedema), `findings` per scan")
    return lines


def write_dataset_card(out_dir: Path, slices: pd.DataFrame, failures: pd.DataFrame, options) -> Path:
    path = Path(out_dir) / "README.md"
    write_text_atomic(path, card_text(slices, failures, options))
    return path
