"""Every model the package builds exports: backbones, ipg on/off, anchor sizes, precision policies.

Mixed-precision models (`mixed_float16`, `mixed_bfloat16`: float32 variables,
16-bit compute) convert to TFLite through a float32 copy with the same
weights, so their TFLite files equal those of the float32 model. The default
int8 calibration (99.99th percentile) keeps constant and near-constant
tensors at their min/max instead of failing on them.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from export_helpers import IMAGE_SIZE, coco_ap, valid
from model_helpers import tiny_retinanet

pytest.importorskip("ai_edge_litert", reason="LiteRT (ai-edge-litert) is needed to run TFLite models")

# COCO AP tolerance vs the float32 Keras model, per precision (as test_tflite.py).
AP_TOLERANCE = {"float32": 0.01, "float16": 0.01, "dynamic_int8": 0.03, "int8": 0.03}


def _under_policy(policy: str, build):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        return build()
    finally:
        keras.mixed_precision.set_global_policy(previous)


@pytest.fixture(scope="module")
def mixed_models(trained_model):
    """`mixed_models(policy)`: the trained test RetinaNet rebuilt under `policy`, with its weights."""
    built = {}

    def get(policy: str):
        if policy not in built:
            def build():
                model = type(trained_model).from_config(trained_model.get_config())
                model(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), "float32"))
                return model

            model = _under_policy(policy, build)
            model.set_weights(trained_model.get_weights())
            assert model.backbone.compute_dtype != "float32"
            built[policy] = model
        return built[policy]

    return get


# ---------------------------------------------------------------- float32 copy
def test_float32_model_is_an_exact_float32_copy(mixed_models, trained_model):
    from ipg_keras.export import float32_model
    from ipg_keras.export.common import low_precision_layers

    assert float32_model(trained_model, (IMAGE_SIZE, IMAGE_SIZE)) is trained_model  # float32: itself
    mixed = mixed_models("mixed_float16")
    mixed.image_size = IMAGE_SIZE
    assert low_precision_layers(mixed)
    copy = float32_model(mixed, (IMAGE_SIZE, IMAGE_SIZE))
    assert copy is not mixed and not low_precision_layers(copy) and copy.image_size == IMAGE_SIZE
    for a, b in zip(copy.get_weights(), trained_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    images = np.random.default_rng(0).uniform(0, 255, (2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    want, got = trained_model(images, training=False), copy(images, training=False)
    for key in ("cls", "box"):
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(want[key]), atol=1e-5)


def test_faster_rcnn_float32_copy_keeps_the_weights():
    from ipg_keras.export import float32_model
    from ipg_keras.models import IPGFasterRCNN

    def build():
        model = IPGFasterRCNN(3, backbone="resnet18", backbone_kwargs={"width_multiplier": 0.25, "ipg_width": 8},
                              fpn_channels=16, roi_head_width=32, pre_nms_topk_test=50, post_nms_topk_test=20)
        model.build((None, 64, 64, 3))
        return model

    mixed = _under_policy("mixed_float16", build)
    copy = float32_model(mixed, (64, 64))
    assert copy.backbone.compute_dtype == "float32" and copy.box_head.compute_dtype == "float32"
    assert len(copy.weights) == len(mixed.weights)
    for a, b in zip(copy.get_weights(), mixed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_16_bit_model_that_cannot_be_copied_fails_before_converting(tmp_path):
    from ipg_keras.export import export_tflite

    class Opaque(keras.Model):
        """A detector whose config cannot be rebuilt (a callable argument)."""

        def __init__(self, scorer, **kwargs):
            super().__init__(**kwargs)
            self.scorer = scorer
            self.conv = keras.layers.Conv2D(4, 1)

        def call(self, images):
            return self.conv(images)

        def get_config(self):
            raise NotImplementedError("Opaque has no config")

        def detect(self, images):
            raise AssertionError("must not be traced")

    model = _under_policy("mixed_float16", lambda: Opaque(lambda x: x))
    model(np.zeros((1, 32, 32, 3), "float32"))
    with pytest.raises(ValueError, match=r"compute in 16 bits \(mixed_float16.*float32 copy could not be built"):
        export_tflite(model, tmp_path / "m.tflite", image_size=32)
    assert not (tmp_path / "m.tflite").exists()


# ------------------------------------------------------------ policy x precision
@pytest.mark.parametrize(
    "policy,precision",
    [("mixed_float16", "float32"), ("mixed_float16", "int8"),
     pytest.param("mixed_float16", "float16", marks=pytest.mark.slow),
     pytest.param("mixed_float16", "dynamic_int8", marks=pytest.mark.slow),
     ("mixed_bfloat16", "float32"), ("mixed_bfloat16", "int8")],
)
def test_mixed_precision_model_exports_to_tflite(policy, precision, mixed_models, trained_model, val_batches,
                                                 keras_val_ap, calibration_images, tmp_path):
    from ipg_keras.export import export_tflite, read_metadata
    from ipg_keras.export.runtime import TFLiteDetector

    path = export_tflite(
        mixed_models(policy), tmp_path / f"{policy}_{precision}.tflite", precision=precision, image_size=IMAGE_SIZE,
        representative_dataset=calibration_images if precision == "int8" else None, num_calibration_images=32,
    )
    assert read_metadata(path)["precision"] == precision
    detector = TFLiteDetector(path)
    if precision == "float32":
        # The same file as the float32 model's: the same detections (test_tflite.py's tolerances).
        images = val_batches[0][0]
        got, want = detector(images), trained_model.predict_on_batch(images)
        np.testing.assert_array_equal(got["num_detections"], np.asarray(want["num_detections"]))
        for b in range(len(images)):
            g, w = valid(got, b), valid(want, b)
            np.testing.assert_array_equal(g["classes"], w["classes"])
            np.testing.assert_allclose(g["scores"], w["scores"], atol=1e-4)
            np.testing.assert_allclose(g["boxes"], w["boxes"], atol=0.5)
    ap = coco_ap(detector, val_batches, trained_model.num_classes)
    assert abs(ap - keras_val_ap) <= AP_TOLERANCE[precision], (policy, precision, ap, keras_val_ap)


def test_mixed_float16_saved_model_matches_keras(mixed_models, val_batches, tmp_path):
    from ipg_keras.export import export_saved_model
    from ipg_keras.export.runtime import SavedModelDetector

    mixed = mixed_models("mixed_float16")
    path = export_saved_model(mixed, tmp_path / "sm" / "1", image_size=IMAGE_SIZE)
    images = val_batches[0][0][:4]
    got, want = SavedModelDetector(path)(images), mixed.predict_on_batch(images)
    np.testing.assert_array_equal(got["num_detections"], np.asarray(want["num_detections"]))
    np.testing.assert_allclose(got["scores"], np.asarray(want["scores"]), atol=1e-3)


# ------------------------------------------------------- backbones and anchors
@pytest.mark.parametrize("backbone,ipg,anchor_size", [
    ("resnet34", False, 3.0),  # basic blocks, no IPG (resnet18 with IPG: test_tflite.py)
    pytest.param("resnet101", True, 4.0, marks=pytest.mark.slow),  # bottleneck blocks, as resnet50
])
def test_other_backbones_export_to_tflite(backbone, ipg, anchor_size, tmp_path):
    from ipg_keras.export import export_tflite
    from ipg_keras.export.runtime import TFLiteDetector

    model = tiny_retinanet(backbone=backbone, ipg=ipg, anchor_size=anchor_size, max_level=5, score_threshold=0.0)
    images = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).round().astype("float32")
    want = model.predict_on_batch(images)
    got = TFLiteDetector(export_tflite(model, tmp_path / "m.tflite", image_size=64))(images)
    np.testing.assert_array_equal(got["num_detections"], np.asarray(want["num_detections"]))
    # Untrained scores nearly tie, so compare them sorted (order among ties is arbitrary).
    np.testing.assert_allclose(np.sort(got["scores"], axis=1), np.sort(np.asarray(want["scores"]), axis=1),
                               atol=1e-5)


def test_histogram_resolvable_ranges():
    from ipg_keras.export.tflite import histogram_resolvable

    assert histogram_resolvable(-1.0, 3.0) and histogram_resolvable(0.0, 1e-3)
    assert not histogram_resolvable(0.5, 0.5)  # constant
    assert not histogram_resolvable(0.5, float(np.nextafter(np.float32(0.5), np.float32(1))))  # one float32 step
    assert not histogram_resolvable(100.0, 100.0 + 1e-4)  # fewer float32 steps than bins
    assert not histogram_resolvable(1.0, 0.0) and not histogram_resolvable(-np.inf, 1.0)


def test_default_int8_calibration_on_near_constant_tensors(tmp_path):
    """The case of ../shared/cases/README.md: RetinaNet with anchor_size=2 at 128 px ("Too many bins")."""
    from ipg_keras.export import export_tflite, read_metadata
    from ipg_keras.export.runtime import TFLiteDetector

    model = tiny_retinanet(anchor_size=2, score_threshold=0.0)
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 255, (8, 128, 128, 3)).round().astype("float32")
    path = export_tflite(model, tmp_path / "int8.tflite", precision="int8", image_size=128,
                         representative_dataset=images)
    assert read_metadata(path)["calibration_percentile"] == 99.99
    got = TFLiteDetector(path)(images[:2])
    want = model.predict_on_batch(images[:2])
    np.testing.assert_array_equal(got["num_detections"], np.asarray(want["num_detections"]))
    assert np.all((got["scores"] >= 0) & (got["scores"] <= 1)) and np.isfinite(got["boxes"]).all()
    np.testing.assert_allclose(got["scores"].max(axis=1), np.asarray(want["scores"]).max(axis=1), atol=2e-3)


# ------------------------------------------------------------ input size warning
def test_default_input_size_warns_and_names_the_fix(trained_model, tmp_path):
    from ipg_keras.export import DEFAULT_IMAGE_SIZE, InputSizeWarning
    from ipg_keras.export.common import resolve_image_size
    from ipg_keras.export.runtime import KerasDetector

    assert getattr(trained_model, "image_size", None) is None  # trained through the Python API
    with pytest.warns(InputSizeWarning, match=rf"default {DEFAULT_IMAGE_SIZE}x{DEFAULT_IMAGE_SIZE}.*image_size"
                                              r".*--image-size"):
        assert resolve_image_size(trained_model, None) == (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE)
    with pytest.warns(InputSizeWarning, match="no recorded input size"):
        assert KerasDetector(trained_model).input_size == (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputSizeWarning)  # a given or recorded size: no warning
        assert resolve_image_size(trained_model, 64) == (64, 64)
        assert KerasDetector(trained_model, image_size=64).input_size == (64, 64)
