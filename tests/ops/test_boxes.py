"""Box arithmetic: IoU, GIoU, clipping and the box coder."""

import numpy as np
import pytest

from ipg_keras.ops import BoxCoder, clip_boxes, pairwise_giou, pairwise_iou
from ipg_keras.ops.boxes import elementwise_giou


def brute_iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def random_boxes(rng, n, size=100.0):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(1, size / 2, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype("float32")


def test_pairwise_iou_matches_brute_force():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 7), random_boxes(rng, 5)
    got = np.asarray(pairwise_iou(a, b))
    want = np.array([[brute_iou(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _broadcast_reference(boxes1, boxes2):
    """The previous formulation: `[..., N, 1, 4]` x `[..., 1, M, 4]` broadcasts (IoU, GIoU), in numpy."""
    b1, b2 = np.expand_dims(boxes1, -2), np.expand_dims(boxes2, -3)
    area = lambda b: np.maximum(b[..., 2] - b[..., 0], 0) * np.maximum(b[..., 3] - b[..., 1], 0)  # noqa: E731
    wh = np.maximum(np.minimum(b1[..., 2:], b2[..., 2:]) - np.maximum(b1[..., :2], b2[..., :2]), 0)
    inter = wh[..., 0] * wh[..., 1]
    union = np.expand_dims(area(boxes1), -1) + np.expand_dims(area(boxes2), -2) - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
    hull_wh = np.maximum(np.maximum(b1[..., 2:], b2[..., 2:]) - np.minimum(b1[..., :2], b2[..., :2]), 0)
    hull = hull_wh[..., 0] * hull_wh[..., 1]
    giou = inter / np.maximum(union, 1e-9) - (hull - union) / np.maximum(hull, 1e-9)
    return iou, giou


def test_pairwise_iou_and_giou_broadcast_anchors_against_batched_targets_as_before():
    """Anchors `[A, 4]` x padded targets `[B, M, 4]` -> `[B, A, M]` (the matching's call), unchanged values."""
    rng = np.random.default_rng(3)
    anchors = random_boxes(rng, 50)
    targets = random_boxes(rng, 2 * 6).reshape(2, 6, 4)
    targets[1, 4:] = -1.0  # padding rows
    targets[0, 0] = [5, 5, 5, 9]  # degenerate (zero width)
    want_iou, want_giou = _broadcast_reference(anchors, targets)
    got_iou, got_giou = np.asarray(pairwise_iou(anchors, targets)), np.asarray(pairwise_giou(anchors, targets))
    assert got_iou.shape == got_giou.shape == (2, 50, 6)
    np.testing.assert_allclose(got_iou, want_iou, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got_giou, want_giou, rtol=1e-6, atol=1e-6)


def test_iou_known_values_and_degenerate_boxes():
    a = np.array([[0, 0, 10, 10]], "float32")
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 3]], "float32")
    np.testing.assert_allclose(np.asarray(pairwise_iou(a, b))[0], [50 / 150, 0.0, 0.0], atol=1e-6)
    z = np.zeros((1, 4), "float32")
    assert np.asarray(pairwise_iou(z, z))[0, 0] == 0.0  # no NaN for empty unions


def test_giou_known_values():
    a = np.array([[0, 0, 10, 10]], "float32")
    b = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], "float32")
    # Disjoint boxes: hull 30x10, union 200 -> GIoU = 0 - (300 - 200) / 300.
    np.testing.assert_allclose(np.asarray(pairwise_giou(a, b))[0], [1.0, -1 / 3], atol=1e-6)
    np.testing.assert_allclose(np.asarray(elementwise_giou(a[[0, 0]], b)), [1.0, -1 / 3], atol=1e-6)


@pytest.mark.parametrize("weights", [(1, 1, 1, 1), (10, 10, 5, 5)])
def test_box_coder_round_trip(weights):
    rng = np.random.default_rng(1)
    anchors, boxes = random_boxes(rng, 50), random_boxes(rng, 50)
    coder = BoxCoder(weights)
    deltas = coder.encode(boxes, anchors)
    np.testing.assert_allclose(np.asarray(coder.decode(deltas, anchors)), boxes, rtol=1e-4, atol=1e-3)


def test_box_coder_known_delta_and_clamp():
    anchor = np.array([[0, 0, 10, 20]], "float32")
    box = np.array([[5, 0, 15, 20]], "float32")  # shifted half a width right
    np.testing.assert_allclose(np.asarray(BoxCoder().encode(box, anchor)), [[0.5, 0, 0, 0]], atol=1e-6)
    huge = np.asarray(BoxCoder().decode(np.array([[0, 0, 100.0, 100.0]], "float32"), anchor))
    assert np.all(np.isfinite(huge)) and huge[0, 2] - huge[0, 0] == pytest.approx(10 * 1000 / 16, rel=1e-4)


def test_clip_boxes():
    boxes = np.array([[-5, -5, 50, 50], [10, 10, 20, 20]], "float32")
    np.testing.assert_allclose(np.asarray(clip_boxes(boxes, 30.0, 40.0)), [[0, 0, 40, 30], [10, 10, 20, 20]])
