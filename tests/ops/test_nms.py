"""Batched class-aware NMS against a brute-force reference."""

import numpy as np

from ipg_keras.ops import batched_class_aware_nms
from ipg_keras.ops.boxes import pairwise_iou


def brute_force_nms(boxes, scores, classes, iou_threshold, score_threshold, max_detections):
    order = np.argsort(-scores, kind="stable")
    keep = []
    for i in order:
        if scores[i] <= score_threshold:
            continue
        if all(
            classes[j] != classes[i] or np.asarray(pairwise_iou(boxes[i : i + 1], boxes[j : j + 1]))[0, 0] <= iou_threshold
            for j in keep
        ):
            keep.append(i)
        if len(keep) == max_detections:
            break
    return keep


def test_nms_matches_brute_force_on_random_clusters():
    rng = np.random.default_rng(0)
    batch, k = 3, 60
    centers = rng.uniform(20, 200, (batch, 8, 2))
    pick = rng.integers(0, 8, (batch, k))
    c = np.take_along_axis(centers, pick[..., None], axis=1) + rng.normal(0, 4, (batch, k, 2))
    wh = rng.uniform(10, 30, (batch, k, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], -1).astype("float32")
    scores = rng.uniform(0, 1, (batch, k)).astype("float32")
    classes = rng.integers(0, 3, (batch, k)).astype("int32")
    out = batched_class_aware_nms(boxes, scores, classes, max_detections=20, iou_threshold=0.5, score_threshold=0.1)
    for b in range(batch):
        keep = brute_force_nms(boxes[b], scores[b], classes[b], 0.5, 0.1, 20)
        n = int(out["num_detections"][b])
        assert n == len(keep)
        np.testing.assert_allclose(np.asarray(out["boxes"][b, :n]), boxes[b, keep], rtol=1e-6)
        np.testing.assert_allclose(np.asarray(out["scores"][b, :n]), scores[b, keep], rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(out["classes"][b, :n]), classes[b, keep])
        assert np.all(np.asarray(out["classes"][b, n:]) == -1) and np.all(np.asarray(out["scores"][b, n:]) == 0)


def test_nms_keeps_overlapping_boxes_of_different_classes():
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10]]], "float32")
    scores = np.array([[0.9, 0.8, 0.7]], "float32")
    classes = np.array([[0, 1, 0]], "int32")
    out = batched_class_aware_nms(boxes, scores, classes, max_detections=5)
    assert int(out["num_detections"][0]) == 2
    np.testing.assert_array_equal(np.asarray(out["classes"][0, :2]), [0, 1])
