"""BatchNormalization run as TensorFlow's fused kernel (Keras 2's `fused=True`)."""

from __future__ import annotations

import weakref

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="ipg_keras")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` that runs as one fused op.

    Keras 3 computes batch normalisation in training from separate ops (the
    moments, then the normalisation), each a pass over the activations and
    each with its own gradient. TensorFlow's `FusedBatchNormV3` (oneDNN on CPU,
    cuDNN on GPU) does the forward pass and its gradient in one kernel each,
    which is what `tf.keras` used by default (`fused=True`) before Keras 3:
    the main job's training step is about 1.17x faster with it on 2 CPU cores
    (benchmarks/RESULTS.md, "Fused batch normalisation"). The result is the
    same layer: same weights and names, same config, the same normalisation
    (biased batch variance) and the same moving-statistics update as Keras
    (the fused op's Bessel-corrected variance is converted back). It keeps
    Keras' class name on purpose: a `.keras` file addresses each layer's weights
    by its class name, so models saved with `keras.layers.BatchNormalization`
    (every ipg-keras model before this layer) load into this one unchanged.

    In inference (`fuse_inference=True`, the default) the layer is the same fused
    op with the moving statistics, which grappler's remapper folds into the
    convolution before it when that conv has no bias (conv + BN + ReLU as one
    oneDNN op): the main job's forward pass is 1.07-1.12x faster. After a conv
    with a bias the op would stay separate (it measured 0.97x), so such a conv
    hands its bias to this layer (`defer_bias`, below; `IPGResNet` does it for the
    bottleneck ResNets' convs), which applies it as a shift of the moving mean.

    The fused op is used with the TensorFlow backend, for 4-D
    channels-last inputs with `center` and `scale`, no mask, no renorm, no
    `synchronized` (cross-replica) batch statistics and `epsilon >= 1.001e-5`;
    everything else is `keras.layers.BatchNormalization` unchanged.

    Args:
        fuse_inference: also use the fused op in inference (see above).
        **kwargs: those of `keras.layers.BatchNormalization`.

    Shape:
        input: `[B, H, W, C]` (any shape on the fallback path).
        output: same as input.
    """

    def __init__(self, fuse_inference: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.fuse_inference = bool(fuse_inference)
        # The conv whose bias this layer applies (`defer_bias`): a weak reference, so that it is neither a
        # tracked sublayer nor saved as part of this layer.
        self._bias_conv = None

    def _deferred_bias(self):
        conv = self._bias_conv() if self._bias_conv is not None else None
        return conv.bias if conv is not None and conv.bias_deferred and conv.use_bias else None

    def _fusable(self, inputs, training, mask) -> bool:
        """Whether this call takes the fused op (training or, with fuse_inference, inference)."""
        batch_statistics = bool(training and self.trainable)
        return bool(
            (batch_statistics or self.fuse_inference)
            and mask is None
            and keras.backend.backend() == "tensorflow"
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and self.center
            and self.scale
            and not self.renorm
            and not (batch_statistics and self.synchronized)
            and self.epsilon >= 1.001e-5  # the fused kernel's smallest epsilon
        )

    def call(self, inputs, training=None, mask=None):
        bias = self._deferred_bias()
        batch_statistics = bool(training and self.trainable)
        if bias is not None and not (self._fusable(inputs, training, mask) and (batch_statistics or not training)):
            # Every other case (a frozen layer in training, which must pass gradients to the bias; the fallback
            # path): apply the conv's bias here, where the conv would have.
            inputs = ops.add(inputs, ops.cast(bias, inputs.dtype))
            bias = None
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = ops.cast(inputs, "float32")
        if not batch_statistics:  # inference, or a frozen layer: the moving statistics
            mean = ops.cast(self.moving_mean, "float32")
            if bias is not None:  # BN(x + b) with mean m is BN(x) with mean m - b
                mean = mean - ops.cast(bias, "float32")
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32"),
                mean=mean, variance=ops.cast(self.moving_variance, "float32"),
                epsilon=self.epsilon, data_format="NHWC", is_training=False,
            )
            return ops.cast(y, self.compute_dtype)
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32"), epsilon=self.epsilon,
            data_format="NHWC", is_training=True,
        )
        # The op returns the unbiased variance n / (n - 1) * var for the moving average; Keras averages the
        # biased one (which is also what normalised y).
        if bias is not None:  # the batch of x + b has mean mean + b and the same variance (y is unchanged)
            mean = mean + ops.cast(bias, "float32")
        count = ops.cast(ops.prod(ops.shape(x)[:-1]), "float32")
        variance = variance * ops.maximum(count - 1.0, 1.0) / count
        momentum = self.momentum
        self.moving_mean.assign(
            self.moving_mean * momentum + ops.cast(mean, self.moving_mean.dtype) * (1.0 - momentum))
        self.moving_variance.assign(
            self.moving_variance * momentum + ops.cast(variance, self.moving_variance.dtype) * (1.0 - momentum))
        return ops.cast(y, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "fuse_inference": self.fuse_inference}


def defer_bias(conv, bn, deferred: bool = True) -> None:
    """Hands `conv`'s bias to the BatchNormalization `bn` that follows it (or takes it back).

    `conv` (an `ipg_keras.layers.Conv2D`) then computes without its bias and
    `bn` (this module's `BatchNormalization`) applies it: in inference as a shift
    of the moving mean, which lets grappler fold conv + BN (+ ReLU) into one op;
    in training with batch statistics not at all (the batch mean cancels it; the
    moving mean is updated with it); otherwise by adding it to its input. The
    pair computes what conv then BN computed, up to float rounding. `bn` must
    take `conv`'s output directly. Runtime state only: weights and configs are
    unchanged, so whoever builds the pair sets it (`IPGResNet` does).

    Raises:
        TypeError: `conv` or `bn` is not this package's layer.
    """
    from ipg_keras.layers.convolution import Conv2D

    if not isinstance(conv, Conv2D) or not isinstance(bn, BatchNormalization):
        raise TypeError(f"defer_bias needs an ipg_keras.layers.Conv2D and an ipg_keras.layers.BatchNormalization, "
                        f"got {type(conv).__name__} {conv.name!r} and {type(bn).__name__} {bn.name!r}.")
    conv.bias_deferred = bool(deferred) and conv.use_bias
    bn._bias_conv = weakref.ref(conv) if deferred else None
