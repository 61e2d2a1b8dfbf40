"""`bounding_box_format` of both detectors: Keras' converter, fit targets, predict boxes, config, errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_helpers import tiny_faster_rcnn, tiny_retinanet

from ipg_keras import IPGFasterRCNN, IPGRetinaNet
from ipg_keras.ops.box_formats import BOX_FORMATS, check_box_format, convert_boxes

# One xyxy box in a 100 (high) x 200 (wide) image, written in every format by hand.
H, W = 100, 200
XYXY = np.array([[10.0, 20.0, 40.0, 60.0]], np.float32)
BY_HAND = {
    "xyxy": [10, 20, 40, 60],
    "yxyx": [20, 10, 60, 40],
    "xywh": [10, 20, 30, 40],
    "center_xywh": [25, 40, 30, 40],
    "center_yxhw": [40, 25, 40, 30],
    "rel_xyxy": [0.05, 0.2, 0.2, 0.6],
    "rel_yxyx": [0.2, 0.05, 0.6, 0.2],
    "rel_xywh": [0.05, 0.2, 0.15, 0.4],
    "rel_center_xywh": [0.125, 0.4, 0.15, 0.4],
}
# Every sampled anchor and RoI is every candidate: Faster R-CNN's losses do not depend on random draws.
FRCNN_FULL_SAMPLES = dict(rpn_batch_size=4096, num_rois=512, roi_positive_fraction=1.0)
DETECTORS = {
    "retinanet": (lambda **kw: tiny_retinanet(**kw), 128),
    "faster_rcnn": (lambda **kw: tiny_faster_rcnn(**FRCNN_FULL_SAMPLES, **kw), 64),
}


def _by_hand(boxes, classes, fmt, height, width):
    """`boxes` [B, M, 4] xyxy pixels written in `fmt` with numpy (padding rows, class -1, stay -1)."""
    x1, y1, x2, y2 = np.moveaxis(boxes, -1, 0)
    w, h, cx, cy = x2 - x1, y2 - y1, (x1 + x2) / 2, (y1 + y2) / 2
    rel = fmt.startswith("rel_")
    sx, sy = (1.0 / width, 1.0 / height) if rel else (1.0, 1.0)
    columns = {
        "xyxy": (x1 * sx, y1 * sy, x2 * sx, y2 * sy),
        "yxyx": (y1 * sy, x1 * sx, y2 * sy, x2 * sx),
        "xywh": (x1 * sx, y1 * sy, w * sx, h * sy),
        "center_xywh": (cx * sx, cy * sy, w * sx, h * sy),
        "center_yxhw": (cy, cx, h, w),
    }[fmt.replace("rel_", "")]
    out = np.stack(columns, -1).astype(np.float32)
    return np.where((classes >= 0)[..., None], out, boxes).astype(np.float32)


def _toy_batch(size):
    """Two images `size` x `size` with 3 and 2 bright squares; targets padded with -1."""
    rng = np.random.RandomState(0)
    images = rng.uniform(0, 60, (2, size, size, 3)).astype("float32")
    boxes = np.full((2, 3, 4), -1.0, "float32")
    classes = np.full((2, 3), -1, "int32")
    s = size / 128
    for b in range(2):
        for i, (x, y, side, c) in enumerate([(20, 30, 24, 0), (70, 60, 12, 1), (90, 20, 30, 2)][: 3 - b]):
            x, y, side = int(x * s), int(y * s), max(int(side * s), 4)
            images[b, y : y + side, x : x + side, c] = 250.0
            boxes[b, i] = [x, y, x + side, y + side]
            classes[b, i] = c
    return images, boxes, classes


def _twin(model, fmt):
    """A model with `model`'s config and weights, but `bounding_box_format=fmt`."""
    twin = type(model).from_config(dict(model.get_config(), bounding_box_format=fmt))
    twin(np.zeros((1, 64, 64, 3) if isinstance(model, IPGFasterRCNN) else (1, 128, 128, 3), np.float32))
    twin.set_weights(model.get_weights())
    return twin


def _built(factory, size, **kwargs):
    model = factory(**kwargs)
    model(np.zeros((1, size, size, 3), np.float32))
    return model


# ------------------------------------------------------------- the converter
def test_keras_converter_exists_and_converts_every_format():
    """keras.utils.bounding_boxes.convert_format (Keras 3.15) knows our formats and gives the hand values."""
    assert set(BY_HAND) == set(BOX_FORMATS)
    convert = keras.utils.bounding_boxes.convert_format
    for fmt, want in BY_HAND.items():
        np.testing.assert_allclose(np.asarray(convert(XYXY, "xyxy", fmt, height=H, width=W)), [want], rtol=1e-6)
        np.testing.assert_allclose(np.asarray(convert(np.float32([want]), fmt, "xyxy", height=H, width=W)), XYXY,
                                   rtol=1e-6)
        np.testing.assert_allclose(convert_boxes(XYXY, "xyxy", fmt, H, W).numpy(), [want], rtol=1e-6)
        np.testing.assert_allclose(convert_boxes([want], fmt.upper(), "xyxy", H, W).numpy(), XYXY, rtol=1e-6)
    with pytest.raises(ValueError, match="Invalid source or target format"):  # Keras itself checks names
        convert(XYXY, "xyxy", "ltrb")


def test_padding_rows_stay_padding():
    boxes = np.array([[[10, 20, 40, 60], [-1, -1, -1, -1]], [[0, 0, 0, 0], [5, 5, 15, 25]]], np.float32)
    # Keras alone turns a padding row into garbage ([-1, -1, 0, 0] in center_xywh).
    np.testing.assert_allclose(
        np.asarray(keras.utils.bounding_boxes.convert_format(boxes, "xyxy", "center_xywh"))[0, 1], [-1, -1, 0, 0])
    out = convert_boxes(boxes, "xyxy", "center_xywh").numpy()  # rows of -1 are padding by default
    np.testing.assert_array_equal(out[0], [[25, 40, 30, 40], [-1, -1, -1, -1]])
    np.testing.assert_array_equal(out[1], [[0, 0, 0, 0], [10, 15, 10, 20]])
    classes = np.array([[0, -1], [-1, 1]])  # or say which rows are real
    out = convert_boxes(boxes, "xyxy", "rel_yxyx", H, W, valid=classes >= 0).numpy()
    np.testing.assert_allclose(out[0], [[0.2, 0.05, 0.6, 0.2], [-1, -1, -1, -1]], rtol=1e-6)
    np.testing.assert_allclose(out[1], [[0, 0, 0, 0], [0.05, 0.025, 0.25, 0.075]], rtol=1e-6)


def test_unknown_format_and_missing_size_errors():
    with pytest.raises(ValueError, match="xyxy, yxyx, xywh, center_xywh, center_yxhw, rel_xyxy, rel_yxyx"):
        check_box_format("ltrb")
    assert check_box_format("REL_YXYX") == "rel_yxyx"
    with pytest.raises(ValueError, match="needs the image height and width"):
        convert_boxes(XYXY, "xyxy", "rel_xyxy")
    for cls in (IPGRetinaNet, IPGFasterRCNN):  # at construction, before any weight is built
        with pytest.raises(ValueError, match="Unknown bounding_box_format 'ltrb'; choose one of xyxy, .*rel_yxyx"):
            cls(3, bounding_box_format="ltrb")
        with pytest.raises(ValueError, match="Unknown bounding_box_format"):
            cls(3, bounding_box_format=None)


# ------------------------------------------------------------ fit targets
@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_xywh_and_xyxy_targets_train_identically(name):
    """`fit` from the same weights on the same boxes, given as xyxy or as xywh: same losses, same weights."""
    factory, size = DETECTORS[name]
    images, boxes, classes = _toy_batch(size)
    keras.utils.set_random_seed(0)
    reference = _built(factory, size)
    initial = reference.get_weights()
    results = {}
    for fmt in ("xyxy", "xywh"):
        model = _built(factory, size, bounding_box_format=fmt)
        model.set_weights(initial)
        # Eager: two steps cost less than tracing the train step (same code path otherwise).
        model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
        targets = {"boxes": _by_hand(boxes, classes, fmt, size, size), "classes": classes}
        history = model.fit(images, targets, batch_size=2, epochs=2, shuffle=False, verbose=0).history
        results[fmt] = history, model.get_weights()
    (h1, w1), (h2, w2) = results["xyxy"], results["xywh"]
    assert h1.keys() == h2.keys() and "box_loss" in h1
    for key in h1:
        np.testing.assert_allclose(h2[key], h1[key], rtol=1e-5, err_msg=key)
        assert h1[key][0] > 0, key
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(a, b) for a, b in zip(initial, w1))  # it did train


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_compute_loss_is_the_same_in_other_formats(name):
    """The same boxes in other formats (rel_ relative to the fit image) give the xyxy loss."""
    factory, size = DETECTORS[name]
    images, boxes, classes = _toy_batch(size)
    keras.utils.set_random_seed(0)
    model = _built(factory, size)
    raw = model(images, training=True)
    loss = lambda m, b: float(m.compute_loss(images, {"boxes": b, "classes": classes}, raw))  # noqa: E731
    expected = loss(model, boxes)
    assert expected > 0
    for fmt in ("yxyx", "center_xywh", "rel_yxyx", "rel_center_xywh"):  # the converter test covers all
        twin = _twin(model, fmt)
        targets = _by_hand(boxes, classes, fmt, size, size)
        assert not np.allclose(targets, boxes)  # really another layout
        np.testing.assert_allclose(loss(twin, targets), expected, rtol=1e-5, err_msg=fmt)
        assert (targets[classes < 0] == -1).all()


