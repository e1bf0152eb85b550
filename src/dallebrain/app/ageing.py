"""The page's ageing sequence: one brain (the source) aged by the ageing network, the same path as `dallebrain age`
(ageing/). No gradio and no request rules here: each refusal is a one-line ValueError, which
handlers.ageing_sequence shows in the page. The network is loaded once per process; no message names a server
path (an upload's temporary folder, the model folder)."""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

from dallebrain.app.untrusted import redact
from dallebrain.data.io import atomic_path
from dallebrain.pipelines.request import real_number

AGES = tuple(range(20, 91, 10))  # the page's sequence: 20, 30, ..., 90
ZIP = "ageing-sequence.zip"
NOTE = ("one brain (the source) aged by the ageing network trained on simulated longitudinal data; fractions by "
        "the tissue judge")


def source_age(value) -> float | None:
    """The "source age" box: empty is None (a prompt's own age, or an upload's sidecar, then decides)."""
    from dallebrain.ageing.network import AGE_RANGE

    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return real_number(value, "source age", *AGE_RANGE)


def network_folder(folder) -> Path:
    from dallebrain.ageing.network import CONFIG_FILE, SHIPPED, WEIGHTS_FILE

    folder = Path(folder) if folder else SHIPPED
    if not (folder / WEIGHTS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
        raise ValueError("no ageing network on this server: start it with --ageing-model DIR (a `dallebrain train "
                         "ageing` folder)")
    return folder


@functools.lru_cache(maxsize=2)
def _load(folder: str):
    from dallebrain.ageing.network import load_ageing_net

    return load_ageing_net(folder)


def network(folder=None):
    """The ageing network in `folder` (None: the shipped one), loaded once per process."""
    folder = network_folder(folder)
    try:
        return _load(str(folder.resolve()))
    except ValueError as exc:
        labels = {str(folder.resolve()): "the ageing model folder", str(folder): "the ageing model folder"}
        raise ValueError(redact(str(exc).splitlines()[0], labels)) from None


def upload_source(path: Path, size: int, age: float | None):
    """An uploaded slice at its age (the box, else a sidecar beside it), read at the network's size."""
    from dallebrain.ageing.source import from_file

    try:
        return from_file(path, size, age)
    except ValueError as exc:
        # the CLI's option is the page's box; the upload's folder is the server's
        labels = {"--from-age": "the source age", str(path): path.name, str(path.parent): "the upload folder"}
        raise ValueError(redact(str(exc).splitlines()[0], labels)) from None


def prompt_source(pipe, prompt: str, seed: int, age: float | None, out: Path, model_name: str, **settings):
    """The prompt generated once into OUT/source/: at the box's age, else the prompt's own, else the first age."""
    from dallebrain.ageing.source import from_prompt
    from dallebrain.data.prompts import parse_prompt

    stated = parse_prompt(prompt).age
    start_age = age if age is not None else stated if stated is not None else float(AGES[0])
    return from_prompt(pipe, prompt, seed, start_age, out, model_name, False, **settings)


def age_source(net, start, out: Path, ages=AGES) -> tuple[list[dict], list[dict]]:
    """Every age straight from the source, written as `dallebrain age` writes (frames, strip, GIF, ageing.json);
    returns each frame's file paths and judged tissue fractions."""
    from dallebrain.ageing.predict import age_sequence
    from dallebrain.ageing.sequence import write_sequence

    years = [float(a) for a in ages]
    summary = write_sequence(out, start, years, age_sequence(net, start.image, start.age, years),
                             net.config.training)
    written = [{kind: out / name for kind, name in files.items()} for files in summary["files"]]
    return written, summary["tissue_fractions"]


def downloads(out: Path, written: list[dict]) -> list[str]:
    """A zip of everything (each frame's PNG, NIfTI and JSON, the generated source, strip, GIF, ageing.json)
    first, then the GIF, the strip and ageing.json on their own."""
    from dallebrain.ageing.sequence import GIF, STRIP, SUMMARY

    extras = [out / GIF, out / STRIP, out / SUMMARY]
    files = [w[kind] for w in written for kind in ("png", "nifti", "json")]
    files += sorted(p for p in (out / "source").glob("*") if not p.name.startswith(".")) + extras
    with atomic_path(out / ZIP) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for path in files:
            z.write(path, path.relative_to(out))
    return [str(out / ZIP)] + [str(p) for p in extras]
