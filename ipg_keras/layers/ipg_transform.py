"""The IPG transformation module: one pyramid level -> guidance features."""

from __future__ import annotations

import keras
from keras import layers

from ipg_keras.layers.batch_normalization import BatchNormalization

BN_EPSILON = 1.001e-5  # keras.applications ResNet's value


@keras.saving.register_keras_serializable(package="ipg_keras")
class IPGTransform(keras.layers.Layer):
    """Turns a downsampled image into shallow, spatially detailed features.

    `conv3x3(3 -> width)` + BN + ReLU, `depth` residual basic blocks at `width`
    channels, then `conv1x1(width -> out_channels)`. Deliberately shallow: its
    job is to carry spatial detail into a deep stage, not to add semantics.

    Args:
        out_channels: channels of the guidance features (default in the
            backbone: the stage's width / 4).
        width: channels inside the module.
        depth: number of residual basic blocks.

    Shape:
        input: `[B, h, w, 3]` (one image pyramid level).
        output: `[B, h, w, out_channels]`.
    """

    def __init__(self, out_channels: int, width: int = 64, depth: int = 1, **kwargs):
        super().__init__(**kwargs)
        if out_channels < 1 or width < 1 or depth < 0:
            raise ValueError(
                f"IPGTransform needs out_channels >= 1, width >= 1, depth >= 0; "
                f"got out_channels={out_channels}, width={width}, depth={depth}."
            )
        self.out_channels = int(out_channels)
        self.width = int(width)
        self.depth = int(depth)
        conv = dict(padding="same", use_bias=False, kernel_initializer="he_normal")
        self.stem_conv = layers.Conv2D(self.width, 3, name="stem_conv", **conv)
        self.stem_bn = BatchNormalization(epsilon=BN_EPSILON, name="stem_bn")
        self.blocks = []
        for i in range(self.depth):
            self.blocks.append(
                (
                    layers.Conv2D(self.width, 3, name=f"block{i}_conv1", **conv),
                    BatchNormalization(epsilon=BN_EPSILON, name=f"block{i}_bn1"),
                    layers.Conv2D(self.width, 3, name=f"block{i}_conv2", **conv),
                    BatchNormalization(epsilon=BN_EPSILON, name=f"block{i}_bn2"),
                )
            )
        self.project = layers.Conv2D(self.out_channels, 1, name="project", kernel_initializer="he_normal")

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.stem_conv.build(shape)
        inner = shape[:-1] + (self.width,)
        self.stem_bn.build(inner)
        for conv1, bn1, conv2, bn2 in self.blocks:
            conv1.build(inner)
            bn1.build(inner)
            conv2.build(inner)
            bn2.build(inner)
        self.project.build(inner)

    def call(self, inputs, training=None):
        x = keras.ops.relu(self.stem_bn(self.stem_conv(inputs), training=training))
        for conv1, bn1, conv2, bn2 in self.blocks:
            y = keras.ops.relu(bn1(conv1(x), training=training))
            y = bn2(conv2(y), training=training)
            x = keras.ops.relu(x + y)
        return self.project(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.out_channels,)

    def get_config(self):
        return {
            **super().get_config(),
            "out_channels": self.out_channels,
            "width": self.width,
            "depth": self.depth,
        }
