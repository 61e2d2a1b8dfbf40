"""Anchor-to-ground-truth matching.

Two rules:

* `match_anchors`: fixed IoU thresholds (RetinaNet; torchvision's `Matcher`).
* `match_anchors_atss`: adaptive training sample selection (ATSS; Zhang, Chi,
  Yao, Lei, Li, "Bridging the Gap Between Anchor-based and Anchor-free
  Detection via Adaptive Training Sample Selection", CVPR 2020, Alg. 1;
  mmdetection's `ATSSAssigner`). Each object takes the `topk` anchors per FPN
  level whose centres are nearest its centre as candidates, and makes positive
  those whose IoU is at least the mean plus the standard deviation of the
  candidates' IoUs and whose centre lies inside the box. The threshold adapts
  to each object's size and shape, so a small object gets positives on its own
  level where a fixed 0.5 finds none or one.
"""

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


def match_anchors_atss(anchors, level_counts, gt_boxes, gt_valid, topk: int = 9):
    """Assigns every anchor a ground-truth box or background by ATSS (module docstring).

    Args:
        anchors: `[A, 4]` xyxy pixels, all FPN levels concatenated in order.
        level_counts: anchors per level, summing to A (`AnchorGenerator.level_sizes`).
        gt_boxes: `[B, M, 4]` xyxy pixels, padded; `M` may be 0.
        gt_valid: `[B, M]` bool, False for padding.
        topk: candidates per level and object, by centre distance (ATSS: 9).
            Anchors at the same distance as the topk-th are all candidates (with
            several anchors per location, a location's anchors come together).

    Returns:
        `(matched_indices [B, A] int32, iou [B, A])`: index into M for positives,
        `NEGATIVE` for the rest (ATSS has no ignored anchors); `iou` is the
        anchor's IoU with its matched box (its best IoU for background). An
        anchor that is positive for several objects takes the one of highest IoU.

    Raises:
        ValueError: `topk` < 1.
    """
    if int(topk) < 1:
        raise ValueError(f"topk={topk}: ATSS takes at least one candidate anchor per level")
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
    iou = pairwise_iou(anchors, gt_boxes)  # [B, A, M]
    gt_valid = tf.convert_to_tensor(gt_valid, tf.bool)
    iou, gt_valid = _at_least_one_column(iou, gt_valid)
    gt_boxes = tf.pad(gt_boxes, [[0, 0], [0, tf.maximum(1 - tf.shape(gt_boxes)[1], 0)], [0, 0]])  # as the IoU
    # Objects on the middle axis ([B, M, A]): per-level top-k and the candidates' statistics run along A.
    iou = tf.transpose(iou, [0, 2, 1])
    ax, ay = (anchors[:, 0] + anchors[:, 2]) / 2.0, (anchors[:, 1] + anchors[:, 3]) / 2.0  # [A]
    x1, y1, x2, y2 = (gt_boxes[..., k : k + 1] for k in range(4))  # [B, M, 1]
    squared_distance = tf.square(ax - (x1 + x2) / 2.0) + tf.square(ay - (y1 + y2) / 2.0)  # [B, M, A]
    candidates = []
    start = 0
    for count in level_counts:
        level = squared_distance[:, :, start : start + count]
        k = tf.minimum(int(topk), tf.shape(level)[2])
        kth = -tf.math.top_k(-level, k=k, sorted=True).values[..., -1:]  # [B, M, 1]
        candidates.append(level <= kth)
        start = start + count
    candidate = tf.concat(candidates, axis=2) & gt_valid[:, :, None]  # [B, M, A]
    weight = tf.cast(candidate, tf.float32)
    n = tf.maximum(tf.reduce_sum(weight, axis=2, keepdims=True), 1.0)
    mean = tf.reduce_sum(iou * weight, axis=2, keepdims=True) / n
    std = tf.sqrt(tf.reduce_sum(tf.square(iou - mean) * weight, axis=2, keepdims=True) / tf.maximum(n - 1.0, 1.0))
    inside = (ax > x1) & (ax < x2) & (ay > y1) & (ay < y2)
    positive = candidate & (iou >= mean + std) & inside & (iou > 0.0)
    matched = tf.cast(tf.argmax(tf.where(positive, iou, -1.0), axis=1), tf.int32)  # [B, A]
    matched = tf.where(tf.reduce_any(positive, axis=1), matched, NEGATIVE)
    return matched, tf.maximum(tf.reduce_max(iou, axis=1), 0.0)
