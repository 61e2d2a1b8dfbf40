"""COCO metrics: exact values on hand-made cases, checked against an independent computation."""

import numpy as np
import pytest

from ipg_keras.evaluation import METRIC_NAMES, COCOEvaluator, coco_metrics


def _gt(image_id, boxes, classes, **extra):
    return {"image_id": image_id, "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "classes": np.asarray(classes, np.int32), **extra}


def _det(image_id, boxes, classes, scores):
    return {"image_id": image_id, "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "classes": np.asarray(classes, np.int32), "scores": np.asarray(scores, np.float32)}


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _reference_ap(tp_flags_by_score, num_gt):
    """101-point interpolated AP (COCO's definition), written independently of pycocotools."""
    tp = np.cumsum(tp_flags_by_score)
    fp = np.cumsum(~np.asarray(tp_flags_by_score))
    recall = tp / num_gt
    precision = tp / np.maximum(tp + fp, 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    samples = []
    for r in np.linspace(0, 1, 101):
        idx = np.searchsorted(recall, r, side="left")
        samples.append(envelope[idx] if idx < len(recall) else 0.0)
    return float(np.mean(samples))


def test_perfect_detections_give_ap_one():
    gts = [_gt(0, [[10, 10, 30, 30], [50, 60, 120, 140]], [0, 1]),
           _gt(1, [[5, 5, 200, 220]], [2]), _gt(2, [], [])]
    dets = [_det(g["image_id"], g["boxes"], g["classes"], np.ones(len(g["classes"]))) for g in gts]
    m = coco_metrics(gts, dets, num_classes=3)
    assert set(METRIC_NAMES) <= set(m)
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
        assert m[key] == pytest.approx(1.0), key


def test_empty_detections_give_zero_and_no_gt_gives_minus_one():
    gts = [_gt(0, [[10, 10, 30, 30]], [0]), _gt(1, [], [])]
    m = coco_metrics(gts, [], num_classes=2)
    assert m["AP"] == 0.0 and m["AP50"] == 0.0 and m["APs"] == 0.0
    assert m["APm"] == -1.0 and m["APl"] == -1.0  # no medium / large ground truth
    assert coco_metrics([_gt(0, [], [])], [], num_classes=2)["AP"] == -1.0


def test_hand_case_one_of_two_found_with_iou_062():
    gt_a, gt_b = [10.0, 10.0, 30.0, 30.0], [100.0, 100.0, 120.0, 120.0]
    det = [10.0, 10.0, 30.0, 10.0 + 20.0 / 0.62]  # same x-extent, taller: IoU = 0.62
    assert _iou(gt_a, det) == pytest.approx(0.62)
    gts = [_gt(7, [gt_a, gt_b], [0, 0])]
    m = coco_metrics(gts, [_det(7, [det], [0], [0.9])])
    half = _reference_ap([True], num_gt=2)  # recall 0.5 at precision 1
    assert half == pytest.approx(51 / 101)
    assert m["AP50"] == pytest.approx(half)
    assert m["AP75"] == 0.0
    # Matched at IoU thresholds 0.50, 0.55, 0.60 of the ten 0.50:0.05:0.95.
    assert m["AP"] == pytest.approx(3 * half / 10)


def test_ranking_with_false_positive_matches_reference():
    # Two GT; detections by score: TP, FP, TP -> precision drops then recovers.
    gts = [_gt(0, [[0, 0, 40, 40]], [1]), _gt(1, [[0, 0, 40, 40]], [1])]
    dets = [_det(0, [[0, 0, 40, 40], [60, 60, 90, 90]], [1, 1], [0.9, 0.8]),
            _det(1, [[0, 0, 40, 40]], [1], [0.7])]
    m = coco_metrics(gts, dets)
    assert m["AP50"] == pytest.approx(_reference_ap([True, False, True], num_gt=2))
    assert m["AP50"] < 1.0


def test_wrong_class_is_not_a_match():
    gts = [_gt(0, [[10, 10, 50, 50]], [0])]
    assert coco_metrics(gts, [_det(0, [[10, 10, 50, 50]], [1], [1.0])], num_classes=2)["AP"] == 0.0


def test_area_buckets_and_scales():
    small, large = [10, 10, 30, 30], [100, 100, 220, 220]  # 20x20 and 120x120 px
    gts = [_gt(0, [small, large], [0, 0])]
    m = coco_metrics(gts, [_det(0, [small], [0], [0.9])])
    assert m["APs"] == pytest.approx(1.0)
    assert m["APl"] == 0.0
    assert m["APm"] == -1.0

    # Same boxes in a network frame 4x smaller than the original: 20 px -> 80 px (medium).
    ev = COCOEvaluator()
    gt_batch = {"boxes": np.array([[small, [-1, -1, -1, -1]]], np.float32),
                "classes": np.array([[0, -1]], np.int32)}
    pred = {"boxes": np.array([[small, [0, 0, 0, 0]]], np.float32),
            "scores": np.array([[0.9, 0.0]], np.float32),
            "classes": np.array([[0, -1]], np.int32), "num_detections": np.array([1])}
    ev.update(gt_batch, pred, scales=np.array([4.0]))
    m = ev.result()
    assert m["APm"] == pytest.approx(1.0) and m["APs"] == -1.0
    assert "Average Precision" in ev.summary


def test_difficult_objects_are_ignored():
    gts = [_gt(0, [[10, 10, 40, 40], [60, 60, 90, 90]], [0, 0], difficult=np.array([False, True]))]
    # Missing the difficult object costs nothing; detecting it is not a false positive.
    assert coco_metrics(gts, [_det(0, [[10, 10, 40, 40]], [0], [0.5])])["AP"] == pytest.approx(1.0)
    both = _det(0, [[60, 60, 90, 90], [10, 10, 40, 40]], [0, 0], [0.9, 0.5])
    assert coco_metrics(gts, [both])["AP"] == pytest.approx(1.0)


def test_evaluator_batches_padding_and_num_detections():
    ev = COCOEvaluator(num_classes=3, per_class=True, class_names=["a", "b", "c"])
    gt_batch = {"boxes": np.array([[[10, 10, 40, 40], [-1, -1, -1, -1]],
                                   [[5, 5, 25, 35], [50, 50, 90, 80]]], np.float32),
                "classes": np.array([[2, -1], [0, 1]], np.int32)}
    pred = {"boxes": np.array([[[10, 10, 40, 40], [70, 70, 90, 90], [0, 0, 0, 0]],
                               [[5, 5, 25, 35], [50, 50, 90, 80], [0, 0, 30, 30]]], np.float32),
            "scores": np.array([[0.9, 0.95, 0.0], [0.8, 0.7, 0.99]], np.float32),
            "classes": np.array([[2, 2, -1], [0, 1, 0]], np.int32),
            # Image 0: the second entry (a high-scoring false positive) lies past
            # num_detections and must be ignored; same for image 1's third entry.
            "num_detections": np.array([1, 2], np.int32)}
    ev.update(gt_batch, pred)
    ev.update(gt_batch, pred)  # second batch gets ids 2, 3
    assert ev.num_images == 4
    m = ev.result()
    assert m["AP"] == pytest.approx(1.0)
    assert m["AP/a"] == pytest.approx(1.0) and m["AP50/c"] == pytest.approx(1.0)
    ev.reset()
    assert ev.num_images == 0


def test_bad_input_is_reported():
    with pytest.raises(ValueError, match="duplicate"):
        coco_metrics([_gt(0, [], []), _gt(0, [], [])], [])
    with pytest.raises(ValueError, match="no ground-truth"):
        coco_metrics([_gt(0, [], [])], [_det(5, [[0, 0, 1, 1]], [0], [1.0])])
    with pytest.raises(ValueError, match="out of range"):
        coco_metrics([_gt(0, [[0, 0, 10, 10]], [4])], [], num_classes=3)
