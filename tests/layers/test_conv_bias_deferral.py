"""A conv bias handed to the BatchNormalization after it: the same function, and conv + BN fold into one op."""

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from ipg_keras.layers import BatchNormalization
from ipg_keras.layers.batch_normalization import defer_bias
from ipg_keras.layers.convolution import Conv2D

RNG = np.random.default_rng(0)


def _pairs(momentum=0.9):
    """(keras conv + keras BN) and (ipg conv + ipg BN, bias deferred), with equal random weights and statistics."""
    ref = (keras.layers.Conv2D(6, 3, padding="same"), keras.layers.BatchNormalization(momentum=momentum))
    ours = (Conv2D(6, 3, padding="same"), BatchNormalization(momentum=momentum))
    for conv, bn in (ref, ours):
        conv.build((None, 8, 8, 4))
        bn.build((None, 8, 8, 6))
    values = [RNG.normal(0, 0.5, v.shape).astype("float32") for v in ref[0].weights]
    values[1] += 2.0  # a bias far from zero
    stats = [RNG.uniform(0.5, 1.5, 6).astype("float32") for _ in range(4)]
    for conv, bn in (ref, ours):
        conv.set_weights(values)
        bn.set_weights(stats)
    defer_bias(*ours)
    return ref, ours


def _run(pair, x, training):
    conv, bn = pair
    return bn(conv(x), training=training)


X = tf.constant(RNG.normal(0, 1, (2, 8, 8, 4)).astype("float32"))


def test_inference_matches_conv_then_bn_and_folds_into_the_conv():
    ref, ours = _pairs()
    expected = tf.function(lambda t: _run(ref, t, False))(X)
    fn = tf.function(lambda t: _run(ours, t, False))
    np.testing.assert_allclose(fn(X), expected, rtol=1e-5, atol=1e-5)
    graph = fn.get_concrete_function(X).graph
    conv_op = next(op for op in graph.get_operations() if op.type == "Conv2D")
    consumers = {c.type for out in conv_op.outputs for c in out.consumers()}
    assert consumers == {"FusedBatchNormV3"}  # no BiasAdd between them: the pattern grappler folds


def test_training_outputs_and_moving_statistics_match():
    ref, ours = _pairs()
    y_ref, y_ours = _run(ref, X, True), _run(ours, X, True)
    np.testing.assert_allclose(y_ours, y_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours[1].moving_mean.numpy(), ref[1].moving_mean.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours[1].moving_variance.numpy(), ref[1].moving_variance.numpy(), rtol=1e-4)


def test_frozen_bn_in_training_passes_gradients_to_the_bias():
    ref, ours = _pairs()
    grads = []
    for conv, bn in (ref, ours):
        bn.trainable = False
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(bn(conv(X), training=True) ** 2)
        grads.append(tape.gradient(loss, [conv.kernel, conv.bias]))
    for a, b in zip(*grads):
        assert b is not None
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-3)


def test_taken_back_the_conv_applies_its_own_bias_again():
    ref, ours = _pairs()
    defer_bias(*ours, deferred=False)
    assert not ours[0].bias_deferred and ours[1]._deferred_bias() is None
    np.testing.assert_allclose(ours[0](X), ref[0](X), rtol=1e-6)
    np.testing.assert_allclose(_run(ours, X, False), _run(ref, X, False), rtol=1e-5, atol=1e-5)


def test_defer_bias_needs_the_package_layers():
    with pytest.raises(TypeError, match="ipg_keras.layers.Conv2D"):
        defer_bias(keras.layers.Conv2D(2, 1), BatchNormalization())


def test_resnet50_backbone_computes_the_same_with_and_without_deferral():
    from ipg_keras.backbones import IPGResNet

    backbone = IPGResNet(depth=50, ipg=True, width_multiplier=0.125, ipg_width=4)
    for conv, bn in backbone.conv_bn_pairs():
        conv.bias.assign(RNG.normal(0, 0.5, conv.bias.shape).astype("float32"))
        bn.moving_mean.assign(RNG.normal(0, 0.5, bn.moving_mean.shape).astype("float32"))
    x = tf.constant(RNG.uniform(0, 255, (2, 64, 64, 3)).astype("float32"))
    results = {}
    for deferred in (False, True):
        assert backbone.defer_biases(deferred) == 53
        results[deferred] = tf.function(lambda t: backbone(t, training=False))(x)
    for key in results[True]:
        np.testing.assert_allclose(results[True][key], results[False][key], rtol=1e-4, atol=1e-4)


def test_r50_model_saved_before_deferral_loads_and_predicts_the_same(tmp_path):
    """A .keras file saved by the commit before (keras Conv2D with biases, non-zero biases and statistics)."""
    import ipg_keras.models  # noqa: F401 - registers the classes

    folder = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_models"
    model = keras.models.load_model(folder / "retinanet_r50_biased_convs.keras")
    pairs = model.backbone.conv_bn_pairs()
    assert len(pairs) == 53 and all(conv.bias_deferred for conv, _ in pairs)
    assert not any(np.allclose(conv.bias.numpy(), 0.0) for conv, _ in pairs)  # the saved biases, not zeros
    image = np.random.default_rng(1).uniform(0, 255, (1, 128, 128, 3)).astype("float32")
    expected = np.load(folder / "retinanet_r50_biased_convs_outputs.npz")
    out = model(image, training=False)
    np.testing.assert_allclose(out["box"], expected["box"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["cls"], expected["cls"], rtol=1e-4, atol=1e-4)
    # Saved again and reloaded: nothing of the hand-over is written, and it is set up again on load.
    model.save(tmp_path / "again.keras")
    again = keras.models.load_model(tmp_path / "again.keras")
    assert all(conv.bias_deferred for conv, _ in again.backbone.conv_bn_pairs())
    np.testing.assert_allclose(again(image, training=False)["cls"], out["cls"], rtol=1e-5, atol=1e-5)
