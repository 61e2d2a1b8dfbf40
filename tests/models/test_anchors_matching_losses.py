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


def _atss_reference(anchors, counts, gt, valid, topk):
    """ATSS (Zhang et al. 2020, Alg. 1) written out with loops, for one batch element at a time."""
    from ipg_keras.ops.boxes import pairwise_iou

    iou = np.asarray(pairwise_iou(anchors, gt))
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    out = np.full(iou.shape[:2], NEGATIVE)
    for b in range(gt.shape[0]):
        positive = np.zeros((len(anchors), gt.shape[1]), bool)
        for m in range(gt.shape[1]):
            if not valid[b, m]:
                continue
            g = gt[b, m]
            dist = np.linalg.norm(centers - (g[:2] + g[2:]) / 2, axis=1)
            cand, start = [], 0
            for count in counts:
                d = dist[start:start + count]
                kth = np.sort(d)[min(topk, count) - 1]
                cand += list(start + np.flatnonzero(d <= kth))
                start += count
            cand = np.array(cand)
            thr = iou[b, cand, m].mean() + iou[b, cand, m].std(ddof=1)
            for a in cand:
                inside = np.all(centers[a] > g[:2]) and np.all(centers[a] < g[2:])
                positive[a, m] = iou[b, a, m] >= thr and inside and iou[b, a, m] > 0
        for a in range(len(anchors)):
            if positive[a].any():
                out[b, a] = int(np.argmax(np.where(positive[a], iou[b, a], -1)))
    return out


def test_atss_matches_a_loop_reference_on_random_boxes():
    from ipg_keras.models.matching import match_anchors_atss

    generator = AnchorGenerator(3, 5, 4.0, (1.0, 2 ** 0.5), (0.5, 1.0, 2.0))
    anchors = np.asarray(generator(128, 128))
    counts = generator.level_sizes(128, 128)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (2, 6, 2))
    wh = rng.uniform(6, 60, (2, 6, 2))
    gt = np.concatenate([xy, xy + wh], -1).astype("float32")
    valid = np.array([[True] * 6, [True, True, True, False, False, False]])
    for topk in (1, 9):
        matched, _ = match_anchors_atss(anchors, counts, gt, valid, topk)
        expected = _atss_reference(anchors, counts, gt, valid, topk)
        np.testing.assert_array_equal(np.asarray(matched), expected)
        assert (expected >= 0).sum() > 6  # every object got positives, several for most
        assert not np.isin(np.asarray(matched)[1], [3, 4, 5]).any()  # padding is never matched


def test_atss_gives_a_small_object_positives_where_iou_05_gives_none():
    """An 11 px object: no anchor reaches IoU 0.5 (16 px anchors at stride 8), so the fixed rule
    leaves it unlearned without the low-quality rescue; ATSS's adaptive threshold gives it positives."""
    from ipg_keras.models.matching import match_anchors_atss

    generator = AnchorGenerator(3, 4, 2.0, (1.0,), (1.0,))
    anchors = np.asarray(generator(64, 64))
    gt = np.array([[[20, 21, 31, 32]]], "float32")
    valid = np.ones((1, 1), bool)
    fixed, best = match_anchors(anchors, gt, valid, 0.5, 0.4, allow_low_quality_matches=False)
    assert float(np.max(best)) < 0.5 and not (np.asarray(fixed) >= 0).any()
    atss, _ = match_anchors_atss(anchors, generator.level_sizes(64, 64), gt, valid)
    positives = np.flatnonzero(np.asarray(atss)[0] >= 0)
    assert len(positives) >= 1
    centers = (anchors[positives, :2] + anchors[positives, 2:]) / 2
    assert np.all((centers > gt[0, 0, :2]) & (centers < gt[0, 0, 2:]))  # centres inside the box


def test_atss_without_objects_is_all_background_and_rejects_topk_0():
    from ipg_keras.models.matching import match_anchors_atss

    generator = AnchorGenerator(3, 4, 4.0, (1.0,), (1.0,))
    anchors = np.asarray(generator(64, 64))
    matched, _ = match_anchors_atss(anchors, generator.level_sizes(64, 64), np.zeros((2, 0, 4), "float32"),
                                    np.zeros((2, 0), bool))
    assert np.asarray(matched).shape == (2, len(anchors)) and np.all(np.asarray(matched) == NEGATIVE)
    with pytest.raises(ValueError, match="topk=0"):
        match_anchors_atss(anchors, generator.level_sizes(64, 64), np.zeros((1, 1, 4), "float32"),
                           np.ones((1, 1), bool), topk=0)
