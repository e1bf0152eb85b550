"""What the page's buttons call: plain functions over plain values (no gradio here), so tests call them directly.

Every refusal is a `RequestError` with one line for the page. Pipelines are loaded once per process and kept by
(model, route, LoRA, scale, device); generation runs one request at a time (`GENERATION_LOCK`), which is also
what the page's queue enforces.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from dallebrain.ageing.sequence import STRIP
from dallebrain.app import ageing
from dallebrain.app.untrusted import adapter_folder, markdown_text, redact
from dallebrain.pipelines import defaults as D
from dallebrain.pipelines.request import ROUTES, WEB_LIMITS, GenerationRequest, real_number, whole_number

# The page's limits (pipelines.request.WEB_LIMITS), by the names the UI's widgets use.
MAX_PROMPT_CHARS = WEB_LIMITS.max_prompt_chars
MAX_IMAGES = WEB_LIMITS.max_n
MAX_STEPS = WEB_LIMITS.max_steps
MAX_SEED = WEB_LIMITS.max_seed
MAX_GUIDANCE = WEB_LIMITS.max_guidance
AGES = ageing.AGES  # the ageing sequence: 20, 30, ..., 90
UPLOAD_SUFFIXES = (".png", ".nii", ".nii.gz")

GENERATION_LOCK = threading.Lock()
_STUDY_LOCK = threading.Lock()

EXAMPLE_PROMPTS = [
    "axial T2-weighted slice of a healthy 70-year-old woman at the level of the lateral ventricles",
    "axial T1-weighted brain MRI of a healthy 25-year-old man at the level of the basal ganglia, 3 T",
    "coronal FLAIR slice of a healthy 60-year-old man through the hippocampi",
    "midsagittal T1-weighted MRI of a healthy 45-year-old woman",
    "axial PD-weighted slice of a healthy 80-year-old man at the level of the centrum semiovale, 1.5 T",
]


class RequestError(ValueError):
    """A request the page refuses; the message is one line a user can act on."""


@dataclass
class Generated:
    """What a generation request gives the page."""

    images: list[tuple[str, str]]  # (PNG path, caption) per image
    files: list[str]  # downloads: a zip first, then each file
    message: str = ""  # warnings and notes for the page, markdown
    strip: str | None = None  # ageing sequence only: the source, then one frame per age, left to right
    folder: Path | None = None


@dataclass
class StudyView:
    """What the reader-study tab shows; `state` stays on the server (gr.State)."""

    state: dict = field(default_factory=dict)  # reader, item_id, shown_at
    image: str | None = None
    stated_contrast: str = ""
    progress: str = ""
    message: str = ""


# --- checks ---------------------------------------------------------------------------------------------


def _as_int(value, name: str, low: int, high: int) -> int:
    try:
        return whole_number(value, name, low, high)
    except ValueError as exc:
        raise RequestError(str(exc)) from None


def _as_float(value, name: str, low: float, high: float) -> float:
    try:
        return real_number(value, name, low, high)
    except ValueError as exc:
        raise RequestError(str(exc)) from None


def _web_request(**fields) -> GenerationRequest:
    """The request checked with the web page's limits (pipelines.request holds every rule), its prompt one the
    model can serve: a refusal is the page's one-line message, and no image is made."""
    try:
        return GenerationRequest(**fields).served(WEB_LIMITS)
    except ValueError as exc:
        raise RequestError(str(exc)) from None


def check_prompt(prompt) -> str:
    return _web_request(prompt=prompt).prompt


def check_settings(seed, steps, guidance, sampler, n=1) -> tuple[int, int, float, str, int]:
    r = _web_request(prompt="settings", seed=seed, steps=steps, guidance=guidance, sampler=sampler, n=n)
    return r.seed, r.steps, r.guidance, r.sampler, r.n


def _check_lora(lora, lora_scale, lora_dir=None) -> tuple[str | None, float]:
    """The folder of the adapter the page names (one of lora_dir's, never a path the page sends) and its scale."""
    name = str(lora).strip() if lora else ""
    scale = _as_float(lora_scale if lora_scale is not None else 1.0, "LoRA scale", 0.0, 4.0)
    if not name:
        return None, 1.0
    try:
        return str(adapter_folder(name, lora_dir)), scale
    except ValueError as exc:
        raise RequestError(str(exc)) from None


