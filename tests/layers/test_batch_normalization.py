"""BatchNormalization: the same layer as keras.layers.BatchNormalization, trained with the fused kernel."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ipg_keras.layers import BatchNormalization


def _pair(fuse_inference=True, **kwargs):
    fused = BatchNormalization(fuse_inference=fuse_inference, **kwargs)
    plain = keras.layers.BatchNormalization(**kwargs)
    for layer in (fused, plain):
        layer.build((None, 6, 5, 4))
    rng = np.random.default_rng(0)
    for variable in ("gamma", "beta", "moving_mean", "moving_variance"):
        value = rng.uniform(0.5, 1.5, 4).astype("float32")
        getattr(fused, variable).assign(value)
        getattr(plain, variable).assign(value)
    return fused, plain


def test_training_matches_keras_batchnorm_outputs_gradients_and_moving_statistics():
    fused, plain = _pair(epsilon=1.001e-5, momentum=0.9)
    x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, (3, 6, 5, 4)).astype("float32"))
    results = []
    for layer in (fused, plain):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.range(4, dtype=tf.float32)) + tf.reduce_sum(y**2)
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        results.append((y, grads, layer.moving_mean.numpy(), layer.moving_variance.numpy()))
    (y1, g1, m1, v1), (y2, g2, m2, v2) = results
    np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-5)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(m1, m2, rtol=1e-6)
    np.testing.assert_allclose(v1, v2, rtol=1e-5)  # the biased variance, as Keras averages it
    assert not np.allclose(m1, np.random.default_rng(0).uniform(0.5, 1.5, 4))  # the statistics did move


@pytest.mark.parametrize("fuse_inference", [True, False])
def test_fused_op_in_training_and_in_inference_unless_switched_off(fuse_inference):
    fused, plain = _pair(fuse_inference=fuse_inference)
    x = tf.random.normal((2, 6, 5, 4))

    def op_types(layer, training):
        graph = tf.function(lambda t: layer(t, training=training)).get_concrete_function(x).graph
        return {op.type for op in graph.get_operations()}

    assert any(t.startswith("FusedBatchNorm") for t in op_types(fused, True))
    assert any(t.startswith("FusedBatchNorm") for t in op_types(fused, False)) == fuse_inference
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), rtol=1e-5, atol=1e-5)
    fused.trainable = plain.trainable = False  # frozen: the moving statistics even with training=True
    np.testing.assert_allclose(fused(x, training=True), plain(x, training=True), rtol=1e-5, atol=1e-5)


def test_every_resnet_bn_fuses_in_inference_and_bottleneck_conv_biases_are_deferred_to_it():
    from ipg_keras.backbones import IPGResNet

    r50 = IPGResNet(depth=50, ipg=True, width_multiplier=0.125, ipg_width=4)
    bns = [l for l in r50.layers if isinstance(l, BatchNormalization)]
    assert bns and all(l.fuse_inference for l in bns)
    pairs = r50.conv_bn_pairs()
    assert len(pairs) == 53 and all(conv.bias_deferred and bn._deferred_bias() is conv.bias for conv, bn in pairs)
    bns18 = [l for l in IPGResNet(depth=18, ipg=False, width_multiplier=0.125).layers
             if isinstance(l, BatchNormalization)]
    assert bns18 and all(l.fuse_inference for l in bns18)


@pytest.mark.parametrize("case", ["frozen", "synchronized", "small_epsilon", "rank3", "mask"])
def test_everything_else_falls_back_to_keras_batchnorm(case):
    kwargs = {"epsilon": 1e-6} if case == "small_epsilon" else {}
    kwargs["fuse_inference"] = False  # frozen layers compute inference-mode BN
    layer = BatchNormalization(**kwargs)
    shape = (2, 5, 4) if case == "rank3" else (2, 6, 5, 4)
    layer.build(shape)
    if case == "frozen":
        layer.trainable = False
    if case == "synchronized":
        layer.synchronized = True
    x = tf.random.normal(shape)
    mask = tf.ones(shape[:-1], bool) if case == "mask" else None
    assert not layer._fusable(x, True, mask)


def test_config_round_trip_and_keras_saving(tmp_path):
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, BatchNormalization(momentum=0.8, epsilon=2e-5, fuse_inference=False,
                                                        name="bn")(inputs))
    model.layers[-1].moving_mean.assign([1.0, 2.0, 3.0])
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.get_layer("bn")
    assert isinstance(layer, BatchNormalization) and layer.momentum == 0.8 and layer.epsilon == 2e-5
    assert layer.fuse_inference is False
    np.testing.assert_array_equal(layer.moving_mean.numpy(), [1.0, 2.0, 3.0])


def test_a_model_saved_with_keras_batchnorm_loads_and_predicts_the_same():
    """A .keras file from before this layer (commit e62e1bd, keras.layers.BatchNormalization everywhere) loads
    into today's model, every BN weight in place: the outputs on a fixed image are those saved with it."""
    from pathlib import Path

    import ipg_keras.models  # noqa: F401 - registers the classes

    folder = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_models"
    model = keras.models.load_model(folder / "retinanet_keras_bn.keras")
    bns = [l for l in model._flatten_layers(include_self=False, recursive=True)
           if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(isinstance(l, BatchNormalization) for l in bns)
    assert not any(np.allclose(l.moving_variance.numpy(), 1.0) for l in bns)  # the saved statistics, not defaults
    image = np.random.default_rng(1).uniform(0, 255, (1, 128, 128, 3)).astype("float32")
    expected = np.load(folder / "retinanet_keras_bn_outputs.npz")
    out = model(image, training=False)
    np.testing.assert_allclose(out["box"], expected["box"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["cls"], expected["cls"], rtol=1e-4, atol=1e-4)
