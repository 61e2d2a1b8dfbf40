"""Class-aware non-maximum suppression over a batch (TensorFlow: only TF has NMS)."""

from __future__ import annotations

import tensorflow as tf


def class_aware_nms_indices(boxes, scores, classes, max_detections, iou_threshold, score_threshold):
    """Class-aware NMS of one image: `(indices [max_detections] int32, num_valid)`.

    boxes `[K, 4]` xyxy, scores `[K]`, classes `[K]` int. The first `num_valid`
    indices point to the kept boxes, by descending score; the rest is padding.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    # Class-aware NMS as one class-agnostic NMS: shifting every class's boxes
    # into a disjoint region makes cross-class IoU zero (torchvision's
    # batched_nms trick). One NMS over K boxes is far cheaper than C of them,
    # and NonMaxSuppressionV5 is a TFLite builtin, so export can reuse this.
    offset = tf.cast(classes, boxes.dtype) * (tf.reduce_max(boxes) + 1.0)
    shifted = boxes + offset[:, None]
    # NMS visits equal scores in an order of its own (TF and TFLite queue the
    # candidates in a std::priority_queue, whose order for equal keys depends on
    # the C++ library), so runtimes disagreed on tied candidates, which int8
    # heads make common (their scores take 256 values). NMS therefore runs on a
    # strictly decreasing key in the order of a stable descending sort (ties:
    # lower index first, as top_k); candidates at or under score_threshold get -1.
    count = scores.shape[0] if scores.shape[0] is not None else tf.shape(scores)[0]
    sorted_scores, order = tf.math.top_k(scores, k=count)
    rank = tf.range(tf.shape(scores)[0], dtype=tf.float32)
    key = 1.0 - rank / tf.cast(tf.shape(scores)[0], tf.float32)  # in (0, 1], exact for K < 2**24
    key = tf.where(sorted_scores > score_threshold, key, -1.0)
    # NMS wants (y1, x1, y2, x2); IoU is symmetric, so xyxy works unchanged.
    positions, _, valid = tf.raw_ops.NonMaxSuppressionV5(
        boxes=tf.gather(shifted, order),
        scores=key,
        max_output_size=max_detections,
        iou_threshold=iou_threshold,
        score_threshold=0.0,
        soft_nms_sigma=0.0,
        pad_to_max_output_size=True,
    )
    return tf.gather(order, positions), valid


def _nms_one_image(boxes, scores, classes, max_detections, iou_threshold, score_threshold, labels=None):
    indices, valid = class_aware_nms_indices(boxes, scores, classes, max_detections, iou_threshold,
                                             score_threshold)
    keep = tf.range(max_detections) < valid
    out_boxes = tf.where(keep[:, None], tf.gather(boxes, indices), 0.0)
    out_scores = tf.where(keep, tf.gather(scores, indices), 0.0)
    out_classes = tf.where(keep, tf.gather(classes, indices), -1)
    if labels is None:
        return out_boxes, out_scores, out_classes, valid
    return out_boxes, out_scores, out_classes, valid, tf.where(keep, tf.gather(labels, indices), -1)


def batched_class_aware_nms(
    boxes,
    scores,
    classes,
    max_detections: int = 100,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.05,
    labels=None,
):
    """Per-image, per-class NMS with padded outputs.

    Args:
        boxes: `[B, K, 4]` xyxy candidate boxes.
        scores: `[B, K]` candidate scores.
        classes: `[B, K]` int candidate classes.
        labels: optional `[B, K]` int, carried along with each candidate (e.g. the
            FPN level it came from); does not change which boxes are kept.
    Returns:
        dict of `boxes` `[B, D, 4]`, `scores` `[B, D]`, `classes` `[B, D]` int32
        (-1 past the valid ones), `num_detections` `[B]` int32, with
        `D = max_detections`, sorted by descending score; with `labels`, also
        `labels` `[B, D]` int32 (-1 past the valid ones).
    """
    inputs = [tf.cast(boxes, tf.float32), tf.cast(scores, tf.float32), tf.cast(classes, tf.int32)]
    names = ["boxes", "scores", "classes", "num_detections"]
    signature = [tf.TensorSpec([max_detections, 4], tf.float32), tf.TensorSpec([max_detections], tf.float32),
                 tf.TensorSpec([max_detections], tf.int32), tf.TensorSpec([], tf.int32)]
    if labels is not None:
        inputs.append(tf.cast(labels, tf.int32))
        names.append("labels")
        signature.append(tf.TensorSpec([max_detections], tf.int32))

    def one_image(args):
        return _nms_one_image(*args[:3], max_detections, iou_threshold, score_threshold,
                              labels=args[3] if len(args) > 3 else None)

    if inputs[0].shape[0] == 1:
        # A static batch of one (TFLite export) needs no loop: without map_fn's
        # while loop the graph converts to plain builtin ops (no WHILE op).
        outputs = [output[None] for output in one_image([t[0] for t in inputs])]
    else:
        outputs = tf.map_fn(one_image, tuple(inputs), fn_output_signature=tuple(signature))
    return dict(zip(names, outputs))
