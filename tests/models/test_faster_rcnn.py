"""IPG-Faster R-CNN: RoIAlign, level assignment, sampling, target assignment, training, save/load, predict.

The model tests share one tiny trained detector (module fixture): ResNet-18 at
width 0.25, FPN 16 channels, a 64-wide box head, 64 x 64 images.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import keras

import ipg_keras
from ipg_keras.models.faster_rcnn import IPGFasterRCNN, assign_roi_targets, assign_rpn_targets
from ipg_keras.models.roi_align import fpn_levels, multilevel_roi_align, roi_align
from ipg_keras.models.sampling import gather_sampled, random_subset, sample_balanced

NUM_CLASSES = 3
TINY = dict(
    backbone="resnet18",
    backbone_kwargs={"width_multiplier": 0.25, "ipg_width": 8},
    fpn_channels=16,
    roi_head_width=64,
    rpn_batch_size=64,
    num_rois=64,
    pre_nms_topk_train=200,
    post_nms_topk_train=100,
    pre_nms_topk_test=100,
    post_nms_topk_test=50,
)
LOSS_TERMS = ("rpn_cls_loss", "rpn_box_loss", "cls_loss", "box_loss")


# ----------------------------------------------------------------- RoIAlign
def _bilinear(feature, y, x):
    """torchvision's roi_align bilinear_interpolate for one point of an [H, W, C] map."""
    height, width = feature.shape[:2]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(feature.shape[2])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * feature[y_low, x_low] + hy * lx * feature[y_low, x_high]
            + ly * hx * feature[y_high, x_low] + ly * lx * feature[y_high, x_high])


def _roi_align_reference(feature, box, scale, output_size, sampling_ratio, aligned):
    """torchvision.ops.roi_align (fixed sampling_ratio) in NumPy for one box."""
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (v * scale - offset for v in box)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
    bin_w, bin_h = roi_w / output_size, roi_h / output_size
    out = np.zeros((output_size, output_size, feature.shape[2]))
    for i in range(output_size):
        for j in range(output_size):
            total = 0.0
            for iy in range(sampling_ratio):
                y = y1 + i * bin_h + (iy + 0.5) * bin_h / sampling_ratio
                for ix in range(sampling_ratio):
                    x = x1 + j * bin_w + (ix + 0.5) * bin_w / sampling_ratio
                    total = total + _bilinear(feature, y, x)
            out[i, j] = total / sampling_ratio**2
    return out


