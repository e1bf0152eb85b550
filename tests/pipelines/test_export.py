
import torch

from cli_inprocess import run_cli
from dallebrain.models.text import load_text_encoder, load_tokenizer, tokenize
from dallebrain.pipelines.text_encoder import DELTA_FILE, load_pipeline_text_encoder, save_pipeline_text_encoder


def test_compact_text_encoder_keeps_only_changed_layers(tmp_path):
    encoder = load_text_encoder()
    with torch.no_grad():  # as if brain-CLIP had tuned the top layer
        for p in encoder.encoder.layer[-1].parameters():
            p.add_(0.01)
    save_pipeline_text_encoder(encoder, tmp_path / "te", compact=True)
    assert (tmp_path / "te" / DELTA_FILE).stat().st_size < 10_000_000  # MiniLM itself is ~90 MB
    loaded = load_pipeline_text_encoder(tmp_path / "te")
    tok = tokenize(load_tokenizer(), ["axial T1-weighted brain MRI"])
    with torch.no_grad():
        a = encoder(**tok).last_hidden_state
        b = loaded(**tok).last_hidden_state
    torch.testing.assert_close(a, b)


def test_export_makes_a_stock_loadable_copy(tiny_pipeline, tmp_path):
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "stock"
    result = run_cli("export", "--model", tiny_pipeline, "--out", out)
    assert result.returncode == 0, result.stderr
    assert not (out / "checkpoints").exists() and not (out / "cache").exists()
    pipe = StableDiffusionPipeline.from_pretrained(str(out), safety_checker=None)
    image = pipe("axial FLAIR", num_inference_steps=1, height=64, width=64, output_type="np").images
    assert image.shape == (1, 64, 64, 1)
    again = run_cli("export", "--model", tiny_pipeline, "--out", out)
    assert again.returncode == 2 and "not empty" in again.stderr


def test_release_folder_records_names_and_hashes_not_paths(tiny_pipeline, tiny_prepared, tmp_path):
    import hashlib
    import json

    from dallebrain.pipelines.export import release_folder

    release = release_folder(tiny_pipeline, tmp_path / "release")
    trained_on = json.loads((release / "dallebrain.json").read_text())["trained_on"]
    assert trained_on["data"] == tiny_prepared.resolve().name
    table = (tiny_prepared / "metadata.parquet").read_bytes()
    assert trained_on["metadata_sha256"] == hashlib.sha256(table).hexdigest()
    for path in release.rglob("*.json"):
        text = path.read_text()
        assert "_name_or_path" not in text and str(tmp_path.parent) not in text, path.name
