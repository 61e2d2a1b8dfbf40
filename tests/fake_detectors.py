"""Stand-in detectors shared by the test modules (tests/ is on sys.path via conftest)."""

from __future__ import annotations

import numpy as np


class BrightBoxDetector:
    """'Detects' the bright pixels (> 128) of each input as one box (score 0.9, class `label`); 64 px input."""

    input_size = (64, 64)
    format = "keras"

    def __init__(self, label: int = 0):
        self.label = label

    def __call__(self, images):
        images = np.asarray(images)
        out = {"boxes": np.zeros((len(images), 1, 4), "float32"), "scores": np.zeros((len(images), 1), "float32"),
               "classes": np.full((len(images), 1), self.label, "int32"), "num_detections": np.zeros(len(images), "int32")}
        for i, image in enumerate(images):
            ys, xs = np.nonzero(image[..., 0] > 128)
            if len(ys):
                out["boxes"][i, 0] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
                out["scores"][i, 0], out["num_detections"][i] = 0.9, 1
        return out
