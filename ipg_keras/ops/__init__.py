"""Box and NMS operations shared by the data, model and export code."""

from ipg_keras.ops.boxes import (
    BoxCoder,
    box_area,
    clip_boxes,
    pairwise_giou,
    pairwise_iou,
)
from ipg_keras.ops.nms import batched_class_aware_nms

__all__ = [
    "BoxCoder",
    "batched_class_aware_nms",
    "box_area",
    "clip_boxes",
    "pairwise_giou",
    "pairwise_iou",
]
