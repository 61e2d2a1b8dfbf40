"""Validation of training targets and the per-replica loss normaliser."""

from __future__ import annotations

import tensorflow as tf
from keras import ops


def unpack_targets(y, num_classes: int):
    """Checks padded targets and returns `(boxes [B, M', 4] f32, classes [B, M'] i32, valid [B, M'])`.

    `y` is `{"boxes": [B, M, 4] xyxy, "classes": [B, M]}` padded with -1 (class
    -1 = padding). `M` may be 0 (`make_batches` builds `[B, 0, 4]` for a batch
    of images without objects): `M' = max(M, 1)`, the added row is padding,
    so that gathers by matched ground-truth index stay in range; such images
    train as background only. Bad targets fail loudly, in eager and graph
    mode alike: an inverted box or a class id outside `[0, num_classes)`
    would otherwise train silently on garbage.
    """
    if not isinstance(y, dict) or "boxes" not in y or "classes" not in y:
        raise ValueError(
            "Detection targets must be a dict {'boxes': [B, M, 4] xyxy, 'classes': [B, M]} "
            f"padded with -1; got {type(y).__name__}"
            + (f" with keys {sorted(y)}" if isinstance(y, dict) else "")
            + ". ipg_keras.data.make_batches builds this form."
        )
    boxes = ops.cast(y["boxes"], "float32")
    classes = ops.cast(y["classes"], "int32")
    if len(boxes.shape) != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"Target boxes must have shape [B, M, 4], got {boxes.shape}.")
    # One padding row when M = 0, before the checks: their messages reduce over M.
    boxes, classes, valid = at_least_one_target(boxes, classes, classes >= 0)
    inverted = valid & ((boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1]))
    tf.debugging.Assert(
        ~ops.any(inverted),
        ["Target boxes must be xyxy with x2 >= x1 and y2 >= y1 (got xmax < xmin or ymax < ymin); "
         "convert boxes to xyxy pixels before training. First bad box:",
         tf.boolean_mask(boxes, inverted)[:1]],
    )
    too_big = classes >= num_classes
    tf.debugging.Assert(
        ~ops.any(too_big),
        [f"Target class ids must be in [0, {num_classes}) (num_classes={num_classes}); got class id",
         ops.max(classes), "- build the model with a larger num_classes or remap the labels."],
    )
    return boxes, classes, valid


def at_least_one_target(boxes, classes, valid):
    """Pads `boxes [B, M, 4]`, `classes [B, M]`, `valid [B, M]` to `M = 1` with one padding row when `M = 0`.

    Target assignment gathers ground truths by matched index (index 0 for
    unmatched anchors), which needs at least one row; the padding row
    (box 0, class -1, invalid) is never matched, so the result is the same
    as for the `M = 0` targets: every anchor / RoI is background.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    classes = tf.convert_to_tensor(classes, tf.int32)
    valid = tf.convert_to_tensor(valid, tf.bool)
    m = boxes.shape[1]
    if m is not None and m > 0:
        return boxes, classes, valid
    missing = tf.maximum(1 - tf.shape(boxes)[1], 0)
    boxes = tf.pad(boxes, [[0, 0], [0, missing], [0, 0]])
    classes = tf.pad(classes, [[0, 0], [0, missing]], constant_values=-1)
    valid = tf.pad(valid, [[0, 0], [0, missing]], constant_values=False)
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
