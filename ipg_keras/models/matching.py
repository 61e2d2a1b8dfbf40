"""Anchor-to-ground-truth matching (IoU thresholds, as torchvision's Matcher)."""

from __future__ import annotations

import tensorflow as tf
from keras import ops

from ipg_keras.ops.boxes import pairwise_iou

# Values of `matched_indices` for anchors that match nothing.
NEGATIVE = -1
IGNORE = -2


def match_anchors(
    anchors,
    gt_boxes,
    gt_valid,
    positive_threshold: float = 0.5,
    negative_threshold: float = 0.4,
    allow_low_quality_matches: bool = True,
):
    """Assigns every anchor a ground-truth box, background, or "ignore".

    Args:
        anchors: `[A, 4]` xyxy.
        gt_boxes: `[B, M, 4]` xyxy, padded. `M` may be 0 (a batch of images
            without objects): then every anchor is background.
        gt_valid: `[B, M]` bool, False for padding.
        positive_threshold: IoU at or above which an anchor is positive.
        negative_threshold: IoU below which an anchor is background; between
            the two it is ignored (neither trained as object nor background).
        allow_low_quality_matches: also make positive, for each ground truth,
            the anchors with its highest IoU, so that a small object that no
            anchor overlaps at 0.5 is still learned (torchvision's RetinaNet
            and RPN do the same) -- essential for small objects.

    Returns:
        `(matched_indices [B, A] int32, max_iou [B, A])`: index into M for
        positives, `NEGATIVE` (-1) for background, `IGNORE` (-2) otherwise.
    """
    iou = pairwise_iou(anchors, gt_boxes)  # [B, A, M]
    iou = ops.where(ops.expand_dims(gt_valid, 1), iou, -1.0)
    # With M = 0 the max/argmax over ground truths below would reduce an empty
    # axis: add one padding column (IoU -1, invalid), which matches nothing.
    iou, gt_valid = _at_least_one_column(iou, gt_valid)
    max_iou = ops.max(iou, axis=2)
    matched = ops.cast(ops.argmax(iou, axis=2), "int32")
    matched = ops.where(max_iou >= positive_threshold, matched, IGNORE)
    matched = ops.where(max_iou < negative_threshold, NEGATIVE, matched)
    if allow_low_quality_matches:
        best_per_gt = ops.max(iou, axis=1, keepdims=True)  # [B, 1, M]
        is_best = (iou >= best_per_gt) & (iou > 0.0) & ops.expand_dims(gt_valid, 1)
        has_best = ops.any(is_best, axis=2)
        # Among the ground truths an anchor is "best" for, keep the highest IoU.
        best_gt = ops.cast(ops.argmax(ops.where(is_best, iou, -1.0), axis=2), "int32")
        matched = ops.where(has_best, best_gt, matched)
    return matched, ops.maximum(max_iou, 0.0)


def _at_least_one_column(iou, gt_valid):
    """`iou [B, A, M]`, `gt_valid [B, M]` with M raised to 1 by an invalid column when M = 0."""
    gt_valid = tf.convert_to_tensor(gt_valid, tf.bool)
    m = iou.shape[2]
    if m is not None and m > 0:
        return iou, gt_valid
    missing = tf.maximum(1 - tf.shape(iou)[2], 0)
    iou = tf.pad(iou, [[0, 0], [0, 0], [0, missing]], constant_values=-1.0)
    gt_valid = tf.pad(gt_valid, [[0, 0], [0, missing]], constant_values=False)
    return iou, gt_valid