def check_upload_size(path: Path, max_upload_mb: float | None) -> None:
    """gradio refuses bigger uploads at the door (max_file_size); this keeps the limit for direct callers too."""
    if max_upload_mb is not None and path.stat().st_size > max_upload_mb * 2**20:
        raise RequestError(f"{path.name} is {path.stat().st_size / 2**20:.1f} MB: uploads are limited to "
                           f"{max_upload_mb:g} MB on this server")


def uploaded_slice(image_path, max_upload_mb: float | None) -> Path:
    """An upload's kind (by its name) and size, checked before any model loads (Variations and ageing)."""
    if not image_path:
        raise RequestError("upload a slice first (PNG or single-slice NIfTI)")
    path = Path(image_path)
    if not path.name.lower().endswith(UPLOAD_SUFFIXES):
        raise RequestError(f"{path.name}: upload a PNG (.png) or a NIfTI (.nii, .nii.gz)")
    check_upload_size(path, max_upload_mb)
    return path


# --- pipelines ------------------------------------------------------------------------------------------


def model_folder(model) -> Path:
    from dallebrain.api import default_model

    folder = Path(model) if model else default_model()
    if not folder.is_dir():
        raise RequestError(f"no model at {folder}: start the server with --model DIR (a `dallebrain train ldm` "
                           "folder)")
    return folder


@functools.lru_cache(maxsize=4)
def _load(model: str, route: str, lora: str | None, lora_scale: float, device: str | None):
    from dallebrain.api import load_pipeline

    pipe = load_pipeline(model, route=route, device=device, lora=lora, lora_scale=lora_scale)
    if lora is not None:  # the downloads' JSON names the adapter, not where it lives on the server
        pipe.lora = {"path": Path(lora).name, "scale": lora_scale}
    return pipe


def get_pipeline(model=None, route: str = "ldm", lora=None, lora_scale: float = 1.0, device: str | None = None):
    """The pipeline for these settings, loaded once per process (the four most recent are kept)."""
    if route not in ROUTES:
        raise RequestError(f"unknown route {route!r}: choose ldm or unclip")
    folder = model_folder(model)
    try:
        return _load(str(folder.resolve()), route, lora, float(lora_scale), device)
    except ValueError as exc:
        # the page names the adapter and the model, not where they are on the server
        labels = {str(folder.resolve()): "the model folder", str(folder): "the model folder"}
        if lora:
            labels[str(lora)] = f"LoRA adapter '{Path(lora).name}'"
        message = redact(str(exc).splitlines()[0], labels)
        if route == "unclip" and ("prior" in message or "clip" in message or "decoder" in message):
            message += " (the unCLIP route needs clip/, prior/ and decoder/: `dallebrain train prior|decoder`)"
        raise RequestError(message) from exc


def _request_folder(work_dir, kind: str) -> Path:
    root = Path(work_dir) if work_dir else Path(tempfile.gettempdir()) / "dallebrain-serve"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=root))


def _files(written: list[dict], out: Path, zip_name: str) -> list[str]:
    """A zip of everything first (one click for a radiologist who wants all NIfTIs), then each file."""
    files = [paths[kind] for paths in written for kind in ("png", "nifti", "json")]
    zip_path = out / zip_name
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for path in files:
            z.write(path, path.relative_to(out))
    return [str(zip_path)] + [str(p) for p in files]


def _notes(prompt: str, written: list[dict]) -> str:
    import json

    from dallebrain.data.prompts import parse_prompt

    notes = []
    if written:
        notes += json.loads(Path(written[0]["json"]).read_text()).get("warnings", [])
    missing = [m for m in parse_prompt(prompt).missing() if m not in ("healthy", "landmark")]
    if missing:
        notes.append("the prompt does not say " + ", ".join(m.replace("_", " ") for m in missing)
                     + ": the model chooses")
    return "\n".join(f"- {markdown_text(n)}" for n in notes)


# --- generate -------------------------------------------------------------------------------------------


