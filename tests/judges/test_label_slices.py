"""`prepare` slices the simulated cohort's ground-truth tissue map beside each image (label_path)."""

import numpy as np
import pandas as pd
from PIL import Image

from dallebrain.data.slicing import TISSUE_LABELS, load_png


def _label(root, path):
    with Image.open(root / path) as im:
        assert im.mode == "L"  # 8-bit labels
        return np.asarray(im)


def test_every_slice_has_a_label_png_of_its_geometry(tiny_prepared):
    table = pd.read_parquet(tiny_prepared / "metadata.parquet")
    assert table["label_path"].notna().all()
    # one label PNG per position, shared by the contrasts cut there
    per_position = table.groupby(["subject_id", "orientation", "slice_index"])["label_path"].nunique()
    assert (per_position == 1).all()
    for row in table.sample(30, random_state=0).itertuples():
        image, label = load_png(tiny_prepared / row.image_path), _label(tiny_prepared, row.label_path)
        assert label.shape == image.shape
        assert set(np.unique(label)) <= {0, 1, 2, 3, 5}  # a healthy cohort: no lesion label
        # the image is zero outside the brain mask, which is the label map's non-background
        assert ((image > 0) <= (label > 0)).mean() > 0.99


def test_labels_align_with_the_t1_contrast(tiny_prepared):
    # Misregistered labels would mix the tissues; aligned ones order them as T1 does: CSF < GM < WM.
    table = pd.read_parquet(tiny_prepared / "metadata.parquet")
    rows = table[(table.modality == "T1w") & (table.orientation == "axial") & (table.slice_mm.abs() <= 24)]
    means = {name: [] for name in ("csf", "ventricles", "gm", "wm")}
    for row in rows.itertuples():
        image, label = load_png(tiny_prepared / row.image_path), _label(tiny_prepared, row.label_path)
        for name in means:
            inside = label == TISSUE_LABELS[name]
            if inside.sum() >= 5:
                means[name].append(float(image[inside].mean()))
    csf, vent, gm, wm = (np.mean(means[n]) for n in ("csf", "ventricles", "gm", "wm"))
    assert len(means["ventricles"]) >= 4  # the lateral ventricles are marked on axial slices near z = 0..24
    assert vent < gm and csf < gm < wm
    assert vent < 0.6 * wm


def test_ventricles_are_csf_inside_the_ventricle_labels(tiny_prepared):
    table = pd.read_parquet(tiny_prepared / "metadata.parquet")
    axial = table[(table.orientation == "axial") & (table.modality == "T1w")]
    areas = {row.slice_mm: int((_label(tiny_prepared, row.label_path) == TISSUE_LABELS["ventricles"]).sum())
             for row in axial[axial.subject_id == axial.subject_id.iloc[0]].itertuples()}
    # through the lateral ventricles (z ~ +18 mm) there are ventricle pixels; at the vertex (z >= 60) none
    assert max(a for z, a in areas.items() if 0 <= z <= 30) > 0
    assert all(a == 0 for z, a in areas.items() if z >= 60)
