"""The web page's Anomaly tab: its request handler (uploads are data, messages one line) and its place on the page."""

from types import SimpleNamespace

import pytest

pytest.importorskip("gradio")

from dallebrain.anomaly.web import ANOMALY_OFF, find_anomalies  # noqa: E402
from dallebrain.app.handlers import RequestError  # noqa: E402


@pytest.fixture(scope="module")
def normal(tiny_pipeline, tiny_prepared, tmp_path_factory):
    """A normal model with thresholds for intensity_z, fitted on the tiny cohort at an axial T2w level."""
    from dallebrain.anomaly.detect import DetectOptions, detect

    path = _slice(tiny_prepared)
    out = tmp_path_factory.mktemp("web-normal")
    detect(DetectOptions((path,), out, data=tiny_prepared, method="intensity_z", model=tiny_pipeline))
    return out / "normal"


def _slice(tiny_prepared):
    import pandas as pd

    table = pd.read_parquet(tiny_prepared / "metadata.parquet")
    rows = table[(table["modality"] == "T2w") & (table["orientation"] == "axial")]
    return tiny_prepared / rows.iloc[len(rows) // 2]["image_path"]


def _cfg(tmp_path, tiny_pipeline, normal=None):
    return SimpleNamespace(anomaly_normal=normal, max_upload_mb=1.0, work_dir=tmp_path, model=tiny_pipeline,
                           device="cpu")


def test_an_uploaded_slice_gets_an_overlay_downloads_and_a_verdict(normal, tiny_pipeline, tiny_prepared, tmp_path):
    images, files, message = find_anomalies(str(_slice(tiny_prepared)), "", "intensity_z",
                                            _cfg(tmp_path, tiny_pipeline, normal))
    assert [label for _, label in images] == ["anomaly overlay"]  # intensity_z makes no reconstruction
    stem = _slice(tiny_prepared).name[:-4]  # prepare's name: it says the plane, level and contrast
    names = {f.rsplit("/", 1)[-1] for f in files}
    assert {f"{stem}_anomaly_map.nii.gz", f"{stem}_anomaly_mask.nii.gz", f"{stem}_anomaly.json"} <= names
    assert "slice score" in message and "T2w" in message


def test_bad_uploads_are_refused_in_one_line_without_a_server_path(normal, tiny_pipeline, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\x00" * (2 * 2**20))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("L", (64, 64), 100).save(blank)
    cases = [(None, "", "intensity_z", "upload a slice"), (str(text), "", "intensity_z", "upload a PNG"),
             (str(big), "", "intensity_z", "MB"), (str(blank), "", "gan", "unknown method"),
             (str(blank), "x" * 5000, "intensity_z", "characters"), (str(blank), "", "intensity_z", "--prompt")]
    for upload, prompt, method, words in cases:
        with pytest.raises(RequestError, match=words) as info:
            find_anomalies(upload, prompt, method, _cfg(tmp_path / "work", tiny_pipeline, normal))
        assert "\n" not in str(info.value) and str(tmp_path / "work") not in str(info.value)
    with pytest.raises(RequestError, match="off on this server"):
        find_anomalies(str(blank), "", "intensity_z", _cfg(tmp_path, tiny_pipeline))
    assert ANOMALY_OFF.startswith("anomaly detection is off")
