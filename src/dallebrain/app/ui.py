"""The page: gr.Blocks with tabs Generate / Variations / Reader study. Layout and wiring only; the work is in
handlers.py and study.py. A refused request shows a one-line message in the page, never a traceback.

What the server hands out over HTTP is only gradio's own cache: copies of what a request produced, under
content-hash names. No folder is in gradio's allowed_paths, the study folder is in its blocked_paths, and a study
item reaches the page as pixels, never as a path (see README, "Threat model")."""

from __future__ import annotations

import html
import inspect
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from dallebrain.app import handlers as h
from dallebrain.app.untrusted import LORA_OFF, lora_adapters, markdown_text
from dallebrain.pipelines import defaults as D
from dallebrain.vocab import SAMPLER_CHOICES

log = logging.getLogger("dallebrain.app")

# System fonts only: the default theme would fetch Google Fonts, which an offline hospital network blocks.
_FONTS = ["ui-sans-serif", "system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"]
_MONO = ["ui-monospace", "Consolas", "monospace"]
# Slices are viewed on black, as on a reading workstation, and scaled up to the space they have (a 128 px slice
# shown at its own size is too small to read); thumbnails are not cropped.
CSS = """
.mri .thumbnail-item, .mri .preview, #study-image .image-container, #ageing-strip .image-container {
    background: #000 !important; }
#study-image img { width: 100% !important; height: 100% !important; max-height: 70vh; object-fit: contain !important; }
#ageing-strip .image-frame { width: 100% !important; }
#ageing-strip img { width: 100% !important; height: auto !important; max-height: none !important;
    object-fit: contain !important; }
#stated-contrast p { font-size: 1.25rem; font-weight: 600; }
"""


@dataclass
class ServeConfig:
    """What `dallebrain serve` was started with."""

    model: Path | None = None  # pipeline folder (None: the shipped model)
    data: Path | None = None  # prepared data set: the reader study's real slices (test split)
    study_dir: Path | None = None  # study folder (study.sqlite + images/); created from data when new
    study_items: int = 20  # items in a new study, half real and half synthetic
    study_steps: int = D.STEPS  # denoising steps of the study's synthetic slices
    device: str | None = None
    work_dir: Path | None = None  # per-request output folders (default: a new temporary folder); must lie under
    # the system temp folder or the current folder, the only places gradio copies a returned file from
    lora_dir: Path | None = None  # the LoRA adapters the page may name (one folder each); None: LoRA off
    max_upload_mb: float = 20.0  # larger uploads are refused by gradio before they are stored
    auth: tuple[str, str] | None = None  # (user, password) for gradio's login page
    anomaly_normal: Path | None = None  # normal model folder of the Anomaly tab (None: the tab says it is off)
    ageing_model: Path | None = None  # ageing network folder of the ageing sequence (None: the shipped one)


def _kwargs_for(func, **kwargs) -> dict:
    """The kwargs `func` accepts: gradio 5 takes theme/css in Blocks(), gradio 6 in launch()."""
    accepted = inspect.signature(func).parameters
    return {k: v for k, v in kwargs.items() if k in accepted}


def _problem(exc: Exception) -> str:
    """The page's line for a failed request; anything but a RequestError goes to the log, not the page. A message
    may quote what the user typed, so it is shown as text (the pop-up renders HTML, the line markdown)."""
    if isinstance(exc, h.RequestError):
        message = str(exc)
    else:
        log.exception("request failed")
        message = "the request failed on the server (details in the server log); try other settings"
    gr.Warning(html.escape(message), duration=6)  # the line stays in the page; the pop-up must not cover the buttons
    return f"**Not done:** {markdown_text(message)}"


def _message(elem_id: str | None = None) -> gr.Markdown:
    """A message line: markdown without LaTeX ($$ in a reader name stays two dollar signs)."""
    return gr.Markdown(elem_id=elem_id, latex_delimiters=[])


def _pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def _settings_block(prefix: str, default_steps: int = D.STEPS):
    with gr.Row():
        seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=h.MAX_SEED,
                         info="image i uses seed + i", elem_id=f"{prefix}-seed")
        steps = gr.Slider(1, h.MAX_STEPS, value=default_steps, step=1, label="Denoising steps",
                          elem_id=f"{prefix}-steps")
    with gr.Row():
        guidance = gr.Slider(0, h.MAX_GUIDANCE, value=D.GUIDANCE, step=0.5, label="Guidance",
                             info="0 unconditional, 1 none", elem_id=f"{prefix}-guidance")
        sampler = gr.Dropdown(list(SAMPLER_CHOICES), value=D.SAMPLER, label="Sampler",
                              info="auto: the model's choice per contrast (DPM-Solver++ for variations)",
                              elem_id=f"{prefix}-sampler")
    return seed, steps, guidance, sampler


