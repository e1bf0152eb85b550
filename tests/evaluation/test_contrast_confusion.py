"""benchmarks/contrast_confusion.py refuses an evaluate folder it cannot read in one line."""

import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "contrast_confusion.py"


def test_contrast_confusion_names_what_is_missing_in_one_line(tmp_path):
    def refused(*extra):
        done = subprocess.run([sys.executable, str(SCRIPT), "--eval", str(tmp_path), *extra], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        return done.stderr

    assert "holds no samples_unclip.npz" in refused("--route", "unclip")
    np.savez(tmp_path / "samples_ldm.npz", images=np.zeros((1, 8, 8), np.float16), prompts=np.array(["axial T1w"]))
    assert f"no evaluation encoder in {tmp_path / 'encoder'}" in refused()
    assert f"no evaluation encoder in {tmp_path / 'cache'}" in refused("--encoder", str(tmp_path / "cache"))