def generate(prompt, seed=0, steps=D.STEPS, guidance=D.GUIDANCE, sampler=D.SAMPLER, route="ldm", lora=None,
             lora_scale=1.0, n=1, *, model=None, work_dir=None, device: str | None = None,
             lora_dir=None) -> Generated:
    """n slices for a prompt, written (PNG, NIfTI, JSON) to a new folder under work_dir; `lora` is the name of
    an adapter folder in lora_dir (None: LoRA off)."""
    from dallebrain.api import generate_to_folder

    prompt = check_prompt(prompt)
    seed, steps, guidance, sampler, n = check_settings(seed, steps, guidance, sampler, n)
    lora, lora_scale = _check_lora(lora, lora_scale, lora_dir)
    pipe = get_pipeline(model, route, lora, lora_scale, device)
    out = _request_folder(work_dir, "generate")
    with GENERATION_LOCK:
        written = generate_to_folder(pipe, prompt, out, n=n, seed=seed, steps=steps, guidance=guidance,
                                     sampler=sampler, model_path=model_folder(model).name)
    images = [(str(p["png"]), f"seed {seed + i}") for i, p in enumerate(written)]
    return Generated(images, _files(written, out, f"slices-seed-{seed:06d}.zip"), _notes(prompt, written), folder=out)


def ageing_sequence(prompt, seed=0, steps=D.STEPS, guidance=D.GUIDANCE, sampler=D.SAMPLER, route="ldm", lora=None,
                    lora_scale=1.0, *, upload=None, source_age=None, model=None, ageing_model=None, work_dir=None,
                    device: str | None = None, ages: tuple[int, ...] = AGES, lora_dir=None,
                    max_upload_mb: float | None = None) -> Generated:
    """One brain at ages 20, 30, ..., 90: the source (the prompt generated once, or an uploaded slice at its
    source age) aged by the ageing network (app/ageing.py). The LDM at each age with one seed would redraw the
    brain or ignore the age; the network keeps the identity and changes what ageing changes."""
    try:
        age = ageing.source_age(source_age)
        if upload:
            path = uploaded_slice(upload, max_upload_mb)
            net = ageing.network(ageing_model)
            start = ageing.upload_source(path, net.config.image_size, age)
        else:
            prompt = check_prompt(prompt)
            seed, steps, guidance, sampler, _ = check_settings(seed, steps, guidance, sampler)
            lora, lora_scale = _check_lora(lora, lora_scale, lora_dir)
            net = ageing.network(ageing_model)
            pipe = get_pipeline(model, route, lora, lora_scale, device)
    except ValueError as exc:  # refused before any folder is made
        raise RequestError(str(exc).splitlines()[0]) from exc
    out = _request_folder(work_dir, "ageing")
    with GENERATION_LOCK:
        if not upload:
            start = ageing.prompt_source(pipe, prompt, seed, age, out, model_folder(model).name, steps=steps,
                                         guidance=guidance, sampler=sampler)
        written, fractions = ageing.age_source(net, start, out, ages)
    images = [(str(w["png"]), f"age {a:g}, ventricles {100 * f['ventricles']:.1f} %")
              for a, w, f in zip(ages, written, fractions, strict=True)]
    notes = [ageing.NOTE, f"source: {path.name if upload else f'the prompt, seed {seed}'} at {start.age:g} years"]
    message = "\n".join(f"- {markdown_text(n)}" for n in notes)
    if not upload:
        message = "\n".join(m for m in (message, _notes(start.record["source_prompt"], written)) if m)
    return Generated(images, ageing.downloads(out, written), message, strip=str(out / STRIP), folder=out)


# --- variations -----------------------------------------------------------------------------------------


def variations(image_path, n=4, seed=0, steps=D.STEPS, guidance=D.GUIDANCE, sampler=D.SAMPLER, *, model=None,
               work_dir=None, device: str | None = None, max_upload_mb: float | None = None) -> Generated:
    """unCLIP variations of an uploaded slice (PNG or single-slice NIfTI) of at most max_upload_mb."""
    from dallebrain.api import variations_to_folder

    path = uploaded_slice(image_path, max_upload_mb)
    seed, steps, guidance, sampler, n = check_settings(seed, steps, guidance, sampler, n)
    pipe = get_pipeline(model, "unclip", None, 1.0, device)
    out = _request_folder(work_dir, "variations")
    try:
        with GENERATION_LOCK:
            written = variations_to_folder(pipe, path, out, n=n, seed=seed, steps=steps, guidance=guidance,
                                           sampler=sampler, model_path=model_folder(model).name)
    except ValueError as exc:
        raise RequestError(str(exc).splitlines()[0]) from exc
    images = [(str(p["png"]), f"variation, seed {seed + i}") for i, p in enumerate(written)]
    return Generated(images, _files(written, out, f"variations-seed-{seed:06d}.zip"), folder=out)


