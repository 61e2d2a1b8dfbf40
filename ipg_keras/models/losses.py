"""Detection losses: sigmoid focal and quality focal loss, smooth-L1 and GIoU box losses."""

from __future__ import annotations

from keras import ops

from ipg_keras.ops.boxes import elementwise_giou


def sigmoid_focal_loss(labels, logits, alpha: float = 0.25, gamma: float = 2.0):
    """Elementwise focal loss (Lin et al. 2017) of one-hot `labels` against `logits`.

    `FL = -alpha_t * (1 - p_t)**gamma * log(p_t)`, computed from logits with
    a stable cross-entropy. Same shape as the inputs; the caller sums and
    normalises (by the number of positive anchors, in RetinaNet).
    """
    labels = ops.cast(labels, logits.dtype)
    ce = ops.binary_crossentropy(labels, logits, from_logits=True)
    p = ops.sigmoid(logits)
    p_t = labels * p + (1.0 - labels) * (1.0 - p)
    alpha_t = labels * alpha + (1.0 - labels) * (1.0 - alpha)
    return alpha_t * ops.power(1.0 - p_t, gamma) * ce


def quality_focal_loss(quality, logits, beta: float = 2.0):
    """Elementwise quality focal loss (Li et al. 2020, "Generalized Focal Loss", eq. 5).

    `QFL = -|y - p|**beta * ((1 - y) * log(1 - p) + y * log(p))` with `p =
    sigmoid(logits)` and soft targets `quality` `y` in [0, 1]: the IoU of the
    predicted box with its ground truth at positive anchors (of the true class),
    0 elsewhere. The score is trained to rank detections by localisation
    quality, so a well-placed box outranks a loose one at NMS and in AP.
    With binary targets it is the focal loss with `gamma = beta` and no alpha
    weighting. Same shape as the inputs; the caller sums and normalises (by
    the number of positive anchors, as in GFL).
    """
    quality = ops.cast(quality, logits.dtype)
    ce = ops.binary_crossentropy(quality, logits, from_logits=True)
    return ops.power(ops.abs(quality - ops.sigmoid(logits)), beta) * ce


def smooth_l1_loss(targets, predictions, beta: float = 0.11):
    """Elementwise smooth-L1 (Huber / beta): quadratic below `beta`, linear above."""
    diff = ops.abs(targets - predictions)
    if beta <= 0:
        return diff
    return ops.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


def giou_loss(target_boxes, predicted_boxes):
    """`1 - GIoU` of matched xyxy box pairs `[..., 4]` -> `[...]`."""
    return 1.0 - elementwise_giou(target_boxes, predicted_boxes)
