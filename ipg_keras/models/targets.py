"""Validation of training targets and the per-replica loss normaliser."""

from __future__ import annotations

import tensorflow as tf
from keras import ops

from ipg_keras.ops.box_formats import convert_boxes


def unpack_targets(y, num_classes: int, bounding_box_format: str = "xyxy", image_size=None):
    """Checks padded targets and returns `(boxes [B, M, 4] f32 xyxy pixels, classes [B, M] i32, valid [B, M])`.

    `y` is `{"boxes": [B, M, 4], "classes": [B, M]}` padded with -1 (class
    -1 = padding), boxes in `bounding_box_format` (`rel_` formats relative to
    `image_size` = `(height, width)` of the padded input images). Boxes are
    converted to xyxy pixels first (padding rows stay -1), then checked. Bad
    targets fail loudly, in eager and graph mode alike: an inverted box or a
    class id outside `[0, num_classes)` would otherwise train silently on garbage.
    """
    if not isinstance(y, dict) or "boxes" not in y or "classes" not in y:
        raise ValueError(
            f"Detection targets must be a dict {{'boxes': [B, M, 4] {bounding_box_format}, 'classes': [B, M]}} "
            f"padded with -1; got {type(y).__name__}"
            + (f" with keys {sorted(y)}" if isinstance(y, dict) else "")
            + ". ipg_keras.data.make_batches builds this form."
        )
    boxes = ops.cast(y["boxes"], "float32")
    classes = ops.cast(y["classes"], "int32")
    if len(boxes.shape) != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"Target boxes must have shape [B, M, 4], got {boxes.shape}.")
    valid = classes >= 0
    if bounding_box_format != "xyxy":
        height, width = (None, None) if image_size is None else image_size
        boxes = convert_boxes(boxes, bounding_box_format, "xyxy", height, width, valid=valid)
    inverted = valid & ((boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1]))
    tf.debugging.Assert(
        ~ops.any(inverted),
        [f"Target boxes in bounding_box_format={bounding_box_format!r} must give x2 >= x1 and y2 >= y1 "
         "in xyxy pixels (got xmax < xmin or ymax < ymin); give the model the format its targets are in "
         "(bounding_box_format=...). First bad box, in xyxy pixels:",
         tf.boolean_mask(boxes, inverted)[:1]],
    )
    too_big = classes >= num_classes
    tf.debugging.Assert(
        ~ops.any(too_big),
        [f"Target class ids must be in [0, {num_classes}) (num_classes={num_classes}); got class id",
         ops.max(classes), "- build the model with a larger num_classes or remap the labels."],
    )
    return boxes, classes, valid


def global_positive_count(num_positive):
    """Total positives over all replicas (at least 1): the normaliser of the batch loss.

    Dividing each replica's summed loss by the *global* count makes the sum of
    the replicas' gradients equal the single-device gradient of the same
    global batch, which is what tf.distribute then all-reduces.
    """
    num_positive = ops.cast(num_positive, "float32")
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        num_positive = context.all_reduce(tf.distribute.ReduceOp.SUM, num_positive)
    return ops.maximum(num_positive, 1.0)


def replica_count() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync
