"""RetinaNet decoding: the two-stage per-level top-k gives the previous single top-k's detections exactly."""

import numpy as np
import pytest
import tensorflow as tf
from keras import ops
from model_helpers import tiny_retinanet

from ipg_keras.models.retinanet import _sigmoid_whole_packets, top_pairs
from ipg_keras.ops.boxes import clip_boxes
from ipg_keras.ops.nms import batched_class_aware_nms


def reference_decode(model, raw, images, return_levels=False):
    """`IPGRetinaNet.decode_predictions` before the two-stage top-k (commit 04fd15a), kept verbatim."""
    cfg = model._config
    shape = ops.shape(images)
    height, width = shape[1], shape[2]
    cls_logits, box_deltas = raw["cls"], raw["box"]
    boxes_all, scores_all, classes_all, levels_all = [], [], [], []
    start = 0
    for level in range(model.min_level, model.max_level + 1):
        count = model.anchor_generator.level_count(level, height, width)
        logits = cls_logits[:, start : start + count, :]
        deltas = box_deltas[:, start : start + count, :]
        start = start + count
        scores = ops.reshape(ops.sigmoid(logits), (ops.shape(logits)[0], -1))
        k = ops.minimum(cfg["pre_nms_topk"], ops.shape(scores)[1])
        top_scores, top_index = tf.math.top_k(scores, k=k)
        anchor_index = top_index // model.num_classes
        classes = top_index % model.num_classes
        top_deltas = ops.take_along_axis(deltas, ops.expand_dims(anchor_index, -1), axis=1)
        top_anchors = model.anchor_generator.anchors_at(level, width, anchor_index)
        boxes = model.box_coder.decode(top_deltas, top_anchors)
        boxes_all.append(boxes)
        scores_all.append(top_scores)
        classes_all.append(classes)
        levels_all.append(ops.full_like(classes, level))
    boxes = clip_boxes(ops.concatenate(boxes_all, 1), ops.cast(height, "float32"), ops.cast(width, "float32"))
    detections = batched_class_aware_nms(
        boxes,
        ops.concatenate(scores_all, 1),
        ops.concatenate(classes_all, 1),
        max_detections=cfg["max_detections"],
        iou_threshold=cfg["nms_iou_threshold"],
        score_threshold=cfg["score_threshold"],
        labels=ops.concatenate(levels_all, 1) if return_levels else None,
    )
    if return_levels:
        detections["levels"] = detections.pop("labels")
    return detections


def head_outputs(num_anchors, num_classes, batch, kind, seed, level_sizes=()):
    """Random raw head outputs; `kind` sets how many (anchor, class) pairs pass the 0.05 score threshold.

    "tails": "sparse", and the last anchor of every level (`level_sizes`) scores highest
    in every class, so the pairs a level-by-level sigmoid computes in scalar code (the
    end of each level's slice) are detections; their logits (-2.5..0) are where scalar
    and vector sigmoids round differently most often.
    """
    rng = np.random.default_rng(seed)
    if kind == "busy":
        cls = rng.uniform(-6.0, 1.0, (batch, num_anchors, num_classes))
    elif kind == "tails":
        cls = rng.normal(-4.6, 0.6, (batch, num_anchors, num_classes))
        for end in np.cumsum(level_sizes):
            cls[:, end - 1] = rng.uniform(-2.5, 0.0, (batch, num_classes))
    elif kind == "sparse":  # a fresh network: logits near the 0.01 prior, a handful above threshold
        cls = rng.normal(-4.6, 0.6, (batch, num_anchors, num_classes))
    else:  # "ties": coarse logits (as from int8 heads) and saturated ones, so equal scores are everywhere
        cls = np.round(rng.uniform(-4.0, 3.0, (batch, num_anchors, num_classes)) * 2) / 2
        cls[rng.random(cls.shape) < 0.02] = 40.0  # sigmoid == 1.0 exactly
    box = rng.normal(0.0, 0.3, (batch, num_anchors, 4))
    return {"cls": tf.constant(cls, tf.float32), "box": tf.constant(box, tf.float32)}


@pytest.mark.parametrize(
    "num_classes, batch, kind, pre_nms_topk",
    [
        (1, 1, "busy", 100),
        (3, 2, "sparse", 1000),
        (3, 2, "busy", 50),
        (5, 1, "ties", 200),
        (20, 3, "busy", 1000),
        (80, 1, "sparse", 1000),
        (80, 2, "busy", 1000),
        (80, 2, "ties", 300),
        (16, 1, "ties", 200),
        (8, 2, "busy", 100),
        (12, 1, "tails", 1000),
        (7, 3, "tails", 100),
    ],
)
def test_decode_matches_the_single_top_k_reference(num_classes, batch, kind, pre_nms_topk):
    # 128x128: P3..P7 have 2304, 576, 144, 36, 9 anchors, so pre_nms_topk 50..1000
    # takes both branches of top_pairs (fewer and more anchors than k). Batch x
    # classes a multiple of 16 (80x1, 80x2, 16x1, 8x2) takes the one-sigmoid path
    # (every level slice in whole vector packets), the others score level by level.
    model = tiny_retinanet(num_classes, pre_nms_topk=pre_nms_topk, max_detections=300)
    images = tf.zeros([batch, 128, 128, 3])
    sizes = model.anchor_generator.level_sizes(128, 128)
    raw = head_outputs(sum(sizes), num_classes, batch, kind, seed=num_classes + batch, level_sizes=sizes)

    for return_levels in (False, True):
        got = model.decode_predictions(raw, images, return_levels=return_levels)
        want = reference_decode(model, raw, images, return_levels=return_levels)
        assert sorted(got) == sorted(want)
        for key in want:
            np.testing.assert_array_equal(got[key].numpy(), want[key].numpy(), err_msg=key)
    # The cases are what they claim: detections in every image; "sparse" has fewer
    # pairs above the score threshold than top-k keeps, "busy" more.
    assert (want["num_detections"].numpy() > 0).all()
    above = (tf.sigmoid(raw["cls"]).numpy() > model.get_config()["score_threshold"]).sum(axis=(1, 2))
    if kind == "sparse":
        assert (above < pre_nms_topk).all(), above
    if kind == "busy":
        assert (above > 5 * pre_nms_topk).all(), above
    levels = want["levels"].numpy()
    assert set(np.unique(levels[levels >= 0])) <= {3, 4, 5, 6, 7}


