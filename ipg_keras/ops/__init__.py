"""Box and NMS operations shared by the data, model and export code."""

from ipg_keras.ops.box_formats import BOX_FORMATS, check_box_format, convert_boxes
from ipg_keras.ops.boxes import (
    BoxCoder,
    box_area,
    clip_boxes,
    pairwise_giou,
    pairwise_iou,
)
from ipg_keras.ops.nms import batched_class_aware_nms

# Name scope of the ops that a full-int8 TFLite export keeps in float: box
# coordinate math (decoding, proposals, RoI sample positions and FPN level
# assignment), score ranking, NMS, and the concatenation of per-level head
# outputs (int8 would force one scale on all levels). 8 bits are too few for
# pixel coordinates, and a shared concat scale clips the levels with larger values.
POSTPROCESS_SCOPE = "postprocess"

__all__ = [
    "BOX_FORMATS",
    "POSTPROCESS_SCOPE",
    "BoxCoder",
    "batched_class_aware_nms",
    "box_area",
    "check_box_format",
    "clip_boxes",
    "convert_boxes",
    "pairwise_giou",
    "pairwise_iou",
]
