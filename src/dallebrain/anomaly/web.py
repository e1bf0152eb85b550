"""The web page's Anomaly tab: upload a slice, see its pseudo-healthy reconstruction and the anomaly overlay.

Registered by app/ui.py (one line); it uses the page's own upload checks, pipeline cache and generation lock
(app/handlers.py), and what comes from the browser is data: the uploaded file is copied under a fixed name, the
prompt is length-checked, the method chosen from a list, and messages are shown as text. The thresholds come
from the normal model the server was started with (`dallebrain serve --anomaly-normal DIR`)."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from dallebrain.anomaly.methods import METHODS

ANOMALY_OFF = ("anomaly detection is off on this server (its operator turns it on with --anomaly-normal, the "
               "normal/ folder of a 'dallebrain evaluate-anomaly' run)")
SAFE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,150}")
DEFAULT_WEB_METHOD = "diffusion"  # one noise level: the page answers in seconds, not minutes


def find_anomalies(upload, prompt, method, cfg):
    """(images for the gallery, files to download, message) for one uploaded slice; RequestError in one line."""
    from dallebrain.anomaly.detect import DetectOptions, detect
    from dallebrain.app import handlers as h
    from dallebrain.app.untrusted import markdown_text

    if cfg.anomaly_normal is None:
        raise h.RequestError(ANOMALY_OFF)
    if not upload:
        raise h.RequestError("upload a slice first (PNG or single-slice NIfTI)")
    path = Path(upload)
    suffix = next((s for s in h.UPLOAD_SUFFIXES if path.name.lower().endswith(s)), None)
    if suffix is None:
        raise h.RequestError(f"{path.name}: upload a PNG (.png) or a NIfTI (.nii, .nii.gz)")
    h.check_upload_size(path, cfg.max_upload_mb)
    prompt = str(prompt or "").strip()
    if len(prompt) > h.MAX_PROMPT_CHARS:
        raise h.RequestError(f"the description is {len(prompt)} characters long; at most {h.MAX_PROMPT_CHARS}")
    if method not in METHODS:
        raise h.RequestError(f"unknown method: choose one of {', '.join(METHODS)}")
    Path(cfg.work_dir).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="anomaly-", dir=cfg.work_dir))
    # The upload is copied into a fresh folder of its own under its plain name (prepare's slice names say the
    # plane, level and contrast), or "slice" when the name is anything but one plain file name.
    stem = path.name[: -len(suffix)]
    stem = stem if SAFE_STEM.fullmatch(stem) else "slice"
    slice_path = folder / f"{stem}{suffix}"
    shutil.copyfile(path, slice_path)
    try:
        pipe = h.get_pipeline(cfg.model, "ldm", None, 1.0, cfg.device)
        with h.GENERATION_LOCK:
            record = detect(DetectOptions((slice_path,), folder / "out", normal=Path(cfg.anomaly_normal),
                                          method=method, model=cfg.model, prompt=prompt or None), pipe)[0]
    except (ValueError, FileExistsError) as exc:
        raise h.RequestError(str(exc).splitlines()[0].replace(str(folder), "the upload")) from exc
    out = folder / "out"
    images = [(str(out / f"{stem}{k}"), label) for k, label in (("_pseudo_healthy.png", "pseudo-healthy"),
                                                                 ("_anomaly_overlay.png", "anomaly overlay"))
              if (out / f"{stem}{k}").is_file()]
    files = sorted(str(p) for p in out.glob(f"{stem}_*") if p.is_file())
    verdict = "anomalous" if record["anomalous"] else "within the healthy range"
    message = (f"{verdict}: slice score {record['slice_score']:.3g} (threshold {record['threshold']['slice']:.3g}), "
               f"{record['anomalous_area_mm2']:.0f} mm2 above the pixel threshold; method {method}, read as "
               f"{record['attributes']['orientation']} {record['attributes']['modality']} at "
               f"{record['attributes']['slice_mm']:+.1f} mm")
    return images, files, markdown_text(message)


def anomaly_tab(cfg) -> None:
    """The tab's layout and wiring (called inside gr.Blocks by app/ui.py)."""
    import gradio as gr

    from dallebrain.app import handlers as h
    from dallebrain.app.untrusted import markdown_text

    gr.Markdown("Upload a slice (PNG, or a single-slice NIfTI) to see what a healthy brain would look like there "
                "(the pseudo-healthy reconstruction) and where the slice departs from it. Research use only; not "
                "for diagnosis." + ("" if cfg.anomaly_normal else f"\n\n*{ANOMALY_OFF}.*"))
    with gr.Row():
        with gr.Column(scale=2):
            upload = gr.File(label=f"Slice (.png, .nii, .nii.gz; at most {cfg.max_upload_mb:g} MB)",
                             file_types=list(h.UPLOAD_SUFFIXES), type="filepath", elem_id="anomaly-upload")
            prompt = gr.Textbox(label="Plane, level and contrast (when the file does not say)", max_lines=2,
                                placeholder="axial FLAIR at z = 18 mm", elem_id="anomaly-prompt")
            method = gr.Dropdown(list(METHODS), value=DEFAULT_WEB_METHOD, label="Method", elem_id="anomaly-method")
            button = gr.Button("Find anomalies", variant="primary", elem_id="anomaly-button")
        with gr.Column(scale=3):
            message = gr.Markdown(elem_id="anomaly-message", latex_delimiters=[])
            gallery = gr.Gallery(label="Pseudo-healthy reconstruction and anomaly overlay", columns=2, height="auto",
                                 object_fit="contain", format="png", elem_classes=["mri"])
            files = gr.File(label="Downloads: maps and mask (NIfTI), overlay (PNG), JSON", file_count="multiple")

    def run(upload, prompt, method):
        try:
            return find_anomalies(upload, prompt, method, cfg)
        except h.RequestError as exc:
            return None, None, f"**Not done:** {markdown_text(exc)}"
        except Exception:  # noqa: BLE001 - the page shows one line, the log keeps the rest
            import logging

            logging.getLogger("dallebrain.app").exception("anomaly request failed")
            return None, None, "**Not done:** the request failed on the server (details in the server log)"

    button.click(run, [upload, prompt, method], [gallery, files, message], concurrency_id="generation",
                 api_name="anomaly")
