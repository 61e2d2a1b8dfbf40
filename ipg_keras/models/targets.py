"""Validation of training targets and the per-replica loss normaliser."""

from __future__ import annotations

import tensorflow as tf
from keras import ops

from ipg_keras.ops.box_formats import convert_boxes

# Boxes that all lie in [0, 1] on an image at least this large are normalized (the
# rule of ipg_keras.data.records.NORMALIZED_MIN_IMAGE_SIZE; models do not import data).
NORMALIZED_MIN_IMAGE_SIZE = 32


def unpack_targets(y, num_classes: int, bounding_box_format: str = "xyxy", images=None):
    """Checks padded targets and returns `(boxes [B, M, 4] f32 xyxy pixels, classes [B, M] i32, valid [B, M])`.

    `y` is `{"boxes": [B, M, 4], "classes": [B, M]}` padded with -1 (class
    -1 = padding), boxes in `bounding_box_format` (`rel_` formats relative to
    the height and width of `images` [B, H, W, 3], the padded input images).
    Boxes are converted to xyxy pixels first (padding rows stay -1), then
    checked. Bad targets fail loudly, in eager and graph mode alike: an
    inverted box or a class id outside `[0, num_classes)` would otherwise train
    silently on garbage; with `images`, also an image of 32 px or more whose
    pixel boxes all lie in [0, 1] (normalized coordinates given as pixels).
    `M` may be 0 (`make_batches` builds `[B, 0, 4]` for a batch of images
    without objects): the result then has `M' = 1` rows, the added row is
    padding, so that gathers by matched ground-truth index stay in range; such
    images train as background only.
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
    # One padding row when M = 0, before the checks: their messages reduce over M.
    boxes, classes, valid = at_least_one_target(boxes, classes, classes >= 0)
    if bounding_box_format != "xyxy":
        height, width = (None, None) if images is None else (ops.shape(images)[1], ops.shape(images)[2])
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
    if images is not None:
        check_not_normalized(boxes, valid, images)
    return boxes, classes, valid


def check_not_normalized(boxes, valid, images):
    """Assert that no image's target boxes all lie in [0, 1] (on images of 32 px or more).

    boxes [B, M, 4], valid [B, M] bool, images [B, H, W, C]."""
    shape = tf.shape(images)
    big = tf.minimum(shape[1], shape[2]) >= NORMALIZED_MIN_IMAGE_SIZE
    unit = ops.all((boxes >= 0.0) & (boxes <= 1.0), axis=-1) | ~valid  # [B, M]
    normalized = ops.all(unit, axis=1) & ops.any(valid, axis=1) & big  # [B]
    tf.debugging.Assert(
        ~ops.any(normalized),
        ["Target boxes of", ops.sum(ops.cast(normalized, "int32")), "image(s) all lie within [0, 1] on images of",
         shape[1], "x", shape[2], "pixels: they look normalized (fractions of the image size). Targets must be "
         "xyxy pixels of the input images (x * width, y * height). First such image's boxes:",
         tf.boolean_mask(boxes, normalized)[:1]],
        summarize=16,
    )


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