def test_targets_in_a_wrong_format_fail_loudly():
    images, boxes, classes = _toy_batch(128)
    model = _built(tiny_retinanet, 128, bounding_box_format="xywh")
    raw = model(images)
    xywh = _by_hand(boxes, classes, "xywh", 128, 128)
    xywh[0, 0, 2] = -5.0  # negative width
    with pytest.raises(tf.errors.InvalidArgumentError, match="bounding_box_format='xywh' must give x2 >= x1"):
        model.compute_loss(images, {"boxes": xywh, "classes": classes}, raw)


def test_make_batches_in_rel_yxyx_feed_a_rel_yxyx_detector():
    """The keras-cv path: loader + make_batches in "rel_yxyx" into a detector built with "rel_yxyx"."""
    from ipg_keras.data import make_batches, synthetic_dataset

    def batch(fmt):
        ds = synthetic_dataset("train", num_images=2, image_size=96, bounding_box_format=fmt)
        return next(iter(make_batches(ds, 2, 128, bounding_box_format=fmt)))

    (x1, y1), (x2, y2) = batch("xyxy"), batch("rel_yxyx")
    np.testing.assert_array_equal(x1.numpy(), x2.numpy())
    np.testing.assert_allclose(y2["boxes"].numpy(), _by_hand(y1["boxes"].numpy(), y1["classes"].numpy(),
                                                              "rel_yxyx", 128, 128), atol=1e-6)
    keras.utils.set_random_seed(0)
    model = _built(tiny_retinanet, 128, num_classes=5)
    raw = model(x1, training=True)
    expected = float(model.compute_loss(x1, y1, raw))
    got = float(_twin(model, "rel_yxyx").compute_loss(x2, y2, raw))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


# ---------------------------------------------------------- predict boxes
@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_predict_rel_yxyx_equals_converted_xyxy(name):
    """rel_ predictions are relative to the images given to predict (100 x 120 here, padded inside)."""
    factory, size = DETECTORS[name]
    keras.utils.set_random_seed(0)
    model = _built(factory, size, score_threshold=0.0)
    twin = _twin(model, "rel_yxyx")
    images = np.random.RandomState(2).uniform(0, 255, (2, 100, 120, 3)).astype("float32")
    xyxy = model.predict(images, verbose=0)
    rel = twin.predict(images, verbose=0)
    assert (xyxy["num_detections"] > 0).all()
    np.testing.assert_array_equal(rel["classes"], xyxy["classes"])
    np.testing.assert_array_equal(rel["num_detections"], xyxy["num_detections"])
    np.testing.assert_allclose(rel["scores"], xyxy["scores"], atol=1e-6)
    expected = _by_hand(xyxy["boxes"], xyxy["classes"], "rel_yxyx", 100, 120)
    np.testing.assert_allclose(rel["boxes"], expected, atol=1e-6)
    padding = xyxy["classes"] < 0
    np.testing.assert_array_equal(rel["boxes"][padding], xyxy["boxes"][padding])  # padding rows untouched
    valid = rel["boxes"][~padding]
    assert valid.min() >= 0 and valid.max() <= 1 + 1e-6 and valid.max() > 0.5  # relative to 100 x 120
    on_batch = twin.predict_on_batch(images)
    np.testing.assert_allclose(np.asarray(on_batch["boxes"]), expected, atol=1e-6)
    # detect() (what the exports trace) stays xyxy pixels, and so does the runtime behind ipg-predict.
    np.testing.assert_allclose(twin.detect(images)["boxes"].numpy(), xyxy["boxes"], atol=1e-4)
    from ipg_keras.export.runtime import KerasDetector

    np.testing.assert_allclose(KerasDetector(twin)(images)["boxes"], xyxy["boxes"], atol=1e-4)


