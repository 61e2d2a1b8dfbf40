"""Images without objects train as background in any batch composition, for both detectors.

`make_batches` builds `[B, 0, 4]` targets for a batch whose images have no
objects (data.max_boxes null); other batches pad such images with -1 rows.
Every form must give the same, finite losses: zero box losses for the
negatives, and a classification loss that lowers their scores.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_helpers import TINY_BACKBONE, tiny_retinanet

from ipg_keras.data import make_batches
from ipg_keras.models import IPGFasterRCNN
from ipg_keras.models.faster_rcnn import assign_roi_targets, assign_rpn_targets
from ipg_keras.models.matching import NEGATIVE, match_anchors

SIZE = 64
NUM_CLASSES = 3
FASTER_RCNN = dict(backbone="resnet18", backbone_kwargs=TINY_BACKBONE, fpn_channels=16, roi_head_width=32,
                   rpn_batch_size=64, num_rois=32, pre_nms_topk_train=100, post_nms_topk_train=50,
                   pre_nms_topk_test=100, post_nms_topk_test=50)


def _images(n=3, seed=0):
    """n images of dark noise; image 0 also holds one bright 20 x 20 object of class 1."""
    images = np.random.default_rng(seed).uniform(0, 40, (n, SIZE, SIZE, 3)).astype("float32")
    images[0, 10:30, 20:40] = 230.0
    return images


OBJECT = ([20.0, 10.0, 40.0, 30.0], 1)


def _targets(rows: list[list], m: int):
    """Targets padded with -1 to `m` rows; `rows[b]` lists image b's (box, class) pairs."""
    boxes = np.full((len(rows), m, 4), -1.0, "float32")
    classes = np.full((len(rows), m), -1, "int32")
    for b, objects in enumerate(rows):
        for i, (box, cls) in enumerate(objects):
            boxes[b, i], classes[b, i] = box, cls
    return {"boxes": boxes, "classes": classes}


def _empty(n: int):
    return {"boxes": np.zeros((n, 0, 4), "float32"), "classes": np.zeros((n, 0), "int32")}


def _empty_elements(n: int):
    images = _images(n, seed=1)
    return tf.data.Dataset.from_tensor_slices({
        "images": images,
        "bounding_boxes": {"boxes": np.zeros((n, 0, 4), "float32"), "classes": np.zeros((n, 0), "int32")},
        "image_id": np.arange(n, dtype="int64"),
    })


def _loss_terms(model, images, targets, raw, seed=None):
    """The loss terms (tracker values) of one `compute_loss` call on fixed head outputs."""
    if seed is not None:
        tf.random.set_seed(seed)  # Faster R-CNN samples anchors and RoIs at random
    trackers = [m for m in model.metrics if m.name.endswith("_loss") and m.name != "loss"]
    for t in trackers:
        t.reset_state()
    total = model.compute_loss(images, targets, raw, training=False)
    return {"loss": float(total), **{t.name: float(t.result()) for t in trackers}}


def _subset(raw, index):
    return {k: (v if isinstance(v, dict) else tf.gather(v, index)) for k, v in raw.items()}


# ------------------------------------------------------------------ targets
def test_matching_with_no_ground_truth_makes_every_anchor_background():
    anchors = np.array([[0, 0, 10, 10], [5, 5, 30, 30], [0, 0, 64, 64]], "float32")
    matched, max_iou = match_anchors(anchors, np.zeros((2, 0, 4), "float32"), np.zeros((2, 0), bool))
    np.testing.assert_array_equal(np.asarray(matched), np.full((2, 3), NEGATIVE))
    np.testing.assert_array_equal(np.asarray(max_iou), np.zeros((2, 3)))

    # M unknown while tracing (as in fit on make_batches output), 0 at run time.
    @tf.function(input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None], tf.bool)])
    def traced(boxes, valid):
        return match_anchors(anchors, boxes, valid)[0]

    np.testing.assert_array_equal(traced(tf.zeros([2, 0, 4]), tf.zeros([2, 0], tf.bool)).numpy(),
                                  np.full((2, 3), NEGATIVE))


