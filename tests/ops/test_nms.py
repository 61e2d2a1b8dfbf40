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



def _tied_case(rng, batch, k=80):
    c = rng.uniform(20, 60, (batch, k, 2))
    wh = rng.uniform(10, 20, (batch, k, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], -1).astype("float32")
    scores = (np.round(rng.uniform(0, 1, (batch, k)) * 8) / 8).astype("float32")  # 9 values: many ties
    classes = rng.integers(0, 2, (batch, k)).astype("int32")
    return boxes, scores, classes


TIES = dict(max_detections=30, iou_threshold=0.3, score_threshold=0.125)


def _assert_stable_sort_reference(out, boxes, scores, classes):
    for b in range(len(boxes)):
        keep = brute_force_nms(boxes[b], scores[b], classes[b], TIES["iou_threshold"], TIES["score_threshold"],
                               TIES["max_detections"])
        n = int(np.asarray(out["num_detections"])[b])
        assert n == len(keep)
        np.testing.assert_array_equal(np.asarray(out["boxes"])[b, :n], boxes[b, keep])
        np.testing.assert_array_equal(np.asarray(out["classes"])[b, :n], classes[b, keep])


def test_nms_breaks_score_ties_by_lower_index():
    """Tied scores (int8 heads give 256 values) keep the lower-index candidate, batch 1 (export path) or more."""
    rng = np.random.default_rng(1)
    for batch in (1, 2):
        boxes, scores, classes = _tied_case(rng, batch)
        _assert_stable_sort_reference(batched_class_aware_nms(boxes, scores, classes, **TIES), boxes, scores, classes)


def test_nms_ties_are_broken_the_same_way_in_tflite(tmp_path):
    """TFLite's NMS kernel queues candidates in a std::priority_queue, whose order for equal scores depends
    on the C++ library (LiteRT and MediaPipe's build disagreed); NMS is fed a strictly decreasing key instead."""
    import pytest
    import tensorflow as tf

    pytest.importorskip("ai_edge_litert", reason="LiteRT runs the converted NMS")
    from ai_edge_litert.interpreter import Interpreter

    boxes, scores, classes = _tied_case(np.random.default_rng(1), 1)
    k = boxes.shape[1]

    @tf.function(input_signature=[tf.TensorSpec([1, k, 4]), tf.TensorSpec([1, k]), tf.TensorSpec([1, k], tf.int32)])
    def nms(b, s, c):
        return batched_class_aware_nms(b, s, c, **TIES)

    module = tf.Module()
    module.nms = nms
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": nms.get_concrete_function()})
    flatbuffer = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path)).convert()
    out = Interpreter(model_content=flatbuffer).get_signature_runner()(b=boxes, s=scores, c=classes)
    _assert_stable_sort_reference(out, boxes, scores, classes)
