"""`dallebrain serve`: refusals before anything starts, and the page builds on the tiny pipeline."""

import pytest
import typer
from typer.testing import CliRunner

from dallebrain.app.cli import _is_loopback, serve_cmd

app = typer.Typer()
app.command()(serve_cmd)


@pytest.mark.parametrize(("args", "message"), [
    (["--port", "0"], "--port must be between 1 and 65535"),
    (["--model", "no-such-model"], "--model folder not found"),
    (["--data", "."], "--data is not a prepared data set"),
    (["--study-items", "1"], "--study-items must be between 2 and 1000"),
    (["--study-steps", "101"], "--study-steps must be between 1 and 100"),
    (["--max-upload-mb", "0"], "--max-upload-mb must be above 0 and at most 1024"),
    (["--lora-dir", "no-such-folder"], "--lora-dir folder not found"),
    (["--ageing-model", "no-such-folder"], "--ageing-model is not an ageing network folder"),
    (["--auth", "organiser"], "--auth must be USER:PASSWORD"),
    (["--auth", ":s3cret"], "--auth must be USER:PASSWORD"),
])
def test_bad_options_fail_with_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and f"error: {message}" in result.output
    assert "Traceback" not in result.output and "s3cret" not in result.output  # a password is never echoed


def test_loopback_detection():
    assert _is_loopback("127.0.0.1") and _is_loopback("localhost") and _is_loopback("::1")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.5")


def test_page_builds_with_four_tabs_and_a_queue(tiny_pipeline, tiny_prepared, tmp_path):
    pytest.importorskip("gradio")
    from dallebrain.app.ui import ServeConfig, build_app

    cfg = ServeConfig(model=tiny_pipeline, data=tiny_prepared, study_dir=tmp_path / "study", study_items=4)
    demo = build_app(cfg)
    labels = [block.label for block in demo.blocks.values() if type(block).__name__ == "Tab"]
    assert labels == ["Generate", "Variations", "Reader study", "Anomaly"]
    assert demo._queue is not None and (tmp_path / "study" / "study.sqlite").is_file()
    assert cfg.work_dir is not None and cfg.work_dir.is_dir()
