"""A convolutional prediction head shared across FPN levels (RetinaNet, RPN)."""

from __future__ import annotations

import functools
import math

import keras
from keras import layers, ops

from ipg_keras.ops import POSTPROCESS_SCOPE


def _conv_same(x, kernel, bias):
    return ops.conv(x, kernel, padding="same") + bias


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
        output_groups: sizes of consecutive groups of the per-anchor outputs
            (summing to `outputs_per_anchor`) that each get their own output
            convolution, e.g. `(1, 4)` for the RPN's objectness and box deltas.
            The weights are the same single kernel (its channels split), so the
            values are identical; what differs is the graph: each group is its
            own tensor, with its own int8 range in a quantized TFLite export
            (one range shared by logits and deltas rounds the deltas coarsely).

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
        output_groups: tuple[int, ...] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if norm not in (None, "group"):
            raise ValueError(f"PredictionHead norm must be None or 'group', got {norm!r}.")
        if output_groups is not None:
            output_groups = tuple(int(g) for g in output_groups)
            if sum(output_groups) != int(outputs_per_anchor) or min(output_groups) < 1:
                raise ValueError(
                    f"PredictionHead output_groups {output_groups} must be positive sizes summing to "
                    f"outputs_per_anchor={outputs_per_anchor}, e.g. (1, 4) for objectness + box deltas."
                )
        self.output_groups = output_groups
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

    def _group_channels(self) -> list[list[int]]:
        """Output-conv channels of each group, anchor-major (channel = anchor * P + output)."""
        per_anchor, start, groups = self.outputs_per_anchor, 0, []
        for size in self.output_groups:
            groups.append([a * per_anchor + start + k for a in range(self.num_anchors) for k in range(size)])
            start += size
        return groups

    def _output_layers(self) -> list:
        """Per output group, `x -> output conv restricted to that group's channels` (the layer itself if ungrouped).

        The kernel is sliced here, once per call, not once per level.
        """
        if self.output_groups is None:
            return [self.output_conv]
        conv = self.output_conv
        return [
            functools.partial(_conv_same, kernel=ops.take(conv.kernel, c, axis=3), bias=ops.take(conv.bias, c))
            for c in self._group_channels()
        ]

    def call(self, features):
        output_layers = self._output_layers()
        outputs = []
        for x in features:
            for i, conv in enumerate(self.convs):
                x = conv(x)
                if self.norms:
                    x = self.norms[i](x)
                x = ops.relu(x)
            outputs.append([layer(x) for layer in output_layers])
        # In this scope, an int8 TFLite export concatenates the groups and the
        # levels in float, so every level's (and group's) output keeps its own
        # quantization range.
        sizes = self.output_groups or (self.outputs_per_anchor,)
        with keras.name_scope(POSTPROCESS_SCOPE):
            levels = []
            for groups in outputs:
                rows = [ops.reshape(g, (ops.shape(g)[0], -1, size)) for g, size in zip(groups, sizes)]
                levels.append(rows[0] if len(rows) == 1 else ops.concatenate(rows, axis=-1))
            return ops.concatenate(levels, axis=1)

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
            "output_groups": list(self.output_groups) if self.output_groups else None,
        }
