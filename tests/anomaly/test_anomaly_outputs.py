"""The overlay PNG: anatomy unpainted below the threshold, detections coloured and outlined."""

import numpy as np

from dallebrain.anomaly.outputs import overlay_rgb


def test_the_overlay_paints_only_what_passes_the_threshold_and_outlines_the_detection():
    image = np.full((20, 20), 0.5, np.float32)
    heat = np.full((20, 20), 0.9, np.float32)  # just under the threshold everywhere: a healthy slice's map
    heat[5:12, 5:12] = 3.0
    mask = heat > 1.0
    rgb = overlay_rgb(image, heat, mask, threshold=1.0)
    grey = round(0.5 * 255)
    assert (rgb[15:, 15:] == grey).all()  # below the threshold: the slice as it is
    assert tuple(rgb[5, 8]) == (0, 255, 255)  # the detection's edge in cyan
    inside = rgb[8, 8].astype(int)
    assert inside[0] > inside[2] + 60  # coloured (red to yellow), not grey