def _ageing_inputs(cfg: ServeConfig):
    """The ageing sequence's own slice: shown in that mode only (the prompt is then not used)."""
    with gr.Group(visible=False) as group:
        upload = gr.File(label=f"Or age your own slice (.png, .nii, .nii.gz; at most {cfg.max_upload_mb:g} MB)",
                         file_types=list(h.UPLOAD_SUFFIXES), type="filepath", elem_id="ageing-upload")
        age = gr.Number(None, label="Source age (years)", minimum=0, maximum=110, elem_id="ageing-source-age",
                        info="the uploaded slice's age; for a prompt, replaces its own (default: the prompt's "
                             "age, else 20)")
    return group, upload, age


def _generate_tab(cfg: ServeConfig) -> None:
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", lines=3, elem_id="prompt",
                                placeholder="e.g. axial T2-weighted slice of a healthy 70-year-old woman at the "
                                            "level of the lateral ventricles",
                                info=f"orientation, level, contrast, age, sex, field strength; at most "
                                     f"{h.MAX_PROMPT_CHARS} characters")
            gr.Examples([[p] for p in h.EXAMPLE_PROMPTS], inputs=[prompt], label="Example prompts")
            mode = gr.Radio(["images", "ageing sequence"], value="images", label="Mode", elem_id="generate-mode",
                            info="ageing sequence: one brain (the prompt's, or your slice) aged to 20, 30, ..., "
                                 "90 by the ageing network")
            ageing_group, upload, source_age = _ageing_inputs(cfg)
            n = gr.Slider(1, h.MAX_IMAGES, value=4, step=1, label="Number of images", elem_id="generate-n",
                          info="images mode; the ageing sequence is always 8")
            seed, steps, guidance, sampler = _settings_block("generate")
            with gr.Accordion("Route and LoRA", open=False):
                route = gr.Radio(list(h.ROUTES), value="ldm", label="Route",
                                 info="ldm: latent diffusion; unclip: prior + decoder")
                with gr.Row():
                    # a choice among the adapters in --lora-dir, never a path typed into the page
                    adapters = lora_adapters(cfg.lora_dir)
                    lora = gr.Dropdown([("none", "")] + [(name, name) for name in adapters], value="",
                                       label="LoRA adapter", interactive=bool(adapters), elem_id="lora",
                                       info=LORA_OFF if cfg.lora_dir is None else
                                       None if adapters else "no adapter in this server's LoRA folder")
                    lora_scale = gr.Slider(0, 4, value=1.0, step=0.1, label="LoRA scale")
            button = gr.Button("Generate", variant="primary", elem_id="generate-button")
        with gr.Column(scale=3):
            message = _message("generate-message")
            gallery = gr.Gallery(label="Synthetic slices (not from any real person)", columns=4, height="auto",
                                 object_fit="contain", format="png", elem_id="gallery", elem_classes=["mri"])
            files = gr.File(label="Downloads: PNG, NIfTI, JSON", file_count="multiple", elem_id="downloads")
    # full page width, so the eight ages sit side by side at a readable size
    strip = gr.Image(label="Ageing sequence: the source, then 20 (left) to 90 years (right)", visible=False,
                     format="png",
                     type="filepath", interactive=False, elem_classes=["mri"], elem_id="ageing-strip",
                     **_kwargs_for(gr.Image.__init__, buttons=["fullscreen", "download"], show_share_button=False))

    def run(prompt, mode, n, seed, steps, guidance, sampler, route, lora, lora_scale, upload, source_age):
        try:
            common = dict(model=cfg.model, work_dir=cfg.work_dir, device=cfg.device, lora_dir=cfg.lora_dir)
            if mode == "ageing sequence":
                result = h.ageing_sequence(prompt, seed, steps, guidance, sampler, route, lora, lora_scale,
                                           upload=upload, source_age=source_age, ageing_model=cfg.ageing_model,
                                           max_upload_mb=cfg.max_upload_mb, **common)
            else:
                result = h.generate(prompt, seed, steps, guidance, sampler, route, lora, lora_scale, n, **common)
        except Exception as exc:  # noqa: BLE001 - the page gets a message, the log the traceback
            return None, gr.update(value=None, visible=False), None, _problem(exc)
        return (result.images, gr.update(value=result.strip, visible=result.strip is not None), result.files,
                result.message)

    mode.change(lambda m: gr.update(visible=m == "ageing sequence"), [mode], [ageing_group], queue=False)
    button.click(run, [prompt, mode, n, seed, steps, guidance, sampler, route, lora, lora_scale, upload, source_age],
                 [gallery, strip, files, message], concurrency_id="generation", api_name="generate")


