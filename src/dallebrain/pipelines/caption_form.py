"""A user's prompt in the form the model was trained on: the canonical caption of what the prompt states.

Why: the shipped UNet's text path was fine-tuned on canonical captions only ("Axial T1-weighted brain MRI of a
healthy 20-year-old woman at the level of the lateral ventricles (z = +23 mm), showing the middle frontal gyrus,
lateral ventricle and angular gyrus."), and every one of them names the level in mm and the structures in view.
A short prompt ("axial FLAIR MRI slice of a healthy 20-year-old woman at the level of the lateral ventricles")
lacks both, and its slices landed 5-9 mm too low (16 seeds, level judge: T1w +14, T2w +17, FLAIR +16 mm for
+23), although the attributes state the level exactly; the same request in caption form landed at +20-22 mm
(BENCHMARKS.md, "Prompts in caption form"). DALL-E 3 rewrites prompts into its training captions' style for
the same reason (Betker et al. 2023).

The rewrite reads the prompt with `parse_prompt` (the inverse of the captions) and writes the caption
`build_captions` would write for a slice with those facts; the structures in view are the template atlas's at
that plane and level, as `prepare` names them for a registered subject. It only applies to a prompt that names
a plane, a level and a contrast and does not list structures itself (a caption does: it is sent as written), on
a model whose dallebrain.json gives its grid. Words the parser does not read are not in the rewritten text;
the sidecar records the text that was encoded, and `--literal-prompt` sends the prompt as written.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from dallebrain.data.captions import SliceFacts, build_captions
from dallebrain.data.grid import VolumeGrid, grid_in_info
from dallebrain.data.prompts import parse_prompt

# the caption phrasings that list structures ("showing the ...", "... visible", "Structures: ...")
LISTS_STRUCTURES = re.compile(r"\b(showing|visible|structures\s*:)", re.IGNORECASE)
TABLE = Path(__file__).resolve().parents[1] / "data" / "template_structures.json"
NEAREST_MM = 3.0  # the levels `prepare` keeps are 3 mm apart: a level farther than this from all shows no brain


def grid_key(grid: VolumeGrid) -> str:
    return json.dumps({"shape": [int(s) for s in grid.shape], "spacing_mm": float(grid.spacing_mm),
                       "origin_mm": [float(o) for o in grid.origin_mm]})


def structures_table(grid: VolumeGrid) -> dict[str, list[tuple[float, tuple[str, ...]]]]:
    """plane -> [(level mm, structures in view)] on the template: from the table shipped in the package for the
    shipped model's grid (computing it takes about 3 s: the atlas is resampled), else computed."""
    return _structures_table(grid_key(grid))


@lru_cache(maxsize=4)
def _structures_table(key: str) -> dict[str, list[tuple[float, tuple[str, ...]]]]:
    shipped = json.loads(TABLE.read_text()) if TABLE.is_file() else {}
    if shipped.get("grid") == json.loads(key):
        return {plane: [(float(mm), tuple(names)) for mm, names in rows] for plane, rows in shipped["planes"].items()}
    g = json.loads(key)
    return compute_structures_table(VolumeGrid(tuple(g["shape"]), g["spacing_mm"], tuple(g["origin_mm"])))


def compute_structures_table(grid: VolumeGrid) -> dict[str, list[tuple[float, tuple[str, ...]]]]:
    from dallebrain.synthesize.plan import brain_levels
    from dallebrain.vocab import ORIENTATIONS

    return {plane: [(mm, names) for _, mm, names in brain_levels(grid, plane)] for plane in ORIENTATIONS}


def write_structures_table(grid: VolumeGrid, path: Path = TABLE) -> None:
    """(Re)write the shipped table for `grid` (the shipped model's): `python -m dallebrain.pipelines.caption_form`."""
    from dallebrain.data.io import atomic_path

    table = compute_structures_table(grid)
    text = json.dumps({"grid": json.loads(grid_key(grid)),
                       "planes": {p: [[mm, list(names)] for mm, names in rows] for p, rows in table.items()}})
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text + "\n")


def caption_form(prompt: str, grid: VolumeGrid | None) -> str | None:
    """The canonical caption of what `prompt` states, or None where the prompt stays as written: no grid, a
    prompt that lists structures, or one silent on its plane, level or contrast."""
    if grid is None or LISTS_STRUCTURES.search(prompt):
        return None
    fields = parse_prompt(prompt)
    if fields.orientation is None or fields.slice_mm is None or fields.modality is None:
        return None
    return caption_at(fields, fields.slice_mm, grid)


def caption_at(fields, slice_mm: float, grid: VolumeGrid) -> str:
    """The canonical caption of what `fields` (a parsed prompt naming a plane and a contrast) states, at level
    `slice_mm` (the prompt's own, or a level map's caption level: pipelines/level_map.py)."""
    levels = structures_table(grid).get(fields.orientation, [])
    nearest = min(levels, key=lambda row: abs(row[0] - slice_mm), default=None)
    structures = nearest[1] if nearest and abs(nearest[0] - slice_mm) <= NEAREST_MM else ()
    facts = SliceFacts(orientation=fields.orientation, slice_mm=slice_mm, modality=fields.modality,
                       field_strength=fields.field_strength, age=fields.age, sex=fields.sex, structures=structures,
                       ventricles=fields.ventricles, brain_volume=fields.brain_volume)
    return build_captions(facts, 1)[0]


# words that carry no attribute of their own (captions say "brain MRI"; a user may say "slice", "scan", "image"):
# never reported as left out
GENERIC_WORDS = frozenset("a an the of at in on near around through across with and or to for from by slice slices "
                          "image images scan scans mri mr brain view section sections cut picture showing level "
                          "please".split())


def words_left_out(prompt: str, encoded: str) -> list[str]:
    """The prompt's words that the caption form `encoded` does not carry: a word is read when blanking it changes
    what `parse_prompt` reads (its plane, level, contrast, field, age, sex, descriptors), else it is left out,
    unless the encoded text holds it or it is a `GENERIC_WORDS` filler. In prompt order, as written."""
    fields = parse_prompt(prompt)
    kept = {w.lower() for w in re.findall(r"[A-Za-z][\w'-]*", encoded)}
    left_out = []
    for m in re.finditer(r"\S+", prompt):
        word = m.group(0).strip(".,;:!?()[]\"'")
        if not re.search(r"[A-Za-z]", word) or word.lower() in kept or word.lower() in GENERIC_WORDS:
            continue
        if parse_prompt(prompt[:m.start()] + " " * len(m.group(0)) + prompt[m.end():]) == fields:
            left_out.append(word)
    return list(dict.fromkeys(left_out))


def caption_form_warnings(prompt: str, encoded: str) -> list[str]:
    """The warning (stderr and sidecar) naming the words a caption-form rewrite left out, if any."""
    left_out = words_left_out(prompt, encoded)
    if not left_out:
        return []
    return [f"prompt encoded in caption form (sidecar: prompt_as_encoded) without these words, which the model does "
            f"not read: {', '.join(left_out)}; --literal-prompt sends the prompt as written"]


if __name__ == "__main__":
    # the shipped model's grid, read from its dallebrain.json (no import of the API: the package has no cycles)
    shipped = Path(__file__).resolve().parents[1] / "weights" / "default" / "dallebrain.json"
    write_structures_table(grid_in_info(json.loads(shipped.read_text())))
    print(f"wrote {TABLE}")
