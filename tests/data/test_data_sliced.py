"""Sliced inference: tiles, batched prediction, boxes back in the full image, class-aware NMS."""

from __future__ import annotations

import numpy as np
import pytest

from ipg_keras.inference import merge_detections, sliced_predict


def _scene(h, w, boxes, classes):
    """Object i drawn as ch0 = 200, ch1 = code 5 * (i + 1), ch2 = 50 * class."""
    img = np.zeros((h, w, 3), np.float32)
    for i, ((x1, y1, x2, y2), c) in enumerate(zip(boxes, classes)):
        img[y1:y2, x1:x2] = (200.0, 5.0 * (i + 1), 50.0 * c)
    return img


class FakeDetector:
    """'Detects' the coded objects of `_scene` in each input; score = visible area / full area,
    or (edge_penalty) 0.3 for objects touching the input border (cut off), else 1."""

    def __init__(self, num_objects, full_area=1.0, max_k=32, edge_penalty=False):
        self.codes = 5.0 * (np.arange(num_objects) + 1)
        self.full_area = full_area
        self.edge_penalty = edge_penalty
        self.max_k = max_k
        self.batch_shapes = []

    def __call__(self, batch):
        batch = np.asarray(batch)
        self.batch_shapes.append(batch.shape)
        b = len(batch)
        out = {"boxes": np.zeros((b, self.max_k, 4), np.float32), "scores": np.zeros((b, self.max_k), np.float32),
               "classes": np.full((b, self.max_k), -1, np.int32), "num_detections": np.zeros(b, np.int32)}
        for i, img in enumerate(batch):
            whole = np.abs(img[..., 0] - 200.0) < 0.5
            k = 0
            for code in self.codes:
                ys, xs = np.nonzero(whole & (np.abs(img[..., 1] - code) < 0.5))
                if len(ys) == 0:
                    continue
                out["boxes"][i, k] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
                if self.edge_penalty:
                    cut = xs.min() == 0 or ys.min() == 0 or xs.max() == img.shape[1] - 1 or ys.max() == img.shape[0] - 1
                    out["scores"][i, k] = 0.3 if cut else 1.0
                else:
                    out["scores"][i, k] = min(1.0, len(ys) / self.full_area)
                out["classes"][i, k] = int(round(img[ys[0], xs[0], 2] / 50.0))
                k += 1
            out["num_detections"][i] = k
        return out


def _random_boxes(rng, h, w, n, size):
    boxes = []
    while len(boxes) < n:
        x, y = int(rng.integers(0, w - size)), int(rng.integers(0, h - size))
        cand = (x, y, x + size, y + size)
        if all(cand[0] >= b[2] + 2 or cand[2] + 2 <= b[0] or cand[1] >= b[3] + 2 or cand[3] + 2 <= b[1] for b in boxes):
            boxes.append(cand)
    return np.asarray(boxes, np.float32)


def _match(pred, boxes, classes, atol):
    assert pred["num_detections"] == len(boxes) == len(pred["boxes"])
    for box, cls in zip(boxes, classes):
        d = np.abs(pred["boxes"] - box).max(axis=1)
        j = int(np.argmin(d))
        assert d[j] <= atol, f"no detection near {box}: closest {pred['boxes'][j]}"
        assert pred["classes"][j] == cls


def test_sliced_predict_finds_every_object_once_in_full_image_pixels():
    rng = np.random.default_rng(0)
    h, w, size = 300, 500, 20
    boxes = _random_boxes(rng, h, w, 14, size)
    classes = np.arange(14) % 3
    image = _scene(h, w, boxes.astype(int), classes)
    det = FakeDetector(14, size * size)
    pred = sliced_predict(det, image, tile_size=128, overlap=32, batch_size=4, score_threshold=0.9)
    _match(pred, boxes, classes, atol=0.0)
    assert np.all(np.diff(pred["scores"]) <= 0)
    # 3 x 5 tiles in batches of 4, the last one padded to 4.
    assert det.batch_shapes == [(4, 128, 128, 3)] * 4


def test_sliced_predict_resizes_tiles_to_the_model_input_size():
    rng = np.random.default_rng(1)
    h, w, size = 260, 330, 24
    boxes = _random_boxes(rng, h, w, 8, size)
    classes = np.arange(8) % 2
    image = _scene(h, w, boxes.astype(int), classes)
    det = FakeDetector(8, (size * 0.75) ** 2 * 0.8)  # tiles 128 -> 96: objects shrink by 0.75
    pred = sliced_predict(det, image, tile_size=128, overlap=40, input_size=96, batch_size=8,
                          score_threshold=0.95, pad_batch=False)
    assert {s[1:] for s in det.batch_shapes} == {(96, 96, 3)}
    _match(pred, boxes, classes, atol=2.0)


def test_sliced_predict_small_image_and_full_image_pass():
    small = _scene(50, 60, [(10, 12, 30, 40)], [1])
    pred = sliced_predict(FakeDetector(1, 20 * 28), small, tile_size=128, overlap=16, score_threshold=0.5)
    _match(pred, np.asarray([[10, 12, 30, 40]]), [1], atol=0.0)

    # An object larger than a tile is only whole in the extra full-image pass.
    big = _scene(300, 300, [(60, 80, 210, 230)], [2])
    det = FakeDetector(1, edge_penalty=True)
    without = sliced_predict(det, big, tile_size=128, overlap=32, score_threshold=0.95)
    assert without["num_detections"] == 0
    with_full = sliced_predict(det, big, tile_size=128, overlap=32, score_threshold=0.95, include_full_image=True)
    _match(with_full, np.asarray([[60, 80, 210, 230]]), [2], atol=4.0)


def test_merge_detections_suppresses_within_class_only():
    """Tiles are merged by the package's own class-aware NMS (ipg_keras.ops.nms)."""
    boxes = np.asarray([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.asarray([0.6, 0.8, 0.7, 0.9], np.float32)
    classes = np.asarray([0, 0, 1, 0])
    keep = merge_detections(boxes, scores, classes, iou_threshold=0.5)
    # By score: 3 (0.9), 1 (0.8, suppresses box 0 of its class), 2 (0.7, another class).
    assert keep.tolist() == [3, 1, 2]
    assert merge_detections(boxes, scores, classes, max_detections=2).tolist() == [3, 1]
    assert merge_detections(boxes, scores, classes, score_threshold=0.75).tolist() == [3, 1]
    assert merge_detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0)).tolist() == []


def test_merge_detections_equals_the_models_batched_nms():
    from ipg_keras.ops import batched_class_aware_nms

    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 200, (60, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (60, 2))], 1).astype(np.float32)
    scores = rng.uniform(0, 1, 60).astype(np.float32)
    classes = rng.integers(0, 3, 60)
    keep = merge_detections(boxes, scores, classes, iou_threshold=0.4, max_detections=25)
    ref = batched_class_aware_nms(boxes[None], scores[None], classes[None], max_detections=25, iou_threshold=0.4,
                                  score_threshold=0.0)
    n = int(ref["num_detections"][0])
    assert len(keep) == n
    np.testing.assert_array_equal(boxes[keep], ref["boxes"][0, :n].numpy())
    np.testing.assert_array_equal(classes[keep], ref["classes"][0, :n].numpy())


def test_sliced_predict_rejects_batches_of_images():
    with pytest.raises(ValueError, match=r"one \[H, W, 3\] image"):
        sliced_predict(FakeDetector(1, 1), np.zeros((2, 10, 10, 3)))
