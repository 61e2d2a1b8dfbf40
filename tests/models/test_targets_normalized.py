"""`fit` targets: boxes that look normalized (all in [0, 1] on images of 32 px or more)
stop both detectors with a clear message, instead of training on 1-pixel objects."""

import numpy as np
import pytest
import tensorflow as tf

from model_helpers import TINY_BACKBONE


def _detector(kind):
    from ipg_keras import IPGFasterRCNN, IPGRetinaNet

    common = dict(backbone="resnet18", fpn_channels=16, backbone_kwargs=TINY_BACKBONE)
    if kind == "retinanet":
        return IPGRetinaNet(3, head_width=16, head_depth=1, **common)
    return IPGFasterRCNN(3, roi_head_width=32, rpn_head_width=16, num_rois=16, **common)


@pytest.mark.parametrize("kind", ["retinanet", "faster_rcnn"])
def test_normalized_targets_are_refused(kind):
    model = _detector(kind)
    x = np.zeros((2, 128, 128, 3), "float32")
    pixels = {"boxes": np.array([[[10, 20, 40, 60], [-1, -1, -1, -1]], [[5, 5, 50, 50], [60, 60, 90, 100]]],
                                "float32"),
              "classes": np.array([[0, -1], [1, 2]], "int32")}
    raw = model(x, training=True)
    model.compute_loss(x, pixels, raw)  # pixel boxes: fine
    normalized = {"boxes": pixels["boxes"].copy(), "classes": pixels["classes"]}
    normalized["boxes"][1] = [[0.05, 0.05, 0.4, 0.4], [0.5, 0.5, 0.7, 0.8]]
    message = r"Target boxes of(.|\n)*1(.|\n)*look normalized(.|\n)*0.05, 0.05, 0.4, 0.4"
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        model.compute_loss(x, normalized, raw)
