"""The per-contrast texture table of summary.md's "Where blur comes from": one row per contrast with each set's
GLCM distance and clipped share, and no table when the columns have no per-contrast texture (a small run)."""

from dallebrain.evaluation import blur_report


def _column(frechet: dict, top: dict) -> dict:
    return {"texture": {"frechet": 1.0, "by_contrast": {m: {"frechet": v, "ks_mean": 0.1} for m, v in frechet.items()}},
            "grey_levels": {m: {"wasserstein1": 0.0, "jensen_shannon": 0.0, "top_share": v} for m, v in top.items()},
            "sharpness": {"all": {"ratio": 1.0, "real": 0.07}, "by_contrast": {}, "by_contrast_plane": {}}}


def test_texture_rows_per_contrast_with_every_sets_values():
    metrics = {"targets": [], "columns": {
        "real": _column({"T1w": 3.2, "PDw": 1.8}, {"T1w": 0.014, "PDw": 0.016}),
        "ldm": _column({"T1w": 16.7, "PDw": 627.4}, {"T1w": 0.04, "PDw": 0.157})}}
    header, rows = blur_report.texture_table(metrics)
    assert header == ["contrast", "GLCM Frechet, real train", "GLCM Frechet, ldm", "brain at >= 0.99, real train",
                      "brain at >= 0.99, ldm"]
    assert [r[0] for r in rows] == ["T1w", "PDw"]
    assert rows[1][2] == "627.4" and rows[1][4] == "0.157"
    summary = "\n".join(blur_report.summary_lines(metrics))
    assert "| PDw | 1.8 | 627.4 | 0.016 | 0.157 |" in summary and blur_report.TEXTURE_NOTE in summary
    page = blur_report.html_section(metrics, lambda header, rows, left=0: f"<table>{header}{rows}</table>")
    assert page.count("<table>") == 3 and "627.4" in page  # targets, sharpness, texture


def test_no_texture_table_without_per_contrast_texture():
    column = {"texture": {"frechet": 1.0}, "grey_levels": {}}
    assert blur_report.texture_table({"columns": {"real": column, "ldm": column}}) is None
    column = {"texture": {"frechet": 1.0, "by_contrast": {}}, "grey_levels": {}}  # every contrast under 8 slices
    assert blur_report.texture_table({"columns": {"real": column, "ldm": column}}) is None