def _variations_tab(cfg: ServeConfig) -> None:
    gr.Markdown("Upload a slice (PNG, or a single-slice NIfTI) to get new synthetic slices that share its Brain-CLIP "
                "image embedding. Needs a model with the unCLIP stages (clip/, prior/, decoder/).")
    with gr.Row():
        with gr.Column(scale=2):
            upload = gr.File(label=f"Slice (.png, .nii, .nii.gz; at most {cfg.max_upload_mb:g} MB)",
                             file_types=list(h.UPLOAD_SUFFIXES), type="filepath", elem_id="variation-upload")
            n = gr.Slider(1, h.MAX_IMAGES, value=4, step=1, label="Number of variations")
            seed, steps, guidance, sampler = _settings_block("variations")
            button = gr.Button("Make variations", variant="primary", elem_id="variations-button")
        with gr.Column(scale=3):
            message = _message("variations-message")
            gallery = gr.Gallery(label="Variations (synthetic)", columns=4, height="auto", object_fit="contain",
                                 format="png", elem_classes=["mri"])
            files = gr.File(label="Downloads: PNG, NIfTI, JSON", file_count="multiple")

    def run(upload, n, seed, steps, guidance, sampler):
        try:
            result = h.variations(upload, n, seed, steps, guidance, sampler, model=cfg.model, work_dir=cfg.work_dir,
                                  device=cfg.device, max_upload_mb=cfg.max_upload_mb)
        except Exception as exc:  # noqa: BLE001
            return None, None, _problem(exc)
        return result.images, result.files, result.message

    button.click(run, [upload, n, seed, steps, guidance, sampler], [gallery, files, message],
                 concurrency_id="generation", api_name="variations")


def _organiser_panel(cfg: ServeConfig, study) -> None:
    """The organiser's summary and CSV export, behind the organiser code."""
    with gr.Accordion("Study organiser: summary and CSV export", open=False):
        with gr.Row():
            code = gr.Textbox(label="Organiser code (printed when the server starts)", type="password", scale=2,
                              elem_id="organiser-code")
            refresh = gr.Button("Summary", scale=1)
            export = gr.Button("Export CSV", scale=1)
        organiser_message = _message()
        table = gr.Dataframe(label="Accuracy against chance (50 %, exact binomial test)", interactive=False,
                             elem_id="study-summary")
        csv_file = gr.File(label="Answers (CSV)")

    def on_summary(code):
        try:
            return h.study_summary(study, code), ""
        except Exception as exc:  # noqa: BLE001
            return None, _problem(exc)

    def on_export(code):
        try:
            return h.study_export(study, code, cfg.work_dir), ""
        except Exception as exc:  # noqa: BLE001
            return None, _problem(exc)

    refresh.click(on_summary, [code], [table, organiser_message], concurrency_limit=4, api_name="study_summary")
    export.click(on_export, [code], [csv_file, organiser_message], concurrency_limit=4, api_name="study_export")


def _study_tab(cfg: ServeConfig, study) -> None:
    if study is None:
        gr.Markdown("No reader study on this server: start it with `dallebrain serve --data PREPARED` (a prepared "
                    "data set whose test split gives the real slices).")
        return
    gr.Markdown("**Blinded reader study.** Each image is either a real held-out MRI slice or a synthetic one. For "
                "each: is it real or synthetic, how anatomically plausible is it, and does it show the stated "
                "contrast? Your answers and the time you take are stored under your name.")
    state = gr.State({})
    with gr.Row():
        reader = gr.Textbox(label="Reader name", placeholder="your name or an agreed pseudonym", scale=3,
                            elem_id="reader-name")
        start = gr.Button("Start / resume", scale=1, elem_id="study-start")
    progress = _message("study-progress")
    with gr.Row():
        with gr.Column(scale=3):
            # no share or download button: the reader looks, answers, moves on
            image = gr.Image(label="Slice", type="filepath", format="png", interactive=False, height=560,
                             elem_id="study-image", elem_classes=["mri"],
                             **_kwargs_for(gr.Image.__init__, buttons=["fullscreen"], show_share_button=False,
                                           show_download_button=False))
        with gr.Column(scale=2):
            stated = gr.Markdown(elem_id="stated-contrast")
            answer = gr.Radio(["real", "synthetic"], label="Real or synthetic?", elem_id="answer-real")
            plausibility = gr.Radio([("1 - implausible", 1), ("2", 2), ("3", 3), ("4", 4),
                                     ("5 - fully plausible", 5)], label="Anatomical plausibility",
                                    elem_id="answer-plausibility")
            contrast_ok = gr.Radio(["yes", "no"], label="Is the contrast the stated one?",
                                   elem_id="answer-contrast")
            submit = gr.Button("Submit answer", variant="primary", elem_id="study-submit")
            message = _message("study-message")
    _organiser_panel(cfg, study)

    def show(view: h.StudyView):
        stated_text = f"Stated contrast: {view.stated_contrast}" if view.stated_contrast else ""
        # Pixels, not the item's path: gradio caches them under a content hash, so nothing in the page names the
        # study folder or an item file, and the study folder never has to be reachable over HTTP.
        image = _pixels(view.image) if view.image else None
        # the answers are cleared for the next item
        return view.state, image, stated_text, view.progress, view.message, None, None, None

    outputs = [state, image, stated, progress, message, answer, plausibility, contrast_ok]

    def on_start(name):
        try:
            return show(h.study_start(study, name, model=cfg.model, device=cfg.device, steps=cfg.study_steps))
        except Exception as exc:  # noqa: BLE001
            return ({}, None, "", "", _problem(exc), None, None, None)

    def on_submit(state, answer, plausibility, contrast_ok):
        try:
            return show(h.study_submit(study, state, answer, plausibility, contrast_ok))
        except Exception as exc:  # noqa: BLE001
            return (state, gr.update(), gr.update(), gr.update(), _problem(exc), gr.update(), gr.update(),
                    gr.update())

    start.click(on_start, [reader], outputs, concurrency_id="generation", api_name="study_start")
    reader.submit(on_start, [reader], outputs, concurrency_id="generation")
    submit.click(on_submit, [state, answer, plausibility, contrast_ok], outputs, concurrency_limit=8,
                 api_name="study_submit")


