"""The level judge: template-derived slices at known levels come back at their level; bad inputs are refused;
`generate` with a plane but no level places the NIfTI where the judge reads it, recorded as estimated."""

import json

import nibabel as nib
import numpy as np
import pytest

from cli_inprocess import run_cli
from dallebrain.judges.level import estimate_levels


class TemplateJudge:
    """A perfect segmenter for slices drawn from the template priors: returns the priors themselves (so the test
    checks the level search, not the network)."""

    def __init__(self, maps):
        self.maps = maps

    def probabilities(self, images):
        return self.maps


def _template_slices(orientation, levels, size=64):
    from dallebrain.data.grid import extract_slice, prepared_grid
    from dallebrain.data.templates import tissue_priors

    grid = prepared_grid(size)
    priors = tissue_priors(grid)
    maps, images = [], []
    for level in levels:
        index = grid.index_of(orientation, level)
        csf, gm, wm = (extract_slice(v, orientation, index) for v in (priors.csf, priors.gm, priors.wm))
        background = np.clip(1 - csf - gm - wm, 0, 1)
        maps.append(np.stack([background, csf, np.zeros_like(csf), gm, wm]))
        images.append(np.clip(0.2 * csf + 0.5 * gm + 0.9 * wm, 0, 1))
    return np.stack(images).astype(np.float32), np.stack(maps)


@pytest.mark.parametrize("orientation, levels", [("axial", [-30.0, 0.0, 23.0, 50.0]),
                                                 ("coronal", [-70.0, -20.0, 10.0, 40.0]),
                                                 ("sagittal", [6.0, 30.0, -45.0])])
def test_template_slices_come_back_at_their_level(orientation, levels):
    images, maps = _template_slices(orientation, levels)
    found = estimate_levels(images, [orientation] * len(levels), TemplateJudge(maps))
    expected = np.abs(levels) if orientation == "sagittal" else np.asarray(levels)  # no hemisphere in a sagittal
    np.testing.assert_allclose(found, expected, atol=3.1)  # one 3 mm plane of the 64-pixel grid


def test_bad_inputs_are_refused():
    images, maps = _template_slices("axial", [0.0])
    with pytest.raises(ValueError, match="one orientation per image"):
        estimate_levels(images, ["axial", "axial"], TemplateJudge(maps))
    with pytest.raises(ValueError, match="unknown orientation 'oblique'"):
        estimate_levels(images, ["oblique"], TemplateJudge(maps))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        estimate_levels(images * 3, ["axial"], TemplateJudge(maps))


def test_generate_with_a_plane_but_no_level_records_an_estimated_level(tiny_pipeline, tmp_path):
    done = run_cli("generate", "axial T1-weighted slice of a brain", "--model", tiny_pipeline, "--steps", "1",
                   "--out", "o", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "o" / "seed-000000.json").read_text())
    assert "estimated from the image by the level judge" in record["placement"]
    level = record["level_estimated_mm"]
    img = nib.load(tmp_path / "o" / "seed-000000.nii.gz")
    assert int(img.header["sform_code"]) == 4  # placed in MNI152, as estimated
    assert (img.affine @ np.array([0, 0, 0, 1]))[2] == pytest.approx(level)  # an axial slice sits at z = level


def test_judge_level_command_reads_a_prepared_slice_and_refuses_bad_input(tmp_path):
    """`dallebrain judge level` on a template-made axial slice at z = 23 mm (the shipped tissue judge reads it)."""
    from typer.testing import CliRunner

    from dallebrain.cli import app
    from dallebrain.data.slicing import save_png16

    images, _ = _template_slices("axial", [23.0], size=128)
    save_png16(images[0], tmp_path / "slice.png")
    done = CliRunner().invoke(app, ["judge", "level", str(tmp_path / "slice.png"), "--orientation", "axial", "--json"])
    assert done.exit_code == 0, done.output
    assert abs(json.loads(done.output)[0]["level_mm"] - 23.0) <= 12.0  # a pseudo-T1 the judge never saw in training
    bad = CliRunner().invoke(app, ["judge", "level", str(tmp_path / "none.png"), "--orientation", "axial"])
    assert bad.exit_code == 2 and "no such file" in bad.output
    bad = CliRunner().invoke(app, ["judge", "level", str(tmp_path / "slice.png"), "--orientation", "oblique"])
    assert bad.exit_code == 2 and "unknown orientation" in bad.output
