"""RoIAlign (He et al. 2017) on one feature map or on FPN levels, in graph-friendly TensorFlow.

Semantics follow torchvision's `roi_align` / Detectron2's `ROIAlign` with
`aligned=True` and a fixed `sampling_ratio`: every output bin averages
`sampling_ratio**2` bilinear samples taken at the centres of a regular
sub-grid of the bin; a sample more than one pixel outside the feature map
is 0, one within a pixel of the border takes the border value.

It is built on `tf.image.crop_and_resize` (which samples a regular grid that
includes its end points) over the feature map padded by one replicated pixel
on every side: the padding reproduces the torchvision border rule exactly and
keeps the normaliser `H + 1` positive even for 1-pixel-high maps.
"""

from __future__ import annotations

from typing import Mapping

import tensorflow as tf

# Pixel scale of the FPN level assignment of Lin et al. (2017): a 224 x 224 RoI goes to P4.
CANONICAL_SIZE = 224.0
CANONICAL_LEVEL = 4
# multilevel_roi_align methods: TF's fused kernel, and builtin-op gathers (TFLite).
ROI_ALIGN_METHODS = ("crop_and_resize", "gather")


def roi_align(
    features,
    boxes,
    batch_indices,
    spatial_scale: float,
    output_size: int = 7,
    sampling_ratio: int = 2,
    aligned: bool = True,
):
    """RoIAlign of `N` boxes on one feature map.

    Args:
        features: `[B, H, W, C]` feature map (cast to float32).
        boxes: `[N, 4]` xyxy boxes in input-image pixels.
        batch_indices: `[N]` int, the image of each box.
        spatial_scale: feature pixels per image pixel (`1 / stride`).
        output_size: side of the square output.
        sampling_ratio: samples per bin side (fixed, > 0).
        aligned: shift by half a pixel so that pixel centres line up
            (Detectron2's `aligned=True`); False reproduces the original
            Mask R-CNN RoIAlign (RoIs at least 1 x 1 feature pixel).

    Returns:
        `[N, output_size, output_size, C]` float32.
    """
    if int(output_size) < 1 or int(sampling_ratio) < 1:
        raise ValueError(f"roi_align needs output_size >= 1 and sampling_ratio >= 1, got {output_size}, "
                         f"{sampling_ratio}.")
    features = tf.cast(features, tf.float32)
    boxes = tf.cast(tf.reshape(boxes, [-1, 4]), tf.float32)
    offset = 0.5 if aligned else 0.0
    x1 = boxes[:, 0] * spatial_scale - offset
    y1 = boxes[:, 1] * spatial_scale - offset
    x2 = boxes[:, 2] * spatial_scale - offset
    y2 = boxes[:, 3] * spatial_scale - offset
    roi_w = x2 - x1
    roi_h = y2 - y1
    if not aligned:
        roi_w = tf.maximum(roi_w, 1.0)
        roi_h = tf.maximum(roi_h, 1.0)
    n = int(output_size) * int(sampling_ratio)
    # Sample k (0..n-1) sits at start + (k + 0.5) * size / n; crop_and_resize
    # spans its first to its last sample, in pixel-index units of the padded
    # map (index + 1) divided by (padded size - 1) = size + 1.
    shape = tf.shape(features)
    norm_h = tf.cast(shape[1] + 1, tf.float32)
    norm_w = tf.cast(shape[2] + 1, tf.float32)
    first_y = y1 + 0.5 * roi_h / n + 1.0
    last_y = y1 + (n - 0.5) * roi_h / n + 1.0
    first_x = x1 + 0.5 * roi_w / n + 1.0
    last_x = x1 + (n - 0.5) * roi_w / n + 1.0
    crop_boxes = tf.stack([first_y / norm_h, first_x / norm_w, last_y / norm_h, last_x / norm_w], axis=-1)
    padded = tf.pad(features, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    crops = tf.image.crop_and_resize(
        padded, crop_boxes, tf.cast(batch_indices, tf.int32), [n, n], method="bilinear", extrapolation_value=0.0
    )
    if sampling_ratio > 1:
        crops = tf.nn.avg_pool2d(crops, sampling_ratio, sampling_ratio, "VALID")
    return crops


def fpn_levels(
    boxes,
    min_level: int = 2,
    max_level: int = 5,
    canonical_level: int = CANONICAL_LEVEL,
    canonical_size: float = CANONICAL_SIZE,
):
    """FPN level of each box: `floor(4 + log2(sqrt(w * h) / 224))` clamped to `[min_level, max_level]`.

    Args:
        boxes: `[..., 4]` xyxy boxes in image pixels.
    Returns:
        `[...]` int32 levels (empty boxes go to `min_level`).
    """
    boxes = tf.cast(boxes, tf.float32)
    w = tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    h = tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    size = tf.sqrt(w * h)
    # The 1e-6 nudges boxes of exactly 224 * 2**k onto level 4 + k despite
    # rounding (torchvision's LevelMapper does the same); clipping in float
    # keeps log2(0) = -inf from reaching the int cast.
    level = tf.floor(canonical_level + tf.math.log(size / canonical_size) / tf.math.log(2.0) + 1e-6)
    level = tf.clip_by_value(level, float(min_level), float(max_level))
    return tf.cast(level, tf.int32)


def _axis_samples(start, length, n: int, size):
    """Bilinear corners of `n` evenly spaced samples per RoI along one axis (torchvision's rule).

    Sample `k` sits at `start + (k + 0.5) * length / n`. A sample more than one
    pixel outside `[0, size - 1]` is dropped (weight 0); one within a pixel of the
    border takes the border value.

    Args:
        start, length: `[N]` RoI start and extent in feature pixels; size: `[N]` map size (float).
    Returns:
        `(low, high)` int32 `[N, n]` and `(w_low, w_high)` float32 `[N, n]` (zero outside).
    """
    k = (tf.range(n, dtype=tf.float32) + 0.5) / float(n)
    coord = start[:, None] + k[None, :] * length[:, None]
    size = size[:, None]
    inside = tf.cast((coord >= -1.0) & (coord <= size), tf.float32)
    coord = tf.maximum(coord, 0.0)
    low = tf.floor(coord)
    at_end = low >= size - 1.0
    low = tf.where(at_end, size - 1.0, low)
    high = tf.where(at_end, low, low + 1.0)
    frac = tf.where(at_end, 0.0, coord - low)
    return tf.cast(low, tf.int32), tf.cast(high, tf.int32), (1.0 - frac) * inside, frac * inside


def gather_roi_align(table, base, heights, widths, boxes, output_size: int = 7, sampling_ratio: int = 2):
    """RoIAlign by gathering from a flat `[T, C]` table of feature pixels: TFLite builtins only.

    Box `n` reads the `[heights[n], widths[n]]` map whose pixel `(y, x)` is row
    `base[n] + y * widths[n] + x` of `table`: several images and FPN levels
    share one table, so every box reads its own image and level in one gather,
    without `CropAndResize` or `DynamicPartition`/`DynamicStitch`, which LiteRT lacks.

    Args:
        table: `[T, C]` float32; base, heights, widths: `[N]` int32.
        boxes: `[N, 4]` xyxy in feature pixels, already shifted by the aligned offset.
    Returns:
        `[N, output_size, output_size, C]` float32.
    """
    n = int(output_size) * int(sampling_ratio)
    h = tf.cast(heights, tf.float32)
    w = tf.cast(widths, tf.float32)
    y_low, y_high, wy_low, wy_high = _axis_samples(boxes[:, 1], boxes[:, 3] - boxes[:, 1], n, h)
    x_low, x_high, wx_low, wx_high = _axis_samples(boxes[:, 0], boxes[:, 2] - boxes[:, 0], n, w)
    base = base[:, None, None]
    row = widths[:, None, None]
    value = 0.0
    for y, wy in ((y_low, wy_low), (y_high, wy_high)):
        for x, wx in ((x_low, wx_low), (x_high, wx_high)):
            index = base + y[:, :, None] * row + x[:, None, :]  # [N, n, n]
            weight = wy[:, :, None] * wx[:, None, :]
            value = value + weight[..., None] * tf.gather(table, index)
    channels = table.shape[-1] if table.shape[-1] is not None else tf.shape(table)[-1]
    # Every output bin averages its sampling_ratio x sampling_ratio samples.
    value = tf.reshape(value, [-1, output_size, sampling_ratio, output_size, sampling_ratio, channels])
    return tf.reduce_mean(value, axis=[2, 4])


def multilevel_roi_align(
    features: Mapping[int, tf.Tensor],
    boxes,
    output_size: int = 7,
    sampling_ratio: int = 2,
    min_level: int = 2,
    max_level: int = 5,
    aligned: bool = True,
    method: str = "crop_and_resize",
):
    """RoIAlign of every box on the FPN level its size selects (`fpn_levels`).

    Args:
        features: `{level: [B, H / 2**level, W / 2**level, C]}` for `min_level..max_level`.
        boxes: `[B, R, 4]` xyxy boxes in image pixels.
        method: `"crop_and_resize"` (TensorFlow's fused kernel; boxes partitioned
            by level) or `"gather"` (`gather_roi_align`: builtin ops only, what the
            TFLite export traces). Both compute the same values.
    Returns:
        `[B, R, output_size, output_size, C]` float32.
    """
    if method not in ROI_ALIGN_METHODS:
        raise ValueError(f"multilevel_roi_align method must be one of {ROI_ALIGN_METHODS}, got {method!r}.")
    for level in range(min_level, max_level + 1):
        if level not in features:
            raise ValueError(f"multilevel_roi_align needs feature level {level}; got levels {sorted(features)}.")
    boxes = tf.cast(boxes, tf.float32)
    shape = tf.shape(boxes)
    batch, rois = shape[0], shape[1]
    flat = tf.reshape(boxes, [-1, 4])
    image_index = tf.reshape(tf.repeat(tf.range(batch), rois), [-1])
    levels = fpn_levels(flat, min_level, max_level) - min_level
    num_levels = max_level - min_level + 1
    channels = features[min_level].shape[-1]
    out_shape = [batch, rois, output_size, output_size, channels if channels is not None else -1]
    if method == "gather":
        maps = [tf.cast(features[level], tf.float32) for level in range(min_level, max_level + 1)]
        sizes = [tf.shape(m) for m in maps]
        table = tf.concat([tf.reshape(m, [-1, m.shape[-1] if m.shape[-1] is not None else tf.shape(m)[-1]])
                           for m in maps], axis=0)
        pixels = tf.stack([s[1] * s[2] for s in sizes])
        starts = tf.concat([[0], tf.cumsum(tf.stack([s[0] for s in sizes]) * pixels)[:-1]], axis=0)
        heights = tf.gather(tf.stack([s[1] for s in sizes]), levels)
        widths = tf.gather(tf.stack([s[2] for s in sizes]), levels)
        base = tf.gather(starts, levels) + image_index * tf.gather(pixels, levels)
        scale = tf.gather(tf.constant([2.0**-l for l in range(min_level, max_level + 1)]), levels)
        scaled = flat * scale[:, None] - (0.5 if aligned else 0.0)
        if not aligned:  # the original Mask R-CNN RoIAlign: RoIs at least 1 x 1 feature pixel
            size = tf.maximum(scaled[:, 2:] - scaled[:, :2], 1.0)
            scaled = tf.concat([scaled[:, :2], scaled[:, :2] + size], axis=1)
        pooled = gather_roi_align(table, base, heights, widths, scaled, output_size, sampling_ratio)
        return tf.reshape(pooled, out_shape)
    # Each box is pooled once, on its own level: partition the boxes by level,
    # pool every part and stitch the results back into the original order.
    part_boxes = tf.dynamic_partition(flat, levels, num_levels)
    part_images = tf.dynamic_partition(image_index, levels, num_levels)
    part_positions = tf.dynamic_partition(tf.range(tf.shape(flat)[0]), levels, num_levels)
    pooled = []
    for i, level in enumerate(range(min_level, max_level + 1)):
        pooled.append(
            roi_align(features[level], part_boxes[i], part_images[i], 1.0 / 2**level, output_size,
                      sampling_ratio, aligned)
        )
    merged = tf.dynamic_stitch(part_positions, pooled)
    return tf.reshape(merged, out_shape)
