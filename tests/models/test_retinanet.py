"""IPG-RetinaNet: forward, losses, decoding, fit, predict, save/load and bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_helpers import tiny_retinanet

from ipg_keras import IPGRetinaNet


def toy_batch(batch=2, size=128):
    rng = np.random.RandomState(0)
    images = rng.uniform(0, 60, (batch, size, size, 3)).astype("float32")
    boxes = np.full((batch, 3, 4), -1.0, "float32")
    classes = np.full((batch, 3), -1, "int32")
    for b in range(batch):
        # 28-36 px squares: each has anchors (32 px and up on P3) at IoU >= 0.5, so the
        # tiny model learns them to a clear margin (best IoU >= 0.7 on every seed and
        # kernel set tried, against the 0.5 asserted below).
        for i, (x, y, s, c) in enumerate([(16, 24, 28, 0), (72, 64, 32, 1), (84, 12, 36, 2)][: 3 - b]):
            images[b, y : y + s, x : x + s, c] = 250.0
            boxes[b, i] = [x, y, x + s, y + s]
            classes[b, i] = c
    return images, {"boxes": boxes, "classes": classes}


@pytest.fixture(scope="module")
def trained():
    """A tiny detector fitted on the toy batch (shared by the tests that need trained weights).

    120 steps: at 40 the 0.5-IoU check below passed on one CPU and failed on another.
    """
    keras.utils.set_random_seed(1)
    model = tiny_retinanet(score_threshold=0.0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    x, y = toy_batch()
    history = model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(120), epochs=1, verbose=0)
    return model, history


def test_call_returns_one_row_per_anchor():
    model = tiny_retinanet(num_classes=4)
    out = model(np.zeros((2, 128, 256, 3), "float32"))
    anchors = model.anchors_for(np.zeros((1, 128, 256, 3)))
    assert tuple(out["cls"].shape) == (2, anchors.shape[0], 4)
    assert tuple(out["box"].shape) == (2, anchors.shape[0], 4)
    # prior 0.01 on the class bias: initial foreground probability is about 1 %
    assert abs(float(keras.ops.mean(keras.ops.sigmoid(out["cls"]))) - 0.01) < 0.005


def test_fit_lowers_every_loss_term(trained):
    _, history = trained
    h = history.history
    assert {"loss", "cls_loss", "box_loss"} <= set(h)
    model, _ = trained
    x, y = toy_batch()
    fresh = tiny_retinanet(score_threshold=0.0)
    fresh(x)
    fresh.compile(optimizer="adam")
    before = fresh.evaluate(x, y, verbose=0, return_dict=True)
    after = model.evaluate(x, y, verbose=0, return_dict=True)
    for key in ("loss", "cls_loss", "box_loss"):
        assert after[key] < 0.6 * before[key], (key, before[key], after[key])


def test_trained_model_finds_the_toy_objects(trained):
    model, _ = trained
    x, y = toy_batch()
    pred = model.predict(x, verbose=0)
    from ipg_keras.ops import pairwise_iou

    for b in range(2):
        gt = y["boxes"][b][y["classes"][b] >= 0]
        top = pred["boxes"][b, : len(gt) * 3]
        best = np.asarray(pairwise_iou(gt, top)).max(axis=1)
        assert np.all(best > 0.5), best


def test_predict_output_contract_dynamic_batch_and_size(trained):
    model, _ = trained
    for shape in [(1, 128, 128, 3), (3, 100, 150, 3), (2, 256, 128, 3)]:
        pred = model.predict(np.random.uniform(0, 255, shape).astype("float32"), verbose=0)
        assert set(pred) == {"boxes", "scores", "classes", "num_detections"}
        assert pred["boxes"].shape == (shape[0], 100, 4) and pred["scores"].shape == (shape[0], 100)
        assert pred["classes"].dtype == np.int32 and pred["num_detections"].shape == (shape[0],)
        n = pred["num_detections"]
        for b in range(shape[0]):
            valid = pred["boxes"][b, : n[b]]
            assert np.all(valid[:, [0, 2]] <= shape[2]) and np.all(valid[:, [1, 3]] <= shape[1])
            assert np.all(valid >= 0) and np.all(np.diff(pred["scores"][b, : n[b]]) <= 1e-6)
            assert np.all(pred["classes"][b, n[b]:] == -1)


def test_decoding_puts_a_confident_anchor_back_on_itself():
    model = tiny_retinanet(num_classes=2)
    images = np.zeros((1, 128, 128, 3), "float32")
    anchors = np.asarray(model.anchors_for(images))
    raw = {"cls": np.full((1, len(anchors), 2), -10.0, "float32"), "box": np.zeros((1, len(anchors), 4), "float32")}
    raw["cls"][0, 40, 1] = 5.0
    out = model.decode_predictions(raw, images)
    assert int(out["num_detections"][0]) == 1 and int(out["classes"][0, 0]) == 1
    np.testing.assert_allclose(np.asarray(out["boxes"][0, 0]), np.clip(anchors[40], 0, 128), atol=1e-4)


def test_keras_file_round_trip_predicts_identically(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "retinanet.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, IPGRetinaNet) and loaded.get_config() == model.get_config()
    x, _ = toy_batch()
    a, b = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    assert a["num_detections"].min() > 0
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-4)


def test_baseline_is_the_same_detector_without_ipg():
    guided, plain = tiny_retinanet(ipg=True), tiny_retinanet(ipg=False)
    x = np.zeros((1, 128, 128, 3), "float32")
    guided(x), plain(x)
    assert plain.count_params() < guided.count_params()
    assert not any("ipg_transform" in w.path or "ipg_fusion" in w.path for w in plain.weights)
    assert any("ipg_transform" in w.path for w in guided.weights)
    assert guided.get_config()["ipg"] is True and plain.get_config()["ipg"] is False


def test_bad_images_get_clear_errors():
    model = tiny_retinanet()
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        model(np.zeros((128, 128, 3), "float32"))
    with pytest.raises(ValueError, match="not divisible by 128"):
        model(np.zeros((1, 100, 128, 3), "float32"))


def test_bad_targets_get_clear_errors():
    model = tiny_retinanet()
    model.compile(optimizer="adam")
    x, y = toy_batch()
    inverted = {"boxes": y["boxes"].copy(), "classes": y["classes"]}
    inverted["boxes"][0, 0] = [50, 50, 10, 60]
    with pytest.raises(tf.errors.InvalidArgumentError, match="x2 >= x1"):
        model.fit(x, inverted, epochs=1, verbose=0)
    bad_class = {"boxes": y["boxes"], "classes": np.where(y["classes"] == 2, 7, y["classes"]).astype("int32")}
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes=3"):
        model.fit(x, bad_class, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="'boxes'"):
        model.fit(x, y["boxes"], epochs=1, verbose=0)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="Unknown backbone 'resnet9'"):
        IPGRetinaNet(3, backbone="resnet9")
    with pytest.raises(ValueError, match="num_classes"):
        IPGRetinaNet(0)
    with pytest.raises(ValueError, match="box_loss"):
        IPGRetinaNet(3, box_loss="l2")
    with pytest.raises(ValueError, match="cls_loss must be one of"):
        IPGRetinaNet(3, cls_loss="varifocal")


def test_giou_box_loss_trains():
    model = tiny_retinanet(box_loss="giou")
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    x, y = toy_batch()
    h = model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(8), epochs=1, verbose=0).history
    assert np.isfinite(h["box_loss"][-1])


def test_quality_focal_targets_are_the_iou_of_the_predicted_box():
    """`cls_loss="quality_focal"`: with zero box deltas the predicted box is the anchor, so the
    positive anchors' class targets are their IoU with the matched box (GFL, Li et al. 2020)."""
    from ipg_keras.models.matching import match_anchors

    model = tiny_retinanet(cls_loss="quality_focal", focal_gamma=2.0)
    x, y = toy_batch()
    anchors = model.anchors_for(x)
    num_anchors = int(anchors.shape[0])
    logits = np.full((2, num_anchors, 3), -1.0, "float32")
    raw = {"box": np.zeros((2, num_anchors, 4), "float32"), "cls": logits}
    model.compute_loss(x, y, raw)
    valid = y["classes"] >= 0
    matched, best_iou = (np.asarray(t) for t in match_anchors(anchors, y["boxes"], valid, 0.5, 0.4))
    positive = matched >= 0
    quality = np.zeros_like(logits)
    for b, a in zip(*np.nonzero(positive)):
        quality[b, a, y["classes"][b, matched[b, a]]] = best_iou[b, a]
    p = 1 / (1 + np.exp(1.0))
    per = np.abs(quality - p) ** 2 * -(quality * np.log(p) + (1 - quality) * np.log(1 - p))
    expected = (per * (matched != -2)[..., None]).sum() / positive.sum()
    assert 0.5 <= best_iou[positive].min() and best_iou[positive].max() < 1.0  # soft targets, not 1
    np.testing.assert_allclose(float(model.cls_loss_tracker.result()), expected, rtol=1e-4)


