"""tf ops on the `bounding_boxes` dict of an element (boxes [N,4] xyxy, classes [N],
optional per-box flags [N]); every op keeps all per-box keys consistent. The
element's box format is changed by `convert_element_boxes` / `to_box_format`."""

from __future__ import annotations

import tensorflow as tf

from ipg_keras.ops.box_formats import check_box_format, convert_boxes


def filter_boxes(bounding_boxes: dict, keep: tf.Tensor) -> dict:
    """Keep the boxes where `keep` [N] bool is True, in every per-box key."""
    return {k: tf.boolean_mask(v, keep) for k, v in bounding_boxes.items()}


def box_area(boxes: tf.Tensor) -> tf.Tensor:
    """[N] areas of xyxy boxes [N, 4] (0 for degenerate ones)."""
    return tf.maximum(boxes[:, 2] - boxes[:, 0], 0.0) * tf.maximum(boxes[:, 3] - boxes[:, 1], 0.0)


def crop_boxes(bounding_boxes: dict, x0, y0, width, height, min_visible: float = 0.0) -> dict:
    """Boxes seen through the window (x0, y0, x0+width, y0+height), in the window's frame.

    Boxes are clipped to the window; a box is kept when its visible part has a
    positive area and at least `min_visible` (0..1) of its original area.
    """
    boxes = tf.cast(bounding_boxes["boxes"], tf.float32)
    x0, y0 = tf.cast(x0, tf.float32), tf.cast(y0, tf.float32)
    width, height = tf.cast(width, tf.float32), tf.cast(height, tf.float32)
    shifted = boxes - tf.stack([x0, y0, x0, y0])
    clipped = tf.stack(
        [
            tf.clip_by_value(shifted[:, 0], 0.0, width),
            tf.clip_by_value(shifted[:, 1], 0.0, height),
            tf.clip_by_value(shifted[:, 2], 0.0, width),
            tf.clip_by_value(shifted[:, 3], 0.0, height),
        ],
        axis=-1,
    )
    visible = box_area(clipped)
    original = box_area(shifted)
    keep = (visible > 0.0) & (visible >= min_visible * original)
    out = dict(bounding_boxes)
    out["boxes"] = clipped
    return filter_boxes(out, keep)


def scale_boxes(bounding_boxes: dict, sx, sy) -> dict:
    """Multiply x coordinates by `sx` and y coordinates by `sy`."""
    out = dict(bounding_boxes)
    s = tf.cast(tf.stack([sx, sy, sx, sy]), tf.float32)
    out["boxes"] = tf.cast(bounding_boxes["boxes"], tf.float32) * s
    return out


def convert_element_boxes(element: dict, source: str, target: str) -> dict:
    """The element with its boxes converted from `source` to `target` format.

    `rel_` formats are relative to the element's own image (`images` [H, W, 3]);
    the conversion is Keras' `keras.utils.bounding_boxes.convert_format`.
    Other keys are kept; the same element comes back when the formats are equal.
    """
    if check_box_format(source) == check_box_format(target):
        return element
    shape = tf.shape(element["images"])
    bounding_boxes = dict(element["bounding_boxes"])
    bounding_boxes["boxes"] = convert_boxes(bounding_boxes["boxes"], source, target, height=shape[0], width=shape[1],
                                            valid=tf.ones_like(bounding_boxes["boxes"][:, 0], tf.bool))
    return {**element, "bounding_boxes": bounding_boxes}


def to_box_format(dataset: tf.data.Dataset, bounding_box_format: str,
                  num_parallel_calls: int = tf.data.AUTOTUNE) -> tf.data.Dataset:
    """An element dataset with xyxy pixel boxes mapped to `bounding_box_format` (the loaders' last step).

    Returns `dataset` itself for "xyxy"; `rel_` formats are relative to each element's image.
    """
    if check_box_format(bounding_box_format) == "xyxy":
        return dataset
    return dataset.map(
        tf.autograph.experimental.do_not_convert(lambda e: convert_element_boxes(e, "xyxy", bounding_box_format)),
        num_parallel_calls=num_parallel_calls, deterministic=True,
    )