def test_decode_matches_the_reference_in_a_graph_with_dynamic_sizes():
    """SavedModel signatures trace with unknown batch, height and width: the tensor-k branch."""
    model = tiny_retinanet(4, pre_nms_topk=100, max_detections=50)
    num_anchors = sum(model.anchor_generator.level_sizes(128, 256))
    raw = head_outputs(num_anchors, 4, 2, "ties", seed=7)
    images = tf.zeros([2, 128, 256, 3])
    spec = (
        {"cls": tf.TensorSpec([None, None, 4]), "box": tf.TensorSpec([None, None, 4])},
        tf.TensorSpec([None, None, None, 3]),
    )
    got = tf.function(lambda r, x: model.decode_predictions(r, x, return_levels=True), input_signature=spec)(
        raw, images)
    want = reference_decode(model, raw, images, return_levels=True)
    for key in want:
        np.testing.assert_array_equal(got[key].numpy(), want[key].numpy(), err_msg=key)


@pytest.mark.parametrize("num_classes", [16, 3])
def test_decode_matches_the_reference_with_an_unknown_batch_size(num_classes):
    """Keras predict traces with an unknown batch: 16 classes fill whole packets per image (one-sigmoid path), 3 do not."""
    model = tiny_retinanet(num_classes, pre_nms_topk=300, max_detections=100)
    sizes = model.anchor_generator.level_sizes(128, 128)
    raw = head_outputs(sum(sizes), num_classes, 3, "tails", seed=11, level_sizes=sizes)
    images = tf.zeros([3, 128, 128, 3])
    spec = (
        {"cls": tf.TensorSpec([None, sum(sizes), num_classes]), "box": tf.TensorSpec([None, sum(sizes), 4])},
        tf.TensorSpec([None, 128, 128, 3]),
    )
    got = tf.function(lambda r, x: model.decode_predictions(r, x, return_levels=True), input_signature=spec)(
        raw, images)
    want = reference_decode(model, raw, images, return_levels=True)
    for key in want:
        np.testing.assert_array_equal(got[key].numpy(), want[key].numpy(), err_msg=key)


@pytest.mark.parametrize("num_anchors, num_classes, k", [(500, 80, 40), (400, 4, 350), (37, 3, 1000), (64, 7, 64), (300, 1, 299)])
def test_top_pairs_is_top_k_over_all_pairs_ties_included(num_anchors, num_classes, k):
    rng = np.random.default_rng(num_anchors)
    # Scores on a 1/8 grid: most pairs tie with many others.
    scores = tf.constant(np.floor(rng.random((2, num_anchors, num_classes)) * 8) / 8, tf.float32)
    want_scores, want_index = tf.math.top_k(tf.reshape(scores, (2, -1)), k=min(k, num_anchors * num_classes))
    # The level as the whole tensor or as anchors 5.. of a bigger one; static or tensor counts.
    padded = tf.concat([tf.ones([2, 5, num_classes]), scores, tf.ones([2, 3, num_classes])], axis=1)
    for args in ((scores, k), (padded, k, 5, num_anchors), (padded, k, tf.constant(5), tf.constant(num_anchors))):
        got_scores, anchors, classes = top_pairs(*args)
        np.testing.assert_array_equal(got_scores.numpy(), want_scores.numpy())
        np.testing.assert_array_equal((anchors * num_classes + classes).numpy(), want_index.numpy())


def test_sigmoid_of_gathered_logits_equals_the_full_tensor_sigmoid():
    """The one-sigmoid path's premise: in whole vector packets each value is computed alone.

    A plain sigmoid of a tensor whose size is not a multiple of the packet
    computes its last values in scalar code, which rounds differently; that is
    what `_sigmoid_whole_packets` avoids.
    """
    rng = np.random.default_rng(3)
    logits = tf.constant(rng.uniform(-20.0, 20.0, 64_000), tf.float32)  # 4000 packets of 16
    full = tf.sigmoid(logits).numpy()
    for size in (1, 5, 37, 1001):
        index = rng.choice(64_000, size, replace=False)
        got = _sigmoid_whole_packets(tf.gather(logits, index)).numpy()
        np.testing.assert_array_equal(got, full[index])
    tails = [(tf.sigmoid(logits[i : i + 7]).numpy() != full[i : i + 7]).any() for i in range(0, 7000, 7)]
    assert any(tails)  # the scalar tail does differ here (else the premise is moot, not wrong)