def test_quality_focal_loss_trains_and_round_trips(tmp_path):
    keras.utils.set_random_seed(0)
    model = tiny_retinanet(cls_loss="quality_focal")
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    x, y = toy_batch()
    h = model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(30), epochs=1, verbose=0).history
    assert np.isfinite(h["cls_loss"][-1]) and np.isfinite(h["box_loss"][-1])
    path = tmp_path / "qfl.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config()["cls_loss"] == "quality_focal"
    np.testing.assert_allclose(loaded(x)["cls"], model(x)["cls"], atol=1e-5)


def test_decode_predictions_can_name_the_fpn_level_of_each_detection(trained):
    """`return_levels`: the same detections, each with the level whose anchor produced it."""
    model, _ = trained
    x, _ = toy_batch()
    raw = model(x, training=False)
    plain = model.decode_predictions(raw, x)
    with_levels = model.decode_predictions(raw, x, return_levels=True)
    for key in ("boxes", "scores", "classes", "num_detections"):
        np.testing.assert_array_equal(np.asarray(plain[key]), np.asarray(with_levels[key]))
    levels = np.asarray(with_levels["levels"])
    valid = np.arange(levels.shape[1])[None] < np.asarray(with_levels["num_detections"])[:, None]
    assert np.all(levels[~valid] == -1)
    assert set(np.unique(levels[valid])) <= set(range(model.min_level, model.max_level + 1))
    # Reference: the top detection's level, found by brute force over the raw outputs.
    counts = [model.anchor_generator.level_count(l, x.shape[1], x.shape[2])
              for l in range(model.min_level, model.max_level + 1)]
    scores = tf.sigmoid(raw["cls"][0]).numpy().max(-1)
    level_of_anchor = np.repeat(np.arange(model.min_level, model.max_level + 1), counts)
    assert levels[0, 0] == level_of_anchor[np.argmax(scores)]


def test_atss_matcher_trains_round_trips_and_rejects_unknown_matchers(tmp_path):
    keras.utils.set_random_seed(0)
    model = tiny_retinanet(matcher="atss", atss_topk=4)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    x, y = toy_batch()
    h = model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(20), epochs=1, verbose=0).history
    assert np.isfinite(h["cls_loss"][-1]) and 0 < h["box_loss"][-1] < 10
    path = tmp_path / "atss.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config()["matcher"] == "atss" and loaded.get_config()["atss_topk"] == 4
    with pytest.raises(ValueError, match="matcher must be one of"):
        IPGRetinaNet(3, matcher="hungarian")
    with pytest.raises(ValueError, match="atss_topk"):
        IPGRetinaNet(3, matcher="atss", atss_topk=0)