def test_rpn_and_roi_targets_with_no_ground_truth_are_all_background():
    anchors = np.array([[x, y, x + 16, y + 16] for x in range(0, 64, 8) for y in range(0, 64, 8)], "float32")
    gt, gt_classes, gt_valid = np.zeros((2, 0, 4), "float32"), np.zeros((2, 0), "int32"), np.zeros((2, 0), bool)
    matched, positive, negative = assign_rpn_targets(anchors, gt, gt_valid, num_samples=20)
    assert np.all(np.asarray(matched) == NEGATIVE)
    assert not np.any(positive) and np.asarray(negative).sum(axis=1).tolist() == [20, 20]

    proposals = np.tile(anchors[None, :6], (2, 1, 1))
    out = assign_roi_targets(proposals, np.ones((2, 6), bool), gt, gt_classes, gt_valid, NUM_CLASSES,
                             num_samples=8)
    valid = out["valid"].numpy()
    assert valid.sum(axis=1).tolist() == [6, 6]  # every proposal, as background; padding rows invalid
    assert not out["positive"].numpy().any()
    np.testing.assert_array_equal(out["labels"].numpy()[valid], NUM_CLASSES)


# ---------------------------------------------------------------- RetinaNet
@pytest.fixture(scope="module")
def retinanet():
    keras.utils.set_random_seed(3)
    model = tiny_retinanet(NUM_CLASSES, max_level=5)
    images = _images()
    raw = model(images, training=False)
    return model, images, raw


def test_retinanet_negative_only_batch_in_every_target_form(retinanet):
    model, images, raw = retinanet
    x, r = images[1:], _subset(raw, [1, 2])
    forms = {
        "empty [B, 0, 4]": _empty(2),
        "one -1 row": _targets([[], []], 1),
        "three -1 rows": _targets([[], []], 3),
    }
    losses = {name: _loss_terms(model, x, y, r) for name, y in forms.items()}
    reference = losses["one -1 row"]
    assert np.isfinite(reference["loss"]) and reference["cls_loss"] > 0
    assert reference["box_loss"] == 0.0
    for name, value in losses.items():
        for key in reference:
            assert value[key] == pytest.approx(reference[key], rel=1e-6), (name, key)

    # Right value: the focal loss of every anchor as background, divided by max(1, #positives) = 1.
    p = tf.sigmoid(r["cls"]).numpy().astype("float64")
    focal = (1 - 0.25) * p**2 * -np.log(1 - p)
    assert reference["cls_loss"] == pytest.approx(focal.sum(), rel=1e-4)


def test_retinanet_mixed_batch_negatives_add_only_background_loss(retinanet):
    model, images, raw = retinanet
    positive_only = _loss_terms(model, images[:1], _targets([[OBJECT]], 1), _subset(raw, [0]))
    negatives_only = _loss_terms(model, images[1:], _empty(2), _subset(raw, [1, 2]))
    mixed = _loss_terms(model, images, _targets([[OBJECT], [], []], 1), raw)
    anchors = model.anchors_for(images)
    matched, _ = match_anchors(anchors, np.array([[OBJECT[0]]], "float32"), np.ones((1, 1), bool))
    num_positive = int(np.sum(np.asarray(matched) >= 0))
    assert num_positive >= 1 and positive_only["box_loss"] > 0
    # The negatives add no box loss, and their background loss shares the positives' normaliser.
    assert mixed["box_loss"] == pytest.approx(positive_only["box_loss"], rel=1e-5)
    assert mixed["cls_loss"] == pytest.approx(
        positive_only["cls_loss"] + negatives_only["cls_loss"] / num_positive, rel=1e-5
    )


