"""A Conv2D whose bias can be left to the BatchNormalization after it (folded into BN's mean)."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="ipg_keras")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` that can hand its bias to the BatchNormalization after it.

    keras.applications' ResNet-50/101 (whose ImageNet weights `IPGResNet` loads)
    give every convolution a bias followed by BatchNormalization. A bias before
    BN is redundant: in training BN subtracts the batch mean, which removes it,
    and in inference `BN(conv(x) + b)` is `BN(conv(x))` with the moving mean
    shifted by `-b`. Leaving it in costs time in inference on CPU: grappler
    fuses `conv + bias` into one oneDNN op and then cannot fold the BN
    (a multiply and an add per element, and the ReLU, as separate passes over
    the activations). With the bias handed to the BN
    (`ipg_keras.layers.batch_normalization.defer_bias(conv, bn)`, which
    `IPGResNet` does for every such pair), the conv runs without it, the BN
    accounts for it, and conv + BN + ReLU run as one fused op:
    benchmarks/RESULTS.md, "Conv biases folded into BatchNormalization".

    The layer keeps Keras' class name (a `.keras` file addresses weights by
    class name), its weights (the bias variable stays, with its value) and its
    config; the hand-over is runtime state set by whoever builds the pair, never
    saved. Without it the layer is `keras.layers.Conv2D`. With it, the layer's
    own output lacks the bias (the BN output, the block's output, is the same).

    Shape:
        input: `[B, H, W, C_in]`; output: `[B, H', W', filters]` (as Conv2D).
    """

    bias_deferred = False

    def call(self, inputs):
        if not (self.bias_deferred and self.use_bias):
            return super().call(inputs)
        outputs = self.convolution_op(inputs, self.kernel)
        return outputs if self.activation is None else self.activation(outputs)
