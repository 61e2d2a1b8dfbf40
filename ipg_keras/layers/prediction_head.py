"""A convolutional prediction head shared across FPN levels (RetinaNet, RPN)."""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from ipg_keras.ops import POSTPROCESS_SCOPE


@keras.saving.register_keras_serializable(package="ipg_keras")
class PredictionHead(keras.layers.Layer):
    """`depth` x (3x3 conv + [GroupNorm] + ReLU), then a 3x3 conv to `num_anchors * outputs_per_anchor`.

    The same weights run on every level (as in RetinaNet); each level's output
    is flattened to one row per anchor, in the (y, x, anchor) order the anchor
    generator uses, and the levels are concatenated.

    Args:
        outputs_per_anchor: values predicted per anchor (classes, or 4 box deltas).
        num_anchors: anchors per location.
        width: channels of the hidden convs.
        depth: number of hidden convs.
        prior_probability: if set, the last bias is `-log((1 - p) / p)` so the
            initial sigmoid output is `p` (RetinaNet's classification prior).
        norm: `None` or `"group"` (GroupNorm, 32 groups or fewer).

    Shape:
        input: list of `[B, h_l, w_l, C]`, one per level.
        output: `[B, sum_l h_l * w_l * num_anchors, outputs_per_anchor]`.
    """

    def __init__(
        self,
        outputs_per_anchor: int,
        num_anchors: int = 9,
        width: int = 256,
        depth: int = 4,
        prior_probability: float | None = None,
        norm: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if norm not in (None, "group"):
            raise ValueError(f"PredictionHead norm must be None or 'group', got {norm!r}.")
        self.outputs_per_anchor = int(outputs_per_anchor)
        self.num_anchors = int(num_anchors)
        self.width = int(width)
        self.depth = int(depth)
        self.prior_probability = prior_probability
        self.norm = norm
        init = keras.initializers.RandomNormal(stddev=0.01)
        self.convs = [
            layers.Conv2D(width, 3, padding="same", kernel_initializer=init, name=f"conv{i}")
            for i in range(self.depth)
        ]
        self.norms = (
            [layers.GroupNormalization(groups=math.gcd(32, width), name=f"gn{i}") for i in range(self.depth)]
            if norm == "group"
            else []
        )
        bias = "zeros"
        if prior_probability is not None:
            bias = keras.initializers.Constant(-math.log((1 - prior_probability) / prior_probability))
        self.output_conv = layers.Conv2D(
            self.num_anchors * self.outputs_per_anchor,
            3,
            padding="same",
            kernel_initializer=init,
            bias_initializer=bias,
            name="output",
        )

    def build(self, input_shape):
        shape = tuple(input_shape[0])
        for i, conv in enumerate(self.convs):
            conv.build(shape)
            shape = shape[:-1] + (self.width,)
            if self.norms:
                self.norms[i].build(shape)
        self.output_conv.build(shape)

    def call(self, features):
        outputs = []
        for x in features:
            for i, conv in enumerate(self.convs):
                x = conv(x)
                if self.norms:
                    x = self.norms[i](x)
                x = ops.relu(x)
            outputs.append(self.output_conv(x))
        # In this scope, an int8 TFLite export concatenates the levels in float,
        # so every level's output keeps its own quantization range.
        with keras.name_scope(POSTPROCESS_SCOPE):
            outputs = [ops.reshape(x, (ops.shape(x)[0], -1, self.outputs_per_anchor)) for x in outputs]
            return ops.concatenate(outputs, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], None, self.outputs_per_anchor)

    def get_config(self):
        return {
            **super().get_config(),
            "outputs_per_anchor": self.outputs_per_anchor,
            "num_anchors": self.num_anchors,
            "width": self.width,
            "depth": self.depth,
            "prior_probability": self.prior_probability,
            "norm": self.norm,
        }