def _theme():
    return gr.themes.Default(font=_FONTS, font_mono=_MONO)


def build_app(cfg: ServeConfig) -> gr.Blocks:
    """The page for a server configuration; opens (or creates) the reader study first."""
    from dallebrain.app.study import Study

    if cfg.work_dir is None:
        cfg.work_dir = Path(tempfile.mkdtemp(prefix="dallebrain-serve-"))
    elif not any(Path(cfg.work_dir).resolve().is_relative_to(Path(p).resolve())
                 for p in (tempfile.gettempdir(), os.getcwd())):
        raise ValueError(f"the work folder must lie under {tempfile.gettempdir()} or the current folder: gradio "
                         "serves files from nowhere else")
    study = None
    if cfg.study_dir is not None and (cfg.data is not None or (Path(cfg.study_dir) / "study.sqlite").is_file()):
        study = Study.open_or_create(cfg.study_dir, cfg.data, cfg.study_items)
        print(f"reader study: {study.folder} (organiser code for the summary and the export: "
              f"{study.organiser_code})")
    # gradio's cache (uploads and copies of results) is swept hourly of files older than a day, so uploads are
    # not kept for ever
    with gr.Blocks(title="Dall-e Brain", analytics_enabled=False, delete_cache=(3600, 86400),
                   **_kwargs_for(gr.Blocks.__init__, theme=_theme(), css=CSS)) as demo:
        gr.Markdown("# Dall-e Brain\nSynthetic healthy brain MRI slices from text. Every generated image is "
                    "synthetic and is not from any real person; not for diagnosis.")
        with gr.Tab("Generate", id="generate"):
            _generate_tab(cfg)
        with gr.Tab("Variations", id="variations"):
            _variations_tab(cfg)
        with gr.Tab("Reader study", id="study"):
            _study_tab(cfg, study)
        with gr.Tab("Anomaly", id="anomaly"):  # issue 15: its own module
            from dallebrain.anomaly.web import anomaly_tab

            anomaly_tab(cfg)
    # one generation at a time (the CPU or GPU is the bottleneck); at most 32 requests wait
    demo.queue(max_size=32, default_concurrency_limit=1)
    return demo


def launch(cfg: ServeConfig, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serve the page; with block=False it returns (demo, local URL) and serves from a background thread."""
    demo = build_app(cfg)
    # Nothing in allowed_paths: gradio then serves only its cache, where every returned file is copied under a
    # content hash. The study folder is blocked as well, so no later change can hand out the database.
    blocked = [str(Path(cfg.study_dir).resolve())] if cfg.study_dir is not None else []
    _, url, _ = demo.launch(server_name=host, server_port=port, share=False, show_error=False, quiet=not block,
                            allowed_paths=[], blocked_paths=blocked, auth=cfg.auth,
                            max_file_size=int(cfg.max_upload_mb * 2**20), enable_monitoring=False,
                            prevent_thread_lock=not block,
                            **_kwargs_for(demo.launch, theme=_theme(), css=CSS, ssr_mode=False,
                                          footer_links=["gradio"], mcp_server=False))
    return demo, url