class _Oracle:
    """A stand-in detector: `predict_on_batch` gives the ground truth shifted 3 px right, in its format."""

    def __init__(self, bounding_box_format, boxes, classes, size):
        self.bounding_box_format, self.boxes, self.classes, self.size = bounding_box_format, boxes, classes, size

    def predict_on_batch(self, images):
        valid = self.classes >= 0
        shifted = np.where(valid[..., None], self.boxes + np.float32([3, 0, 3, 0]), -1)
        return {"boxes": _by_hand(shifted, self.classes, self.bounding_box_format, self.size, self.size),
                "scores": np.where(valid, 0.9, 0.0).astype(np.float32), "classes": self.classes,
                "num_detections": valid.sum(1).astype(np.int32)}


def test_coco_evaluation_reads_the_models_format():
    """evaluate_model converts targets and predictions of the model's format to xyxy pixels."""
    from ipg_keras.evaluation import evaluate_model

    size = 128
    images = np.zeros((1, size, size, 3), np.float32)
    boxes = np.float32([[[10, 10, 50, 50], [60, 70, 72, 82], [-1, -1, -1, -1]]])  # a medium and a small object
    classes = np.int32([[0, 1, -1]])
    expected = evaluate_model(_Oracle("xyxy", boxes, classes, size), [(images, {"boxes": boxes, "classes": classes})],
                              num_classes=3, verbose=False)
    assert expected["AP50"] == pytest.approx(1.0) and 0 < expected["AP"] < 1 and expected["APm"] > 0
    for fmt in ("rel_yxyx", "center_xywh"):
        targets = {"boxes": _by_hand(boxes, classes, fmt, size, size), "classes": classes}
        oracle = _Oracle(fmt, boxes, classes, size)
        got = evaluate_model(oracle, [(images, targets)], num_classes=3, verbose=False)
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], atol=1e-6, err_msg=(fmt, key))
        got = evaluate_model(oracle, [(images, targets)], num_classes=3, verbose=False, bounding_box_format=fmt,
                             predict_fn=oracle.predict_on_batch)
        np.testing.assert_allclose(got["AP"], expected["AP"], atol=1e-6)
    # Read as xyxy, the rel_ boxes are under a pixel: no medium object left.
    unconverted = evaluate_model(_Oracle("rel_yxyx", boxes, classes, size),
                                 [(images, {"boxes": _by_hand(boxes, classes, "rel_yxyx", size, size),
                                            "classes": classes})],
                                 num_classes=3, verbose=False, bounding_box_format="xyxy")
    assert unconverted["APm"] == -1.0


# ------------------------------------------------------------ serialization
def test_config_round_trip_and_old_configs(tmp_path):
    model = tiny_retinanet(bounding_box_format="Rel_YXYX")
    config = model.get_config()
    assert config["bounding_box_format"] == "rel_yxyx" and model.bounding_box_format == "rel_yxyx"
    assert IPGRetinaNet.from_config(config).get_config() == config
    old = {k: v for k, v in config.items() if k != "bounding_box_format"}  # saved before the argument existed
    assert IPGRetinaNet.from_config(old).bounding_box_format == "xyxy"
    assert tiny_retinanet().get_config()["bounding_box_format"] == "xyxy"
    frcnn = tiny_faster_rcnn(bounding_box_format="center_xywh")
    fconfig = frcnn.get_config()
    assert fconfig["bounding_box_format"] == "center_xywh"
    assert IPGFasterRCNN.from_config(fconfig).get_config() == fconfig
    fold = {k: v for k, v in fconfig.items() if k != "bounding_box_format"}
    assert IPGFasterRCNN.from_config(fold).bounding_box_format == "xyxy"
    # A .keras file keeps it.
    model(np.zeros((1, 128, 128, 3), np.float32))
    model.save(tmp_path / "rel.keras")
    assert keras.models.load_model(tmp_path / "rel.keras").bounding_box_format == "rel_yxyx"
