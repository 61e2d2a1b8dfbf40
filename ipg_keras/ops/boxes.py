"""Box arithmetic on xyxy boxes (x1, y1, x2, y2) in pixels, written with keras.ops.

All functions broadcast over leading batch dimensions, so they serve anchors
`[A, 4]`, padded ground truth `[B, M, 4]` and decoded predictions alike.
"""

from __future__ import annotations

import math
from typing import Sequence

from keras import ops

# Largest log-scale a decoded box may grow by: exp(4.135) = 62.5, as in
# torchvision and Detectron (log(1000 / 16)), so a wild regression cannot
# overflow to inf in float16.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def box_area(boxes):
    """Area of `[..., 4]` xyxy boxes; degenerate boxes have area 0."""
    w = ops.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    h = ops.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return w * h


def _pairwise_coordinates(boxes1, boxes2):
    """Per coordinate: `[..., N, 1]` of boxes1 and `[..., 1, M]` of boxes2, as (x1, y1, x2, y2) pairs.

    Pairwise ops on these broadcast two rank-matched tensors along their last two
    axes; the equivalent `[..., N, 1, 2]` x `[..., 1, M, 2]` form broadcasts a
    size-2 innermost axis, which TensorFlow's CPU kernels run 3-4x slower (it was
    the single costliest op of the main job's training step, in the matching).
    """
    first = [boxes1[..., i : i + 1] for i in range(4)]
    second = [ops.expand_dims(boxes2[..., i], -2) for i in range(4)]
    return first, second


def _intersection_and_union(boxes1, boxes2):
    """Pairwise intersection and union for `[..., N, 4]` x `[..., M, 4]` -> `[..., N, M]`."""
    (x1a, y1a, x2a, y2a), (x1b, y1b, x2b, y2b) = _pairwise_coordinates(boxes1, boxes2)
    w = ops.maximum(ops.minimum(x2a, x2b) - ops.maximum(x1a, x1b), 0.0)
    h = ops.maximum(ops.minimum(y2a, y2b) - ops.maximum(y1a, y1b), 0.0)
    inter = w * h
    union = ops.expand_dims(box_area(boxes1), -1) + ops.expand_dims(box_area(boxes2), -2) - inter
    return inter, union


def pairwise_iou(boxes1, boxes2):
    """IoU of every pair: `[..., N, 4]` x `[..., M, 4]` -> `[..., N, M]` in [0, 1].

    Pairs whose union is empty (two degenerate boxes) get IoU 0, never NaN.
    """
    inter, union = _intersection_and_union(boxes1, boxes2)
    return ops.where(union > 0, inter / ops.maximum(union, 1e-9), 0.0)


def pairwise_giou(boxes1, boxes2):
    """Generalised IoU of every pair (Rezatofighi et al. 2019), in [-1, 1]."""
    inter, union = _intersection_and_union(boxes1, boxes2)
    iou = inter / ops.maximum(union, 1e-9)
    (x1a, y1a, x2a, y2a), (x1b, y1b, x2b, y2b) = _pairwise_coordinates(boxes1, boxes2)
    hull_w = ops.maximum(ops.maximum(x2a, x2b) - ops.minimum(x1a, x1b), 0.0)
    hull_h = ops.maximum(ops.maximum(y2a, y2b) - ops.minimum(y1a, y1b), 0.0)
    hull = hull_w * hull_h
    return iou - (hull - union) / ops.maximum(hull, 1e-9)


def _elementwise_intersection_and_union(boxes1, boxes2):
    lt = ops.maximum(boxes1[..., :2], boxes2[..., :2])
    rb = ops.minimum(boxes1[..., 2:], boxes2[..., 2:])
    wh = ops.maximum(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    return inter, box_area(boxes1) + box_area(boxes2) - inter


def elementwise_iou(boxes1, boxes2):
    """IoU of matched xyxy pairs `[..., 4]` x `[..., 4]` -> `[...]`, in [0, 1] (quality focal loss targets)."""
    inter, union = _elementwise_intersection_and_union(boxes1, boxes2)
    return inter / ops.maximum(union, 1e-9)


def elementwise_giou(boxes1, boxes2):
    """GIoU of matched pairs `[..., 4]` x `[..., 4]` -> `[...]` (for the GIoU loss)."""
    inter, union = _elementwise_intersection_and_union(boxes1, boxes2)
    iou = inter / ops.maximum(union, 1e-9)
    hull_wh = ops.maximum(
        ops.maximum(boxes1[..., 2:], boxes2[..., 2:]) - ops.minimum(boxes1[..., :2], boxes2[..., :2]), 0.0
    )
    hull = hull_wh[..., 0] * hull_wh[..., 1]
    return iou - (hull - union) / ops.maximum(hull, 1e-9)


def clip_boxes(boxes, height, width):
    """Clip xyxy boxes to an image of `height` x `width` pixels."""
    x1 = ops.clip(boxes[..., 0], 0.0, width)
    y1 = ops.clip(boxes[..., 1], 0.0, height)
    x2 = ops.clip(boxes[..., 2], 0.0, width)
    y2 = ops.clip(boxes[..., 3], 0.0, height)
    return ops.stack([x1, y1, x2, y2], axis=-1)


class BoxCoder:
    """Encodes boxes as offsets from reference boxes (anchors or proposals) and back.

    The R-CNN parameterisation: `dx = wx * (cx - cx_a) / w_a`, `dw = ww * log(w / w_a)`.
    RetinaNet uses weights (1, 1, 1, 1); Faster R-CNN's box head (10, 10, 5, 5).
    """

    def __init__(self, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)):
        self.weights = tuple(float(w) for w in weights)

    @staticmethod
    def _center_size(boxes):
        w = boxes[..., 2] - boxes[..., 0]
        h = boxes[..., 3] - boxes[..., 1]
        return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h

    def encode(self, boxes, anchors):
        """`[..., 4]` target boxes relative to `[..., 4]` anchors -> `[..., 4]` deltas."""
        wx, wy, ww, wh = self.weights
        cx, cy, w, h = self._center_size(boxes)
        acx, acy, aw, ah = self._center_size(anchors)
        aw = ops.maximum(aw, 1e-6)
        ah = ops.maximum(ah, 1e-6)
        return ops.stack(
            [
                wx * (cx - acx) / aw,
                wy * (cy - acy) / ah,
                ww * ops.log(ops.maximum(w, 1e-6) / aw),
                wh * ops.log(ops.maximum(h, 1e-6) / ah),
            ],
            axis=-1,
        )

    def decode(self, deltas, anchors):
        """Inverse of `encode`: `[..., 4]` deltas on `[..., 4]` anchors -> xyxy boxes."""
        wx, wy, ww, wh = self.weights
        acx, acy, aw, ah = self._center_size(anchors)
        dx = deltas[..., 0] / wx
        dy = deltas[..., 1] / wy
        dw = ops.minimum(deltas[..., 2] / ww, BBOX_XFORM_CLIP)
        dh = ops.minimum(deltas[..., 3] / wh, BBOX_XFORM_CLIP)
        cx = dx * aw + acx
        cy = dy * ah + acy
        w = ops.exp(dw) * aw
        h = ops.exp(dh) * ah
        return ops.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)
