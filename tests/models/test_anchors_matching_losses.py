"""Anchors, anchor matching and the losses, on hand-made cases."""

import numpy as np
import pytest

from ipg_keras.models.anchors import AnchorGenerator
from ipg_keras.models.losses import giou_loss, quality_focal_loss, sigmoid_focal_loss, smooth_l1_loss
from ipg_keras.models.matching import IGNORE, NEGATIVE, match_anchors


def test_anchor_count_order_and_geometry():
    gen = AnchorGenerator(3, 4, sizes=4.0)
    anchors = np.asarray(gen(64, 64))
    assert anchors.shape == ((8 * 8 + 4 * 4) * 9, 4)
    assert gen.level_sizes(64, 64) == [8 * 8 * 9, 4 * 4 * 9]
    first = anchors[:9]
    centers = (first[:, :2] + first[:, 2:]) / 2
    np.testing.assert_allclose(centers, 4.0)  # (0 + 0.5) * stride 8
    wh = first[:, 2:] - first[:, :2]
    # scale 1, ratio 1 (index 1): a 32 x 32 square; areas follow the scales; h / w follows the ratios.
    np.testing.assert_allclose(wh[1], [32, 32], rtol=1e-5)
    np.testing.assert_allclose(wh[:3, 1] / wh[:3, 0], [0.5, 1, 2], rtol=1e-5)
    np.testing.assert_allclose(np.sqrt(wh[::3].prod(1)), 32 * np.array([1, 2 ** (1 / 3), 2 ** (2 / 3)]), rtol=1e-5)
    # second location of P3 is one stride to the right
    np.testing.assert_allclose(anchors[9:18] - anchors[:9], [[8, 0, 8, 0]] * 9, atol=1e-4)


def test_anchors_at_index_equal_the_table():
    """`anchors_at` (computed from the index, no anchor table in exported graphs) == gathering from the table."""
    gen = AnchorGenerator(3, 5, sizes=4.0, aspect_ratios=(0.5, 1.0, 2.0))
    height, width = 72, 100  # not multiples of the strides: ceil-sized grids, non-square
    rng = np.random.default_rng(0)
    for level in (3, 4, 5):
        table = np.asarray(gen.level_anchors(level, height, width))
        assert int(gen.level_count(level, height, width)) == len(table)
        index = rng.integers(0, len(table), size=(2, 50))
        np.testing.assert_allclose(np.asarray(gen.anchors_at(level, width, index)), table[index], atol=1e-4)


def test_anchor_sizes_per_level_must_match():
    with pytest.raises(ValueError, match="anchor sizes"):
        AnchorGenerator(3, 5, sizes=[4, 4])


def test_matching_thresholds_and_padding():
    anchors = np.array([[0, 0, 10, 10], [0, 0, 10, 8], [0, 0, 10, 4.5], [50, 50, 60, 60], [0, 0, 10, 2]], "float32")
    gt = np.array([[[0, 0, 10, 10], [-1, -1, -1, -1]]], "float32")
    valid = np.array([[True, False]])
    matched, max_iou = match_anchors(anchors, gt, valid, 0.5, 0.4, allow_low_quality_matches=False)
    # IoUs: 1.0, 0.8, 0.45, 0, 0.2 -> positive, positive, ignore, negative, negative
    np.testing.assert_array_equal(np.asarray(matched)[0], [0, 0, IGNORE, NEGATIVE, NEGATIVE])
    np.testing.assert_allclose(np.asarray(max_iou)[0], [1, 0.8, 0.45, 0, 0.2], atol=1e-6)


def test_low_quality_match_rescues_a_tiny_object():
    anchors = np.array([[0, 0, 32, 32], [32, 0, 64, 32]], "float32")
    gt = np.array([[[2, 2, 8, 8], [40, 4, 50, 14]]], "float32")  # 6 px and 10 px objects, IoU << 0.4
    valid = np.ones((1, 2), bool)
    strict, _ = match_anchors(anchors, gt, valid, allow_low_quality_matches=False)
    assert np.all(np.asarray(strict) == NEGATIVE)
    rescued, _ = match_anchors(anchors, gt, valid, allow_low_quality_matches=True)
    np.testing.assert_array_equal(np.asarray(rescued)[0], [0, 1])


def test_focal_loss_known_values():
    logits = np.array([0.0, 2.0, -2.0], "float32")
    labels = np.array([1.0, 1.0, 0.0], "float32")
    got = np.asarray(sigmoid_focal_loss(labels, logits, alpha=0.25, gamma=2.0))
    p = 1 / (1 + np.exp(-logits))
    p_t = np.where(labels == 1, p, 1 - p)
    alpha_t = np.where(labels == 1, 0.25, 0.75)
    np.testing.assert_allclose(got, -alpha_t * (1 - p_t) ** 2 * np.log(p_t), rtol=1e-5)
    # gamma = 0, alpha = 0.5 is half the binary cross-entropy
    bce = -np.log(p_t)
    np.testing.assert_allclose(np.asarray(sigmoid_focal_loss(labels, logits, 0.5, 0.0)), 0.5 * bce, rtol=1e-5)


def test_quality_focal_loss_known_values():
    """GFL eq. 5: -|y - p|**beta * BCE(y, p), zero where the score equals the target quality."""
    logits = np.array([0.0, 2.0, -2.0, 0.5], "float32")
    quality = np.array([0.7, 0.3, 0.0, 1.0], "float32")
    p = 1 / (1 + np.exp(-logits))
    bce = -(quality * np.log(p) + (1 - quality) * np.log(1 - p))
    got = np.asarray(quality_focal_loss(quality, logits, beta=2.0))
    np.testing.assert_allclose(got, np.abs(quality - p) ** 2 * bce, rtol=1e-5)
    # with binary targets it is the focal loss with gamma = beta and no alpha (alpha 0.5 halves it)
    binary = np.array([1.0, 1.0, 0.0, 0.0], "float32")
    np.testing.assert_allclose(np.asarray(quality_focal_loss(binary, logits, 1.5)),
                               2 * np.asarray(sigmoid_focal_loss(binary, logits, 0.5, 1.5)), rtol=1e-5)
    # a score that equals its target quality costs nothing; any other costs more
    at_target = np.log(quality[:2] / (1 - quality[:2])).astype("float32")
    np.testing.assert_allclose(np.asarray(quality_focal_loss(quality[:2], at_target)), 0.0, atol=1e-7)
    assert np.all(np.asarray(quality_focal_loss(quality[:2], at_target + 0.5)) > 1e-4)


def test_smooth_l1_and_giou_loss_known_values():
    t = np.zeros(3, "float32")
    p = np.array([0.05, 0.11, 1.0], "float32")
    np.testing.assert_allclose(np.asarray(smooth_l1_loss(t, p, 0.11)), [0.5 * 0.05**2 / 0.11, 0.055, 1 - 0.055], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(smooth_l1_loss(t, p, 0.0)), p)
    boxes = np.array([[0, 0, 10, 10]], "float32")
    np.testing.assert_allclose(np.asarray(giou_loss(boxes, boxes)), [0.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(giou_loss(boxes, boxes + np.float32([20, 0, 20, 0]))), [4 / 3], rtol=1e-5)
