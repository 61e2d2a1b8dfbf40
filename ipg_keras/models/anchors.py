"""Anchor boxes for FPN levels, computed in-graph from the image size.

Computing anchors from the (possibly dynamic) image shape on every call is
what lets `predict` take any batch and image size, and lets an exported graph
carry its own anchors.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="ipg_keras")
class AnchorGenerator:
    """Anchors of `len(scales) * len(aspect_ratios)` shapes at every location of every level.

    The anchor of level `l`, scale `s`, ratio `r` (= height / width) is centred
    on `((x + 0.5) * 2**l, (y + 0.5) * 2**l)` with area `(size * 2**l * s)**2`.
    The flattening order (level, y, x, shape) matches `PredictionHead`.

    Args:
        min_level, max_level: FPN levels.
        sizes: base size in strides (RetinaNet 4: 32 px on P3), one value or one per level.
        scales: per-octave scales, e.g. `(1, 2**(1/3), 2**(2/3))`.
        aspect_ratios: height / width ratios.
    """

    def __init__(
        self,
        min_level: int = 3,
        max_level: int = 7,
        sizes: float | Sequence[float] = 4.0,
        scales: Sequence[float] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3)),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    ):
        self.min_level = int(min_level)
        self.max_level = int(max_level)
        n_levels = self.max_level - self.min_level + 1
        sizes = [float(sizes)] * n_levels if isinstance(sizes, (int, float)) else [float(s) for s in sizes]
        if len(sizes) != n_levels:
            raise ValueError(f"Got {len(sizes)} anchor sizes for {n_levels} levels.")
        self.sizes = sizes
        self.scales = [float(s) for s in scales]
        self.aspect_ratios = [float(r) for r in aspect_ratios]

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.scales) * len(self.aspect_ratios)

    def _shapes(self, level: int):
        """`[A, 4]` anchors centred on the origin for one level (numpy constants)."""
        stride = 2.0**level
        size = self.sizes[level - self.min_level] * stride
        out = []
        for scale in self.scales:
            for ratio in self.aspect_ratios:
                area = (size * scale) ** 2
                w = (area / ratio) ** 0.5
                h = w * ratio
                out.append([-w / 2, -h / 2, w / 2, h / 2])
        return out

    @staticmethod
    def _grid(level: int, height, width):
        """`(stride, rows, columns)` of one level; ceil division matches SAME-padded stride-2 convs."""
        stride = 2**level
        return stride, (height + stride - 1) // stride, (width + stride - 1) // stride

    def level_anchors(self, level: int, height, width):
        """Anchors of one level for an image of `height` x `width`: `[h_l * w_l * A, 4]`."""
        stride, fh, fw = self._grid(level, height, width)
        ys = (ops.cast(ops.arange(fh), "float32") + 0.5) * float(stride)
        xs = (ops.cast(ops.arange(fw), "float32") + 0.5) * float(stride)
        yy, xx = ops.meshgrid(ys, xs, indexing="ij")
        centers = ops.stack([xx, yy, xx, yy], axis=-1)  # [fh, fw, 4]
        shapes = ops.convert_to_tensor(self._shapes(level), "float32")  # [A, 4]
        anchors = ops.expand_dims(centers, 2) + shapes  # [fh, fw, A, 4]
        return ops.reshape(anchors, (-1, 4))

    def level_count(self, level: int, height, width):
        """Number of anchors of one level: `h_l * w_l * A` (an int for int sizes, a tensor for dynamic ones)."""
        _, fh, fw = self._grid(level, height, width)
        return fh * fw * self.num_anchors_per_location

    def anchors_at(self, level: int, width, index):
        """Anchors of one level at flat indices `index` (any shape): `[..., 4]`.

        Equal to `take(level_anchors(level, height, width), index)`, but computed
        from the index (row, column, shape) instead of gathered from the full
        table: an exported graph then has no large anchor constant, which
        TFLite's dynamic-range quantization would round to int8 (~2 px steps).
        """
        stride, _, fw = self._grid(level, 0, width)
        num = self.num_anchors_per_location
        location = index // num
        cx = (ops.cast(location % fw, "float32") + 0.5) * float(stride)
        cy = (ops.cast(location // fw, "float32") + 0.5) * float(stride)
        centers = ops.stack([cx, cy, cx, cy], axis=-1)
        shapes = ops.take(ops.convert_to_tensor(self._shapes(level), "float32"), index % num, axis=0)
        return centers + shapes

    def __call__(self, height, width):
        """All levels' anchors for an image of `height` x `width`: `[N, 4]` xyxy."""
        return ops.concatenate(
            [self.level_anchors(l, height, width) for l in range(self.min_level, self.max_level + 1)], axis=0
        )

    def level_sizes(self, height: int, width: int) -> list[int]:
        """Number of anchors per level, for slicing flat outputs by level (ints for int sizes, else tensors)."""
        return [self.level_count(l, height, width) for l in range(self.min_level, self.max_level + 1)]

    def get_config(self):
        return {
            "min_level": self.min_level,
            "max_level": self.max_level,
            "sizes": self.sizes,
            "scales": self.scales,
            "aspect_ratios": self.aspect_ratios,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
