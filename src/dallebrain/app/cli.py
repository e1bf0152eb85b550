"""`dallebrain serve`: the web page. gradio is imported inside the command, so `dallebrain --help` stays instant
and the rest of the CLI works without the `web` extra."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import typer

from dallebrain.pipelines import defaults as D


def _check_device(device: str) -> None:
    """A device torch knows and this machine has: "gpu", or cuda without one, started a server whose every request
    then failed."""
    from dallebrain.api import check_device

    try:
        check_device(device)
    except ValueError as exc:
        _fail(f"--{exc}")


def _fail(message: str) -> None:
    from dallebrain.cli._common import fail

    fail(message)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_cmd(
    host: str = typer.Option("127.0.0.1", help="Address to listen on; anything but loopback exposes the page "
                             "(and the study) to the network."),
    port: int = typer.Option(7860, help="Port."),
    model: Path = typer.Option(None, help="Pipeline folder (default: the model shipped in the package)."),
    data: Path = typer.Option(None, help="Prepared data set: its test split gives the reader study's real slices."),
    study_dir: Path = typer.Option(Path("dallebrain-study"), help="Reader study folder (study.sqlite, images/); "
                                   "created from --data when new, reopened otherwise."),
    study_items: int = typer.Option(20, help="Items in a new study: half real, half synthetic."),
    study_steps: int = typer.Option(D.STEPS, help="Denoising steps of the study's synthetic slices."),
    device: str = typer.Option(None, help="cpu, cuda, ... (default: cuda if available)."),
    max_upload_mb: float = typer.Option(20.0, help="Largest upload accepted (a slice PNG or NIfTI is well under "
                                        "1 MB); larger ones are refused before they are stored."),
    lora_dir: Path = typer.Option(None, help="Folder of LoRA adapters (one sub-folder each) the page may choose "
                                  "from by name; without it LoRA is off."),
    anomaly_normal: Path = typer.Option(None, help="Normal model folder for the Anomaly tab (normal/ of a "
                                        "'dallebrain evaluate-anomaly' run); without it the tab is off."),
    ageing_model: Path = typer.Option(None, help="Ageing network folder of the ageing sequence (a 'dallebrain "
                                      "train ageing' folder; default: the shipped one)."),
    auth: str = typer.Option(None, envvar="DALLEBRAIN_SERVE_AUTH", show_envvar=True,
                             help="USER:PASSWORD for a login page (gradio auth). Send it over TLS only: see README, "
                             "'Threat model'."),
) -> None:
    """Serve the web page: generate, variations and a blinded reader study (needs gradio: pip install
    'dallebrain\\[web]')."""
    if not 1 <= port <= 65535:
        _fail(f"--port must be between 1 and 65535, got {port}")
    if device is not None:
        _check_device(device)
    if model is not None and not model.is_dir():
        _fail(f"--model folder not found: {model}")
    if data is not None and not (data / "metadata.parquet").is_file():
        _fail(f"--data is not a prepared data set (no metadata.parquet): {data}")
    if not 2 <= study_items <= 1000:
        _fail(f"--study-items must be between 2 and 1000, got {study_items}")
    if not 1 <= study_steps <= 100:
        _fail(f"--study-steps must be between 1 and 100, got {study_steps}")
    if study_dir.exists() and not study_dir.is_dir():
        _fail(f"--study-dir exists and is not a folder: {study_dir}")
    if not 0 < max_upload_mb <= 1024:
        _fail(f"--max-upload-mb must be above 0 and at most 1024, got {max_upload_mb:g}")
    if lora_dir is not None and not lora_dir.is_dir():
        _fail(f"--lora-dir folder not found: {lora_dir}")
    if anomaly_normal is not None and not (anomaly_normal / "normal_model.json").is_file():
        _fail(f"--anomaly-normal is not a normal model folder (no normal_model.json): {anomaly_normal}")
    if ageing_model is not None:
        from dallebrain.ageing.network import CONFIG_FILE, WEIGHTS_FILE

        if not (ageing_model / WEIGHTS_FILE).is_file() or not (ageing_model / CONFIG_FILE).is_file():
            _fail(f"--ageing-model is not an ageing network folder (needs {WEIGHTS_FILE} and {CONFIG_FILE}): "
                  f"{ageing_model}")
    login = None
    if auth is not None:
        user, _, password = auth.partition(":")
        if not user.strip() or not password:
            _fail("--auth must be USER:PASSWORD with both parts non-empty")  # never echo a password
        login = (user.strip(), password)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage reports from a hospital network
    try:
        import gradio  # noqa: F401
    except ImportError:
        _fail("the web page needs gradio: pip install 'dallebrain[web]'")
    from dallebrain.app.ui import ServeConfig, launch

    if not _is_loopback(host):
        who = "anyone with the login" if login else "anyone who can reach this machine"
        typer.echo(f"warning: listening on {host}: {who} can use the page and the reader study; put a reverse "
                   "proxy with TLS in front (README, 'Threat model')", err=True)
    use_study = data is not None or (study_dir / "study.sqlite").is_file()
    config = ServeConfig(model=model, data=data, study_dir=study_dir if use_study else None,
                         study_items=study_items, study_steps=study_steps, device=device, lora_dir=lora_dir,
                         max_upload_mb=max_upload_mb, auth=login, anomaly_normal=anomaly_normal,
                         ageing_model=ageing_model)
    try:
        launch(config, host, port)
    except (ValueError, OSError) as exc:
        from dallebrain.cli._common import first_line

        _fail(first_line(exc))
