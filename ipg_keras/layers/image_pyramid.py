"""The image pyramid that guides the backbone (IPG-Net, section 3)."""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="ipg_keras")
class ImagePyramid(keras.layers.Layer):
    """Downsamples an image to the resolution of each guided backbone stage.

    Level `l` is the image at `1 / 2**l` of its size, the resolution of the
    backbone's stage output `C_l`. `"area"` downsampling is exact area
    averaging, done as repeated 2x2 average pooling, which is cheap, works
    for any (dynamic) H and W divisible by `2**max(levels)`, and exports to
    TFLite. `"bilinear"` resizes each level directly, without anti-aliasing.

    Args:
        levels: pyramid levels to produce, e.g. `(2, 3, 4, 5)`.
        method: `"area"` or `"bilinear"`.

    Shape:
        input: `[B, H, W, C]`.
        output: list, one `[B, H / 2**l, W / 2**l, C]` tensor per level, in `levels` order.
    """

    def __init__(self, levels: Sequence[int] = (2, 3, 4, 5), method: str = "area", **kwargs):
        super().__init__(**kwargs)
        levels = [int(level) for level in levels]
        if not levels or min(levels) < 1 or sorted(levels) != levels or len(set(levels)) != len(levels):
            raise ValueError(f"ImagePyramid levels must be strictly increasing integers >= 1, got {levels}.")
        if method not in ("area", "bilinear"):
            raise ValueError(f"ImagePyramid method must be 'area' or 'bilinear', got {method!r}.")
        self.levels = levels
        self.method = method

    def call(self, images):
        outputs = []
        if self.method == "area":
            current, current_level = images, 0
            for level in self.levels:
                while current_level < level:
                    current = ops.average_pool(current, pool_size=2, strides=2, padding="valid")
                    current_level += 1
                outputs.append(current)
        else:
            shape = tf.shape(images)
            for level in self.levels:
                size = shape[1:3] // (2**level)
                outputs.append(ops.cast(tf.image.resize(images, size, method="bilinear"), images.dtype))
        return outputs

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return [
            (b, None if h is None else h // 2**level, None if w is None else w // 2**level, c)
            for level in self.levels
        ]

    def get_config(self):
        return {**super().get_config(), "levels": list(self.levels), "method": self.method}