# --- reader study ---------------------------------------------------------------------------------------

CONTRAST_ANSWERS = {"yes": True, "no": False}


def _synthetic_maker(model, device, steps: int, guidance: float = D.GUIDANCE, sampler: str = D.SAMPLER):
    def make(prompt: str, seed: int):
        pipe = get_pipeline(model, "ldm", None, 1.0, device)
        with GENERATION_LOCK:
            return pipe(prompt, n=1, seed=seed, steps=steps, guidance=guidance, sampler=sampler).images[0]

    return make


def _show(study, name: str, message: str = "") -> StudyView:
    item = study.next_item(name)
    done, total = study.progress(name)
    shown_name = markdown_text(name)  # a name is shown as typed, never as markup
    if item is None:
        return StudyView({"reader": name}, None, "", f"**{shown_name}**: all {total} items answered. Thank you.",
                         message or "Study complete for this reader.")
    state = {"reader": name, "item_id": item.item_id, "shown_at": time.time()}
    return StudyView(state, str(item.image), item.stated_contrast,
                     f"**{shown_name}**: item {done + 1} of {total}", message)


def study_start(study, reader_name, *, model=None, device: str | None = None, steps: int = D.STEPS) -> StudyView:
    """Register (or resume) a reader and show their next item; generates the study's synthetic items the first
    time any reader starts."""
    from dallebrain.app.study import clean_reader_name

    if study is None:
        raise RequestError("no reader study on this server: start it with --data PREPARED")
    try:
        name = clean_reader_name(reader_name)
    except ValueError as exc:
        raise RequestError(str(exc)) from exc
    with _STUDY_LOCK:
        if study.pending_synthetic():
            study.materialise(_synthetic_maker(model, device, steps))
    return _show(study, name)


def study_submit(study, state: dict | None, answer, plausibility, contrast_ok, now: float | None = None) -> StudyView:
    """Store the reader's answer to the item on screen and show the next one."""
    if study is None:
        raise RequestError("no reader study on this server: start it with --data PREPARED")
    if not state or not state.get("reader"):
        raise RequestError("enter your reader name and press Start first")
    if state.get("item_id") is None:
        raise RequestError("no item on screen: all items are answered")
    if answer not in ("real", "synthetic"):
        raise RequestError("answer 'real or synthetic?' first")
    if plausibility in (None, ""):
        raise RequestError("rate the anatomical plausibility (1-5) first")
    plausibility = _as_int(plausibility, "plausibility", 1, 5)
    if contrast_ok not in CONTRAST_ANSWERS:
        raise RequestError("answer 'is the contrast the stated one?' first")
    seconds = (now if now is not None else time.time()) - state["shown_at"] if state.get("shown_at") else None
    try:
        study.submit(state["reader"], state["item_id"], answer, plausibility, CONTRAST_ANSWERS[contrast_ok],
                     seconds)
    except ValueError as exc:
        raise RequestError(str(exc)) from exc
    return _show(study, state["reader"], "Answer saved.")


def _check_organiser(study, code) -> None:
    if study is None:
        raise RequestError("no reader study on this server: start it with --data PREPARED")
    try:
        study.check_organiser(code)
    except ValueError as exc:
        raise RequestError(str(exc)) from exc


def study_summary(study, organiser_code):
    """The summary table (see Study.summary), rounded for the page; for the organiser only."""
    _check_organiser(study, organiser_code)
    return study.summary().round({"accuracy": 3, "p_value": 4, "plausibility_real": 2, "plausibility_synthetic": 2,
                                  "contrast_confirmed": 3})


def study_export(study, organiser_code, work_dir=None) -> str:
    """A CSV of every answer, for download; for the organiser only."""
    _check_organiser(study, organiser_code)
    out = _request_folder(work_dir, "export")
    return str(study.export_csv(out / f"reader-study-{time.strftime('%Y%m%d-%H%M%S')}.csv"))


def clear_work_dir(work_dir) -> None:
    shutil.rmtree(work_dir, ignore_errors=True)
