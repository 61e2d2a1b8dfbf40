"""IPG-ResNet: stage shapes, IPG vs plain, ImageNet weight mapping, errors."""

import keras
import numpy as np
import pytest

from ipg_keras.backbones import IPGResNet, build_backbone


@pytest.mark.parametrize("depth,channels", [(18, [16, 32, 64, 128]), (34, [16, 32, 64, 128]), (50, [64, 128, 256, 512])])
def test_stage_shapes_dynamic_input(depth, channels):
    model = IPGResNet(depth, width_multiplier=0.25, ipg_width=8)
    for shape in [(1, 64, 96, 3), (2, 32, 32, 3)]:
        out = model(np.zeros(shape, "float32"))
        for l, c in zip((2, 3, 4, 5), channels):
            assert tuple(out[f"C{l}"].shape) == (shape[0], shape[1] // 2**l, shape[2] // 2**l, c)


def test_ipg_false_is_the_same_network_without_guidance():
    guided = IPGResNet(18, ipg=True, width_multiplier=0.25, ipg_width=8)
    plain = IPGResNet(18, ipg=False, width_multiplier=0.25, ipg_width=8)
    names = lambda m: {l.name for l in m.layers}  # noqa: E731
    extra = names(guided) - names(plain)
    assert names(plain) <= names(guided)
    assert extra == {"ipg_pyramid"} | {f"ipg_transform_c{l}" for l in (2, 3, 4, 5)} | {
        f"ipg_fusion_c{l}" for l in (2, 3, 4, 5)
    }
    # Guided starts out computing the plain network exactly (zero-gamma fusion).
    for layer in plain.layers:
        if layer.weights:
            guided.get_layer(layer.name).set_weights(layer.get_weights())
    x = np.random.RandomState(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    a, b = guided(x, training=False), plain(x, training=False)
    for k in a:
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=1e-4, atol=1e-4)


def test_guided_levels_subset():
    model = IPGResNet(18, ipg_levels=(4, 5), width_multiplier=0.25, ipg_width=8)
    assert {l.name for l in model.layers if l.name.startswith("ipg_fusion")} == {"ipg_fusion_c4", "ipg_fusion_c5"}


def test_serialization_round_trip():
    model = IPGResNet(18, fusion="sum", width_multiplier=0.25, ipg_width=8)
    clone = IPGResNet.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert clone.count_params() == model.count_params()


def test_imagenet_weights_map_by_name_from_a_keras_applications_file(tmp_path):
    """weights=path loads keras.applications ResNet50 weights; the IPG net then equals keras' ResNet50."""
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(None, None, 3))
    rng = np.random.RandomState(0)
    for layer in reference.layers:  # non-trivial BN statistics, so a wrong mapping shows
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, b.shape), rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 1.5, v.shape)])
    path = str(tmp_path / "resnet50.weights.h5")
    reference.save_weights(path)
    model = IPGResNet(50, ipg=True, weights=path)
    assert model.normalization == "caffe"
    x = rng.uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    want = reference(keras.applications.resnet.preprocess_input(x.copy()), training=False)
    got = model(x, training=False)["C5"]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-3, atol=1e-3)


def test_bad_backbone_arguments_have_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown backbone 'resnet99'"):
        build_backbone("resnet99")
    with pytest.raises(ValueError, match="depth 50 or 101"):
        IPGResNet(18, weights="imagenet")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        IPGResNet(50, weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match="ipg_levels"):
        IPGResNet(18, ipg_levels=(1, 2))
