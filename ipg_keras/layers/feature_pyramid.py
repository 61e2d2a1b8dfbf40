"""Feature Pyramid Network (Lin et al. 2017) over the backbone's stage outputs."""

from __future__ import annotations

import keras
from keras import layers, ops

EXTRA_LEVEL_MODES = ("conv_c5", "conv_p5", "maxpool")


@keras.saving.register_keras_serializable(package="ipg_keras")
class FeaturePyramid(keras.layers.Layer):
    """Top-down FPN producing `P{min_level}` .. `P{max_level}`.

    Backbone levels (`C2`..`C5`) get a lateral 1x1 conv, the coarser level is
    upsampled 2x (nearest) and added, and a 3x3 conv smooths the sum. Levels
    above 5 are extra: `"conv_c5"` (RetinaNet: P6 = stride-2 3x3 conv on C5,
    P7 = stride-2 conv on ReLU(P6)), `"conv_p5"` (the same on P5) or
    `"maxpool"` (Faster R-CNN: P6 = stride-2 max-pool of P5).

    Args:
        min_level: finest output level (2 or 3).
        max_level: coarsest output level (5..7).
        num_channels: channels of every output.
        extra_levels: how levels above 5 are made.

    Shape:
        input: dict `{"C2": [B, H/4, W/4, c2], ..., "C5": [B, H/32, W/32, c5]}`
            (at least `C{min_level}`..`C5`).
        output: dict `{"P{l}": [B, H / 2**l, W / 2**l, num_channels]}`.
    """

    def __init__(
        self,
        min_level: int = 3,
        max_level: int = 7,
        num_channels: int = 256,
        extra_levels: str = "conv_c5",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 2 <= min_level <= 5 or max_level < max(min_level, 5):
            raise ValueError(
                f"FeaturePyramid needs 2 <= min_level <= 5 <= max_level, got min_level={min_level}, "
                f"max_level={max_level}."
            )
        if extra_levels not in EXTRA_LEVEL_MODES:
            raise ValueError(f"extra_levels must be one of {EXTRA_LEVEL_MODES}, got {extra_levels!r}.")
        self.min_level = int(min_level)
        self.max_level = int(max_level)
        self.num_channels = int(num_channels)
        self.extra_levels = extra_levels
        conv = dict(kernel_initializer=keras.initializers.GlorotUniform())
        self.backbone_levels = list(range(self.min_level, 6))
        self.lateral = {l: layers.Conv2D(num_channels, 1, name=f"lateral_c{l}", **conv) for l in self.backbone_levels}
        self.output_convs = {
            l: layers.Conv2D(num_channels, 3, padding="same", name=f"output_p{l}", **conv)
            for l in self.backbone_levels
        }
        self.extra_convs = {}
        if extra_levels != "maxpool":
            for l in range(6, self.max_level + 1):
                self.extra_convs[l] = layers.Conv2D(
                    num_channels, 3, strides=2, padding="same", name=f"extra_p{l}", **conv
                )

    def build(self, input_shape):
        for l in self.backbone_levels:
            key = f"C{l}"
            if key not in input_shape:
                raise ValueError(f"FeaturePyramid needs backbone output {key!r}; got {sorted(input_shape)}.")
            shape = tuple(input_shape[key])
            self.lateral[l].build(shape)
            self.output_convs[l].build(shape[:-1] + (self.num_channels,))
        for l, conv in self.extra_convs.items():
            if l == 6 and self.extra_levels == "conv_c5":
                conv.build(tuple(input_shape["C5"]))
            else:
                conv.build((None, None, None, self.num_channels))

    def call(self, inputs):
        laterals = {l: self.lateral[l](inputs[f"C{l}"]) for l in self.backbone_levels}
        top_down = {5: laterals[5]}
        for l in range(4, self.min_level - 1, -1):
            upsampled = ops.repeat(ops.repeat(top_down[l + 1], 2, axis=1), 2, axis=2)
            top_down[l] = laterals[l] + upsampled
        outputs = {f"P{l}": self.output_convs[l](top_down[l]) for l in self.backbone_levels}
        for l in range(6, self.max_level + 1):
            if self.extra_levels == "maxpool":
                outputs[f"P{l}"] = ops.max_pool(outputs[f"P{l - 1}"], pool_size=1, strides=2)
            elif l == 6:
                source = inputs["C5"] if self.extra_levels == "conv_c5" else outputs["P5"]
                outputs["P6"] = self.extra_convs[6](source)
            else:
                outputs[f"P{l}"] = self.extra_convs[l](ops.relu(outputs[f"P{l - 1}"]))
        return outputs

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape[f"C{self.min_level}"]
        out = {}
        for l in range(self.min_level, self.max_level + 1):
            f = 2 ** (l - self.min_level)
            out[f"P{l}"] = (b, None if h is None else -(-h // f), None if w is None else -(-w // f), self.num_channels)
        return out

    def get_config(self):
        return {
            **super().get_config(),
            "min_level": self.min_level,
            "max_level": self.max_level,
            "num_channels": self.num_channels,
            "extra_levels": self.extra_levels,
        }
