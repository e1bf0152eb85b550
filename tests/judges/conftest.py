"""Phantom slices with exact tissue labels, and a tissue judge trained a few steps on them (module scale: seconds)."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

SIZE = 32
# label PNG value -> intensity: WM bright, GM mid, CSF and ventricles dark (a T1-like contrast)
INTENSITY = {0: 0.0, 1: 0.15, 5: 0.25, 2: 0.55, 3: 0.95}


def phantom(rng, age=None):
    """Concentric 'brain': CSF rim, GM ring, WM core, and at the centre a ventricle that grows with `age` (random
    without one)."""
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    r = np.hypot(yy, xx * rng.uniform(0.8, 1.2))
    label = np.zeros((SIZE, SIZE), np.uint8)
    label[r < 14] = 1
    label[r < 12] = 2
    label[r < 8] = 3
    radius = rng.uniform(1.5, 5) if age is None else 1.5 + 3.5 * (age - 20) / 65 + rng.normal(0, 0.2)
    label[r < radius] = 5
    image = np.vectorize(INTENSITY.get)(label) + rng.normal(0, 0.02, label.shape) * (label > 0)
    return np.clip(image, 0, 1).astype(np.float32), label


@pytest.fixture(scope="session")
def make_phantom():
    return phantom


@pytest.fixture(scope="session")
def phantom_set(tmp_path_factory):
    """A prepared-like folder: 24 axial phantoms at z = 20 mm of 24 'subjects' aged 20-85, labels beside them."""
    root = tmp_path_factory.mktemp("phantoms")
    (root / "slices").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i, age in enumerate(np.linspace(20, 85, 24)):
        image, label = phantom(rng, age)
        Image.fromarray(np.round(image * 65535).astype(np.uint16)).save(root / "slices" / f"s{i}.png")
        Image.fromarray(label).save(root / "slices" / f"s{i}_label.png")
        rows.append({"image_path": f"slices/s{i}.png", "label_path": f"slices/s{i}_label.png",
                     "split": "val" if i % 6 == 5 else "train", "subject_id": f"p{i}", "age": float(age),
                     "orientation": "axial", "slice_mm": 20.0})
    pd.DataFrame(rows).to_parquet(root / "metadata.parquet")
    return root


@pytest.fixture(scope="session")
def trained(phantom_set, tmp_path_factory):
    from dallebrain.judges.train import TrainOptions, train

    out = tmp_path_factory.mktemp("judge")
    train(TrainOptions(phantom_set, out, steps=120, batch=8, crop=SIZE, lr=1e-2, channels=(8, 16, 16)),
          progress=False)
    return out
