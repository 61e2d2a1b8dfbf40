"""Shapes, behaviour and serialization of every ipg_keras layer."""

import keras
import numpy as np
import pytest

from ipg_keras.layers import (
    FeaturePyramid,
    IPGFusion,
    IPGTransform,
    ImageNormalization,
    ImagePyramid,
    PredictionHead,
)


def roundtrip(layer, inputs):
    """Serializes `layer` with its config and weights; checks the copy computes the same."""
    expected = layer(inputs)
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    clone(inputs)
    clone.set_weights(layer.get_weights())
    got = clone(inputs)
    for a, b in zip(keras.tree.flatten(expected), keras.tree.flatten(got)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    assert clone.get_config() == layer.get_config()
    return expected


def test_image_pyramid_area_is_exact_block_average():
    x = np.random.RandomState(0).rand(2, 32, 64, 3).astype("float32")
    levels = roundtrip(ImagePyramid((2, 3, 5)), x)
    assert [tuple(l.shape) for l in levels] == [(2, 8, 16, 3), (2, 4, 8, 3), (2, 1, 2, 3)]
    block = x[:, :4, :4, :].mean(axis=(1, 2))
    np.testing.assert_allclose(np.asarray(levels[0])[:, 0, 0], block, rtol=1e-5)


def test_image_pyramid_bilinear_and_dynamic_size():
    layer = ImagePyramid((1, 2), method="bilinear")
    out = layer(np.ones((1, 24, 40, 3), "float32"))
    assert [tuple(o.shape) for o in out] == [(1, 12, 20, 3), (1, 6, 10, 3)]
    np.testing.assert_allclose(np.asarray(out[1]), 1.0, rtol=1e-6)


@pytest.mark.parametrize("levels,method", [((3, 2), "area"), ((), "area"), ((2,), "nearest")])
def test_image_pyramid_rejects_bad_arguments(levels, method):
    with pytest.raises(ValueError):
        ImagePyramid(levels, method=method)


def test_ipg_transform_shape_and_serialization():
    x = np.random.rand(2, 16, 16, 3).astype("float32")
    out = roundtrip(IPGTransform(out_channels=12, width=8, depth=2), x)
    assert tuple(out.shape) == (2, 16, 16, 12)


def test_ipg_transform_rejects_bad_sizes():
    with pytest.raises(ValueError, match="out_channels"):
        IPGTransform(out_channels=0)


@pytest.mark.parametrize("mode", ["concat", "sum", "gated"])
def test_ipg_fusion_modes(mode):
    f = np.random.rand(2, 8, 8, 16).astype("float32")
    g = np.random.rand(2, 8, 8, 4).astype("float32")
    out = roundtrip(IPGFusion(mode), [f, g])
    assert tuple(out.shape) == (2, 8, 8, 16)


@pytest.mark.parametrize("mode", ["concat", "sum"])
def test_ipg_fusion_is_identity_at_initialisation(mode):
    """Zero-gamma BN: a fresh fusion leaves the backbone features untouched (pretrained weights stay intact)."""
    f = np.random.rand(2, 8, 8, 16).astype("float32")
    g = np.random.rand(2, 8, 8, 4).astype("float32") * 10
    np.testing.assert_allclose(np.asarray(IPGFusion(mode)([f, g], training=False)), f, atol=1e-6)


@pytest.mark.parametrize("mode", ["concat", "sum"])
def test_ipg_fusion_one_init_hears_the_guidance_from_the_start(mode):
    """init="one" (an IPG-study ablation): gamma starts at 1, so the output differs from F at once,
    by exactly BN(conv(x)) at inference (moving mean 0, variance 1)."""
    f = np.random.rand(2, 8, 8, 16).astype("float32")
    g = np.random.rand(2, 8, 8, 4).astype("float32") * 10
    layer = IPGFusion(mode, init="one")
    out = np.asarray(layer([f, g], training=False))
    x = np.concatenate([f, g], -1) if mode == "concat" else g
    conv = np.einsum("bhwc,cd->bhwd", x, np.asarray(layer.conv.kernel)[0, 0])
    np.testing.assert_allclose(out, f + conv / np.sqrt(1 + layer.bn.epsilon), rtol=1e-4, atol=1e-4)
    assert np.abs(out - f).mean() > 0.1
    assert roundtrip(IPGFusion(mode, init="one"), [f, g]).shape == f.shape  # init in get_config
    assert IPGFusion.from_config(layer.get_config()).init == "one"


def test_ipg_fusion_rejects_unknown_init_and_one_with_gated():
    with pytest.raises(ValueError, match="zero"):
        IPGFusion("concat", init="half")
    with pytest.raises(ValueError, match="gated"):
        IPGFusion("gated", init="one")


def test_ipg_fusion_rejects_unknown_mode():
    with pytest.raises(ValueError, match="concat"):
        IPGFusion("attention")


def test_feature_pyramid_retinanet_levels():
    feats = {f"C{l}": np.random.rand(1, 64 // 2**l, 128 // 2**l, 4 * l).astype("float32") for l in (2, 3, 4, 5)}
    feats = {k: np.random.rand(1, 256 // 2 ** int(k[1]), 256 // 2 ** int(k[1]), 8).astype("float32") for k in feats}
    out = roundtrip(FeaturePyramid(3, 7, 16), feats)
    assert sorted(out) == ["P3", "P4", "P5", "P6", "P7"]
    for l in range(3, 8):
        assert tuple(out[f"P{l}"].shape) == (1, 256 // 2**l, 256 // 2**l, 16)


def test_feature_pyramid_maxpool_levels_for_faster_rcnn():
    feats = {f"C{l}": np.random.rand(2, 128 // 2**l, 128 // 2**l, 8).astype("float32") for l in (2, 3, 4, 5)}
    out = FeaturePyramid(2, 6, 8, extra_levels="maxpool")(feats)
    assert tuple(out["P2"].shape) == (2, 32, 32, 8) and tuple(out["P6"].shape) == (2, 2, 2, 8)
    np.testing.assert_allclose(np.asarray(out["P6"]), np.asarray(out["P5"])[:, ::2, ::2], rtol=1e-6)


def test_feature_pyramid_names_missing_input():
    with pytest.raises(ValueError, match="C3"):
        FeaturePyramid(3, 7, 8)({"C4": np.zeros((1, 4, 4, 2), "float32"), "C5": np.zeros((1, 2, 2, 2), "float32")})


def test_prediction_head_shape_prior_and_serialization():
    feats = [np.random.rand(2, 8, 8, 6).astype("float32"), np.random.rand(2, 4, 4, 6).astype("float32")]
    head = PredictionHead(5, num_anchors=9, width=8, depth=2, prior_probability=0.01, norm="group")
    out = roundtrip(head, feats)
    assert tuple(out.shape) == (2, (64 + 16) * 9, 5)
    np.testing.assert_allclose(np.asarray(head.output_conv.bias), -np.log(99.0), rtol=1e-5)


def test_prediction_head_output_groups_compute_the_same_as_one_conv():
    feats = [np.random.rand(2, 8, 8, 6).astype("float32"), np.random.rand(2, 4, 4, 6).astype("float32")]
    single = PredictionHead(5, num_anchors=3, width=8, depth=1)
    single(feats)  # builds
    single.output_conv.bias.assign(np.random.rand(15).astype("float32"))  # distinct per channel
    expected = np.asarray(single(feats))
    grouped = PredictionHead(5, num_anchors=3, width=8, depth=1, output_groups=(1, 4))
    grouped(feats)
    grouped.set_weights(single.get_weights())  # same variables: old checkpoints load unchanged
    np.testing.assert_allclose(np.asarray(grouped(feats)), expected, rtol=1e-5, atol=1e-6)
    assert grouped.get_config()["output_groups"] == [1, 4]
    roundtrip(grouped, feats)


def test_prediction_head_rejects_bad_output_groups():
    with pytest.raises(ValueError, match=r"output_groups \(2, 4\) must be positive sizes summing to outputs_per_anchor=5"):
        PredictionHead(5, output_groups=(2, 4))


def test_image_normalization_modes():
    x = np.full((1, 2, 2, 3), 255.0, "float32")
    x[..., 0] = 0.0
    torch = np.asarray(roundtrip(ImageNormalization("torch"), x))
    np.testing.assert_allclose(torch[0, 0, 0], [(0 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225], rtol=1e-5)
    caffe = np.asarray(ImageNormalization("caffe")(x))
    np.testing.assert_allclose(caffe[0, 0, 0], [255 - 103.939, 255 - 116.779, 0 - 123.68], rtol=1e-5)