def test_retinanet_fit_on_negative_only_batches_lowers_scores():
    keras.utils.set_random_seed(4)
    model = tiny_retinanet(NUM_CLASSES, max_level=5)
    batches = make_batches(_empty_elements(4), 2, SIZE)  # max_boxes=None: [2, 0, 4] targets
    (images, targets), = batches.take(1).as_numpy_iterator()
    assert targets["boxes"].shape == (2, 0, 4)
    before = float(tf.reduce_max(tf.sigmoid(model(images, training=False)["cls"])))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(batches.repeat(3), epochs=1, verbose=0).history
    after = float(tf.reduce_max(tf.sigmoid(model(images, training=False)["cls"])))
    assert np.isfinite(history["loss"]).all() and history["box_loss"] == [0.0]
    assert after < 0.5 * before, (before, after)


# -------------------------------------------------------------- Faster R-CNN
@pytest.fixture(scope="module")
def faster_rcnn():
    keras.utils.set_random_seed(5)
    model = IPGFasterRCNN(NUM_CLASSES, **FASTER_RCNN)
    model.build((None, SIZE, SIZE, 3))
    images = _images()
    raw = model(images, training=True)
    return model, images, raw


def test_faster_rcnn_negative_only_batch_in_every_target_form(faster_rcnn):
    model, images, raw = faster_rcnn
    x, r = images[1:], _subset(raw, [1, 2])
    empty = _loss_terms(model, x, _empty(2), r, seed=11)
    # One -1 row: the same number of RoI candidates (proposals + ground-truth rows), so the same samples.
    padded = _loss_terms(model, x, _targets([[], []], 1), r, seed=11)
    for key in empty:
        assert np.isfinite(empty[key]) and empty[key] == pytest.approx(padded[key], rel=1e-6), key
    assert empty["rpn_box_loss"] == 0.0 and empty["box_loss"] == 0.0
    assert empty["rpn_cls_loss"] > 0 and empty["cls_loss"] > 0
    more_padding = _loss_terms(model, x, _targets([[], []], 3), r, seed=11)
    assert all(np.isfinite(v) for v in more_padding.values())
    assert more_padding["rpn_box_loss"] == 0.0 and more_padding["box_loss"] == 0.0


def test_faster_rcnn_mixed_batch(faster_rcnn):
    model, images, raw = faster_rcnn
    mixed = _loss_terms(model, images, _targets([[OBJECT], [], []], 1), raw, seed=12)
    assert all(np.isfinite(v) for v in mixed.values())
    # Only image 0 has an object: its RPN anchors and RoIs carry the box losses.
    assert mixed["rpn_box_loss"] > 0 and mixed["box_loss"] > 0


# Fixed RoIs (a grid of 16 x 16 and 32 x 32 boxes) on which the box head is scored.
GRID_ROIS = np.array([[x, y, x + s, y + s] for s in (16, 32) for x in range(0, SIZE - s + 1, 8)
                      for y in range(0, SIZE - s + 1, 8)], "float32")


def _foreground(model, images):
    """Highest RPN objectness and highest box-head foreground probability (on `GRID_ROIS`) on `images`."""
    out = model(images, training=False)
    objectness = float(tf.reduce_max(tf.sigmoid(out["rpn_cls"])))
    rois = np.tile(GRID_ROIS[None], (len(images), 1, 1))
    logits, _ = model.box_head_outputs(out["features"], rois)
    return objectness, float(tf.reduce_max(tf.nn.softmax(logits)[..., :NUM_CLASSES]))


def test_faster_rcnn_fit_on_negative_only_batches_lowers_scores():
    keras.utils.set_random_seed(6)
    model = IPGFasterRCNN(NUM_CLASSES, **FASTER_RCNN)
    model.build((None, SIZE, SIZE, 3))
    batches = make_batches(_empty_elements(4), 2, SIZE)  # [2, 0, 4] targets
    images = next(iter(batches))[0].numpy()
    before = _foreground(model, images)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(batches.repeat(3), epochs=1, verbose=0).history
    after = _foreground(model, images)
    assert np.isfinite(history["loss"]).all()
    assert history["rpn_box_loss"] == [0.0] and history["box_loss"] == [0.0]
    assert after[0] < 0.5 * before[0] and after[1] < 0.5 * before[1], (before, after)
