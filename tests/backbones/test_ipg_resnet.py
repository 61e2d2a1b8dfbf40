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



def _one_adam_step(model, x, trainable_biases: bool):
    """One Adam step on sum(C5**2); returns {variable path: new value}."""
    import tensorflow as tf

    if trainable_biases:  # the previous behaviour: every conv bias trained
        for conv, _ in model.conv_bn_pairs():
            conv.bias.trainable = True
    optimizer = keras.optimizers.Adam(1e-2)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, training=True)["C5"] ** 2)
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return {v.path: np.asarray(v) for v in model.variables}


def test_biases_cancelled_by_batchnorm_do_not_train_and_nothing_else_changes():
    """Bottleneck convs keep their bias variable (ImageNet/saved weights load as before), but it is frozen
    where the BN after it trains: its gradient is zero, so every other weight steps exactly as before."""
    import tensorflow as tf

    x = np.random.RandomState(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    model = IPGResNet(50, ipg=False, width_multiplier=0.125)
    pairs = model.conv_bn_pairs()
    assert len(pairs) == 1 + 16 * 3 + 4  # stem + 3 convs per bottleneck block + 4 projection shortcuts
    assert not any(conv.bias.trainable for conv, _ in pairs)
    assert all(conv.kernel.trainable for conv, _ in pairs)
    # While BN trains, the bias gradient is zero (what makes freezing it free): the bias is handed to the BN
    # (`defer_biases`), which in training leaves it out, so the gradient does not even exist.
    watched = [v.value for conv, _ in pairs for v in (conv.kernel, conv.bias)]  # the tf.Variables
    with tf.GradientTape() as tape:
        tape.watch(watched)
        loss = tf.reduce_sum(model(x, training=True)["C5"] ** 2)
    grads = tape.gradient(loss, watched)
    for (conv, _), g_kernel, g_bias in zip(pairs, grads[0::2], grads[1::2]):
        assert g_bias is None or float(tf.reduce_max(tf.abs(g_bias))) < 1e-3 * float(tf.reduce_max(tf.abs(g_kernel))), conv.name
    # One optimizer step from identical weights: frozen biases (new) vs trainable biases (old).
    old = IPGResNet(50, ipg=False, width_multiplier=0.125)
    old.set_weights(model.get_weights())
    bias_paths = {conv.bias.path for conv, _ in pairs}
    bias_before = {conv.bias.path: np.asarray(conv.bias) for conv, _ in pairs}
    new_values = _one_adam_step(model, x, trainable_biases=False)
    old_values = _one_adam_step(old, x, trainable_biases=True)
    assert len(old.trainable_variables) == len(model.trainable_variables) + len(pairs)
    for path, value in new_values.items():
        if path in bias_paths:
            np.testing.assert_array_equal(value, bias_before[path])  # frozen: unchanged
        else:
            np.testing.assert_allclose(value, old_values[path], rtol=1e-5, atol=1e-6, err_msg=path)
    # ... and the trained network computes the same (BN in training mode cancels any bias).
    a, b = model(x, training=True)["C5"], old(x, training=True)["C5"]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-3)
    # A frozen BN does not cancel the bias: it trains again.
    for _, bn in pairs:
        bn.trainable = False
    assert model.freeze_redundant_biases() == 0 and all(conv.bias.trainable for conv, _ in pairs)
    # ResNet-18/34 convs have no bias: nothing to freeze.
    assert IPGResNet(18, width_multiplier=0.25, ipg_width=8).freeze_redundant_biases() == 0