@pytest.mark.parametrize(
    "output_size,sampling_ratio,aligned", [(7, 2, True), (3, 1, True), (2, 3, True), (7, 2, False)]
)
def test_roi_align_matches_numpy_reference(output_size, sampling_ratio, aligned):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
    boxes = np.array(
        [
            [0, 0, 40, 30],  # touches the top-left border
            [3.3, 5.1, 20.7, 33.9],  # fractional coordinates
            [-10, -8, 50, 44],  # partly outside the image
            [30, 20, 31, 21],  # smaller than a feature pixel
            [0, 0, 88, 72],  # the whole map
            [60, 50, 90, 80],  # reaching past the bottom-right border
            [5, 5, 5, 5],  # empty
        ],
        np.float32,
    )
    images = np.array([0, 1, 0, 1, 0, 1, 0])
    got = roi_align(features, boxes, images, 1 / 8, output_size, sampling_ratio, aligned).numpy()
    expected = np.stack([
        _roi_align_reference(features[b], box, 1 / 8, output_size, sampling_ratio, aligned)
        for box, b in zip(boxes, images)
    ])
    assert got.shape == (7, output_size, output_size, 3)
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("aligned", [True, False])
def test_gather_roi_align_matches_numpy_reference(aligned):
    """The builtin-ops variant (what TFLite runs) against torchvision's algorithm, mixed FPN levels."""
    rng = np.random.default_rng(1)
    features = {l: rng.normal(size=(2, 256 // 2**l, 192 // 2**l, 3)).astype(np.float32) for l in range(2, 6)}
    boxes = np.array(
        [[[0, 0, 40, 30], [3.3, 5.1, 120.7, 233.9], [-10, -8, 500, 440], [30, 20, 31, 21]],
         [[100, 150, 191, 255], [60, 50, 90, 80], [5, 5, 5, 5], [-30, 200, 20, 300]]],
        np.float32,
    )
    levels = fpn_levels(tf.constant(boxes)).numpy()
    got = multilevel_roi_align(features, boxes, aligned=aligned, method="gather").numpy()
    fused = multilevel_roi_align(features, boxes, aligned=aligned).numpy()
    assert got.shape == (2, 4, 7, 7, 3)
    for b in range(2):
        for r in range(4):
            level = int(levels[b, r])
            want = _roi_align_reference(features[level][b], boxes[b, r], 1 / 2**level, 7, 2, aligned)
            np.testing.assert_allclose(got[b, r], want, atol=1e-4, err_msg=f"image {b} box {r} level {level}")
    np.testing.assert_allclose(got, fused, atol=1e-4)


def test_roi_align_rejects_bad_sizes():
    features = {l: np.zeros((1, 64 // 2**l, 64 // 2**l, 1), np.float32) for l in range(2, 6)}
    with pytest.raises(ValueError, match=r"method must be one of \('crop_and_resize', 'gather'\), got 'nearest'"):
        multilevel_roi_align(features, np.zeros((1, 1, 4), np.float32), method="nearest")
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align(np.zeros((1, 4, 4, 1), np.float32), np.zeros((1, 4), np.float32), [0], 1.0, 7, 0)


def test_fpn_level_assignment():
    sides = [224, 223.9, 112, 111, 448, 447, 896, 10, 0, 5000]
    boxes = tf.constant([[0, 0, s, s] for s in sides], tf.float32)
    assert fpn_levels(boxes).numpy().tolist() == [4, 3, 3, 2, 5, 4, 5, 2, 2, 5]
    # Level from sqrt(w * h): a 448 x 112 box has the scale of a 224 x 224 one.
    assert fpn_levels(tf.constant([[10, 10, 458, 122]], tf.float32)).numpy().tolist() == [4]
    assert fpn_levels(boxes, min_level=3, max_level=4).numpy().min() == 3


@pytest.mark.parametrize("method", ["crop_and_resize", "gather"])
def test_multilevel_roi_align_pools_each_box_from_its_level(method):
    # Level l of image b is filled with 10 * l + b: the pooled value names the source.
    features = {
        l: tf.fill([2, 512 // 2**l, 512 // 2**l, 2], 0.0) + tf.reshape(tf.constant([10.0 * l, 10.0 * l + 1]),
                                                                          [2, 1, 1, 1])
        for l in range(2, 6)
    }
    boxes = tf.constant(
        [[[0, 0, 50, 50], [0, 0, 500, 500], [10, 10, 160, 160]], [[0, 0, 300, 300], [5, 5, 55, 55],
                                                                  [0, 0, 150, 150]]],
        tf.float32,
    )
    pooled = multilevel_roi_align(features, boxes, method=method).numpy()
    assert pooled.shape == (2, 3, 7, 7, 2)
    expected = np.array([[20, 50, 30], [41, 21, 31]], np.float32)
    np.testing.assert_allclose(pooled[..., 0, 0, 0], expected, atol=1e-5)
    np.testing.assert_allclose(pooled.max(axis=(2, 3, 4)), expected, atol=1e-5)


# ----------------------------------------------------------------- sampling
def test_sample_balanced_ratios():
    tf.random.set_seed(0)
    n = 5000
    positive = np.zeros((3, n), bool)
    positive[0, :1000] = True  # plenty of both: 128 / 384
    positive[1, :10] = True  # few positives: all of them, negatives fill up
    positive[2, :5] = True  # few of both: everything
    negative = ~positive
    negative[2, 20:] = False  # row 2: 15 negatives
    pos, neg = (t.numpy() for t in sample_balanced(positive, negative, 512, 0.25))
    assert pos.sum(axis=1).tolist() == [128, 10, 5]
    assert neg.sum(axis=1).tolist() == [384, 502, 15]
    assert not (pos & ~positive).any() and not (neg & ~negative).any()
    # Half-positive RPN sampling caps positives at 128 of 256.
    pos, neg = (t.numpy() for t in sample_balanced(positive, negative, 256, 0.5))
    assert pos.sum(axis=1).tolist() == [128, 10, 5] and neg.sum(axis=1).tolist() == [128, 246, 15]


def test_random_subset_is_random_and_uniform():
    tf.random.set_seed(1)
    mask = np.ones((1, 100), bool)
    picks = np.stack([random_subset(mask, [10], 10).numpy()[0] for _ in range(200)])
    assert (picks.sum(axis=1) == 10).all()
    assert len({row.tobytes() for row in picks}) > 150  # different draws
    frequency = picks.mean(axis=0)  # every entry expected 0.1
    assert frequency.min() > 0.0 and frequency.max() < 0.3


def test_gather_sampled_puts_positives_first_and_marks_padding():
    pos = np.array([[False, True, False, False, True, False]])
    neg = np.array([[True, False, False, False, False, False]])
    index, valid = gather_sampled(pos, neg, 5)
    assert sorted(index.numpy()[0, :2].tolist()) == [1, 4]
    assert index.numpy()[0, 2] == 0
    assert valid.numpy().tolist() == [[True, True, True, False, False]]


# ------------------------------------------------------------- RPN targets
def test_rpn_target_assignment_hand_made():
    tf.random.set_seed(0)
    anchors = tf.constant(
        [
            [0, 0, 10, 10],  # IoU 1 with gt 0: positive
            [0, 0, 10, 9],  # IoU 0.9 with gt 0: positive
            [5, 0, 15, 10],  # IoU 1/3 with gt 0: between 0.3 and 0.7, ignored
            [20, 20, 30, 30],  # no overlap: background
            [40, 40, 50, 50],  # no overlap: background
            [100, 100, 108, 108],  # IoU 0.25 with the tiny gt 1, but its best anchor: positive
        ],
        tf.float32,
    )
    gt_boxes = tf.constant([[[0, 0, 10, 10], [100, 100, 104, 104], [-1, -1, -1, -1]],
                            [[-1, -1, -1, -1]] * 3], tf.float32)
    gt_valid = tf.constant([[True, True, False], [False, False, False]])
    matched, pos, neg = assign_rpn_targets(anchors, gt_boxes, gt_valid, 0.7, 0.3, num_samples=4,
                                           positive_fraction=0.5)
    assert matched.numpy()[0].tolist() == [0, 0, -2, -1, -1, 1]
    assert matched.numpy()[1].tolist() == [-1] * 6  # no objects: all background
    pos, neg = pos.numpy(), neg.numpy()
    # Image 0: 3 positives capped at 2 of 4 samples, the 2 negatives fill up.
    assert pos[0].sum() == 2 and set(np.flatnonzero(pos[0])) <= {0, 1, 5}
    assert neg[0].tolist() == [False, False, False, True, True, False]
    assert not pos[0, 2] and not neg[0, 2]  # ignored anchors are never sampled
    # Image 1: no positives, 4 of the 6 negatives.
    assert pos[1].sum() == 0 and neg[1].sum() == 4


def test_roi_target_assignment_hand_made():
    tf.random.set_seed(0)
    proposals = tf.constant([[[1, 1, 11, 11], [60, 60, 70, 70], [6, 0, 16, 10], [0, 0, 10, 10]]], tf.float32)
    proposal_valid = tf.constant([[True, True, True, False]])  # the last one is NMS padding
    gt_boxes = tf.constant([[[0, 0, 10, 10], [30, 30, 50, 40], [-1, -1, -1, -1]]], tf.float32)
    gt_classes = tf.constant([[2, 0, -1]])
    gt_valid = gt_classes >= 0
    out = assign_roi_targets(proposals, proposal_valid, gt_boxes, gt_classes, gt_valid, NUM_CLASSES,
                             num_samples=8, positive_fraction=0.5)
    valid, positive = out["valid"].numpy()[0], out["positive"].numpy()[0]
    rois, labels = out["rois"].numpy()[0], out["labels"].numpy()[0]
    # 7 candidates (4 proposals + 3 gt slots), 5 usable: positives = proposal 0
    # (IoU 0.68 with gt 0) and the two ground truths; negatives = proposals 1, 2 (IoU 0.33).
    assert rois.shape == (7, 4) and valid.sum() == 5 and positive.sum() == 3
    assert positive[:3].all() and not positive[3:].any()  # positives come first
    by_box = {tuple(r): (l, m) for r, l, m, v in zip(rois, labels, out["matched_boxes"].numpy()[0], valid) if v}
    assert by_box[(1, 1, 11, 11)][0] == 2 and tuple(by_box[(1, 1, 11, 11)][1]) == (0, 0, 10, 10)
    assert by_box[(0, 0, 10, 10)][0] == 2 and by_box[(30, 30, 50, 40)][0] == 0
    assert by_box[(60, 60, 70, 70)][0] == NUM_CLASSES and by_box[(6, 0, 16, 10)][0] == NUM_CLASSES
    # 25 % of 4 samples: one positive, then the two negatives.
    out = assign_roi_targets(proposals, proposal_valid, gt_boxes, gt_classes, gt_valid, NUM_CLASSES,
                             num_samples=4, positive_fraction=0.25)
    assert out["positive"].numpy().sum() == 1 and out["valid"].numpy().sum() == 3


# ------------------------------------------------------------------- model
def _toy_data(n=4, size=64, seed=0):
    """Flat-coloured rectangles (one colour per class) on a dark background, padded targets."""
    rng = np.random.default_rng(seed)
    colours = np.array([[230, 40, 40], [40, 230, 40], [40, 40, 230]], np.float32)
    images = np.full((n, size, size, 3), 30, np.float32)
    boxes = np.full((n, 3, 4), -1, np.float32)
    classes = np.full((n, 3), -1, np.int32)
    for i in range(n):
        for j in range(rng.integers(1, 4)):
            w, h = rng.integers(12, size // 2, 2)
            x, y = rng.integers(0, size - w), rng.integers(0, size - h)
            c = rng.integers(0, NUM_CLASSES)
            images[i, y : y + h, x : x + w] = colours[c]
            boxes[i, j] = [x, y, x + w, y + h]
            classes[i, j] = c
    return images, {"boxes": boxes, "classes": classes}


def _loss_terms(model, images, targets, proposals, num_proposals):
    """The four loss terms with the RoI head on the given proposals and fixed random samples."""
    tf.random.set_seed(123)  # the same anchor and RoI samples every time
    raw = model(images, training=True)
    raw = dict(raw, proposals=tf.constant(proposals), num_proposals=tf.constant(num_proposals))
    trackers = [model.rpn_cls_loss_tracker, model.rpn_box_loss_tracker, model.cls_loss_tracker,
                model.box_loss_tracker]
    for t in trackers:
        t.reset_state()
    model.compute_loss(images, targets, raw, training=False)
    return {t.name: float(t.result()) for t in trackers}


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    images, targets = _toy_data()
    model = ipg_keras.IPGFasterRCNN(NUM_CLASSES, **TINY)
    model.build((None, 64, 64, 3))
    initial = model.get_weights()
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    # 150 steps: at 40 the top boxes sat on the objects on some CPUs only; at 150 every
    # object is found at IoU >= 0.66 on every seed and kernel set tried (asserted: 0.5).
    history = model.fit(images, targets, batch_size=4, epochs=150, verbose=0)
    # The RoI losses depend on the proposals, which improve as the RPN learns
    # (more positives, a larger box-loss sum): compare the trained and the
    # initial weights on the same proposals (the trained RPN's) and samples.
    raw = model(images, training=True)
    proposals, num = raw["proposals"].numpy(), raw["num_proposals"].numpy()
    after = _loss_terms(model, images, targets, proposals, num)
    trained_weights = model.get_weights()
    model.set_weights(initial)
    before = _loss_terms(model, images, targets, proposals, num)
    model.set_weights(trained_weights)
    return model, images, targets, history.history, before, after


def test_fit_lowers_every_loss_term(trained):
    _, _, _, history, before, after = trained
    for key in ("loss",) + LOSS_TERMS:
        assert key in history and np.isfinite(history[key]).all(), key
    assert np.mean(history["loss"][-3:]) < 0.7 * history["loss"][0]
    # The RoI box loss of fit's history first rises (the RPN starts finding
    # positives), so it is only compared below, on fixed proposals.
    for key in ("rpn_cls_loss", "rpn_box_loss", "cls_loss"):
        assert np.mean(history[key][-3:]) < history[key][0], key
    # On the same proposals and samples, every term fell.
    for key in LOSS_TERMS:
        assert after[key] < 0.8 * before[key], (key, before, after)


def test_call_outputs_and_bad_images(trained):
    model, images, _, _, _, _ = trained
    out = model(images[:2])
    assert out["rpn_cls"].shape == (2, (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1) * 3)
    assert out["rpn_box"].shape == out["rpn_cls"].shape + (4,)
    assert out["proposals"].shape == (2, 50, 4) and out["cls"].shape == (2, 50, NUM_CLASSES + 1)
    assert out["box"].shape == (2, 50, NUM_CLASSES, 4)
    assert sorted(out["features"]) == ["P2", "P3", "P4", "P5"]
    with pytest.raises(ValueError, match="divisible by 32"):
        model(np.zeros((1, 48, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        model(np.zeros((64, 64, 3), np.float32))


def _check_detections(det, batch, height, width, max_detections=100):
    assert det["boxes"].shape == (batch, max_detections, 4)
    assert det["scores"].shape == (batch, max_detections) and det["classes"].shape == (batch, max_detections)
    for b in range(batch):
        n = int(det["num_detections"][b])
        assert 0 <= n <= max_detections
        assert ((det["classes"][b, :n] >= 0) & (det["classes"][b, :n] < NUM_CLASSES)).all()
        assert (det["classes"][b, n:] == -1).all() and (det["scores"][b, n:] == 0).all()
        boxes = det["boxes"][b, :n]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert np.all(np.diff(det["scores"][b, :n]) <= 1e-6)


def test_predict_dynamic_batch_and_image_size(trained):
    model, images, targets, _, _, _ = trained
    det = model.predict(images, verbose=0)
    _check_detections(det, 4, 64, 64)
    # The toy objects are found: every ground truth has a detection of its class among the
    # image's top 2 x (number of objects) boxes at IoU > 0.5.
    from ipg_keras.ops.boxes import pairwise_iou

    for b in range(len(images)):
        valid = targets["classes"][b] >= 0
        gt, gt_classes = targets["boxes"][b][valid], targets["classes"][b][valid]
        top = slice(0, 2 * len(gt))
        iou = np.asarray(pairwise_iou(gt, det["boxes"][b, top])) * (gt_classes[:, None] == det["classes"][b, top])
        assert np.all(iou.max(axis=1) > 0.5), (b, iou.max(axis=1))
    rng = np.random.default_rng(1)
    for shape in ((1, 70, 50, 3), (3, 96, 128, 3)):  # odd sizes get padded by predict
        det = model.predict(rng.uniform(0, 255, shape).astype(np.float32), verbose=0)
        _check_detections(det, shape[0], shape[1], shape[2])
    # The export path: one graph for every batch and image size.
    detect = tf.function(model.detect, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    for shape in ((2, 64, 96, 3), (1, 33, 40, 3)):
        det = {k: v.numpy() for k, v in detect(tf.constant(rng.uniform(0, 255, shape), tf.float32)).items()}
        _check_detections(det, shape[0], shape[1], shape[2])


def test_evaluate_and_coco_evaluation(trained):
    model, images, targets, _, _, _ = trained
    result = model.evaluate(images, targets, batch_size=4, verbose=0, return_dict=True)
    assert set(LOSS_TERMS) <= set(result) and np.isfinite(result["loss"])
    from ipg_keras.evaluation import evaluate_model

    metrics = evaluate_model(model, [(images, targets)], num_classes=NUM_CLASSES, verbose=False)
    assert {"AP", "AP50", "APs"} <= set(metrics) and 0.0 <= metrics["AP50"] <= 1.0


def test_keras_save_load_predicts_identically(trained, tmp_path):
    model, images, _, _, _, _ = trained
    path = tmp_path / "frcnn.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, IPGFasterRCNN) and loaded.get_config() == model.get_config()
    expected = model.predict_on_batch(images)
    got = loaded.predict_on_batch(images)
    for key in ("boxes", "scores", "classes", "num_detections"):
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(expected[key]), atol=1e-4, err_msg=key)


def test_config_round_trip_and_baseline():
    model = IPGFasterRCNN(NUM_CLASSES, ipg=False, **TINY)
    model.build((None, 64, 64, 3))
    names = lambda m: [layer.name for layer in m.backbone.layers]  # noqa: E731
    assert model.ipg is False and not [n for n in names(model) if n.startswith("ipg_")]
    ipg_model = IPGFasterRCNN(NUM_CLASSES, **TINY)
    ipg_model.build((None, 64, 64, 3))
    assert ipg_model.ipg and "ipg_fusion_c5" in names(ipg_model)
    assert ipg_model.count_params() > model.count_params()
    config = model.get_config()
    assert config["box_coder_weights"] == [10.0, 10.0, 5.0, 5.0] and config["roi_output_size"] == 7
    assert config["roi_align_method"] == "crop_and_resize"
    with model.builtin_ops_variant():  # what the TFLite exporter traces
        assert model.roi_align_method == "gather"
    assert model.roi_align_method == "crop_and_resize"
    with pytest.raises(RuntimeError), model.builtin_ops_variant():
        raise RuntimeError("restored even when tracing fails")
    assert model.roi_align_method == "crop_and_resize"
    clone = IPGFasterRCNN.from_config(config)
    assert clone.get_config() == config and not clone.ipg
    defaults = IPGFasterRCNN.__init__.__defaults__  # paper defaults stay in place
    assert 1024 in defaults and 512 in defaults and 2000 in defaults
    with pytest.raises(ValueError, match="num_classes"):
        IPGFasterRCNN(0)
    with pytest.raises(ValueError, match="Unknown backbone"):
        IPGFasterRCNN(2, backbone="vgg16")
    with pytest.raises(ValueError, match="roi_align_method"):
        IPGFasterRCNN(2, roi_align_method="bilinear", **TINY)
    with pytest.raises(ValueError, match="roi_positive_fraction"):
        IPGFasterRCNN(2, roi_positive_fraction=0.0, **{k: v for k, v in TINY.items()})


def test_training_configs_load():
    from ipg_keras.training.config import load_config

    for name in ("coco_faster_rcnn_r50", "coco_faster_rcnn_r101", "synthetic_faster_rcnn_cpu"):
        cfg = load_config(name)
        assert cfg.model.type == "faster_rcnn" and cfg.data.image_size % 32 == 0, name
    cfg = load_config("coco_faster_rcnn_r50")
    assert (cfg.train.epochs, cfg.train.learning_rate, cfg.train.batch_size) == (12, 0.02, 16)
    assert cfg.train.decay_epochs == [8, 11] and cfg.train.warmup_steps == 500 and cfg.data.image_size == 1344
    assert load_config("coco_faster_rcnn_r101").model.backbone == "resnet101"
    # The CPU config's second-stage sizes reach the detector through ipg-train's builder.
    from ipg_keras.training.train import build_model

    model = build_model(load_config("synthetic_faster_rcnn_cpu"), 5)
    assert isinstance(model, IPGFasterRCNN) and model.num_classes == 5 and model.ipg
    assert (model._config["roi_head_width"], model._config["num_rois"], model._config["post_nms_topk_test"]) == (
        256, 128, 300)
