"""Bounding-box formats: the `bounding_box_format` names of Keras, keras-cv and keras-hub.

The conversion itself is Keras' `keras.utils.bounding_boxes.convert_format`;
this module adds what a detector and a data pipeline need around it: a name
check at construction (a `ValueError` listing the valid names) and padding
rows that stay padding (-1) instead of being converted into garbage.

Formats (Keras' docstring of `convert_format`; `rel_` = divided by the image
width for x and its height for y, so 0..1 inside the image):

| name | coordinates |
| --- | --- |
| `"xyxy"` | left, top, right, bottom (pixels; the package's internal format) |
| `"yxyx"` | top, left, bottom, right |
| `"xywh"` | left, top, width, height |
| `"center_xywh"` | center x, center y, width, height |
| `"center_yxhw"` | center y, center x, height, width |
| `"rel_xyxy"`, `"rel_yxyx"`, `"rel_xywh"`, `"rel_center_xywh"` | the relative versions |
"""

from __future__ import annotations

import keras
import tensorflow as tf

# The formats of keras.utils.bounding_boxes.convert_format (Keras 3.15); the
# test suite checks that Keras still converts every one of them.
BOX_FORMATS = (
    "xyxy",
    "yxyx",
    "xywh",
    "center_xywh",
    "center_yxhw",
    "rel_xyxy",
    "rel_yxyx",
    "rel_xywh",
    "rel_center_xywh",
)
PADDING = -1.0


def check_box_format(bounding_box_format, what: str = "bounding_box_format") -> str:
    """The format name in lower case (Keras' names are case-insensitive).

    Raises:
        ValueError: for a name Keras' converter does not know, listing the valid ones.
    """
    name = bounding_box_format.lower() if isinstance(bounding_box_format, str) else None
    if name not in BOX_FORMATS:
        raise ValueError(
            f"Unknown {what} {bounding_box_format!r}; choose one of {', '.join(BOX_FORMATS)} "
            "(the formats of keras.utils.bounding_boxes.convert_format; 'rel_' formats are "
            "relative to the image height and width)."
        )
    return name


def is_relative(bounding_box_format: str) -> bool:
    """True for the `rel_*` formats, which need the image height and width to convert."""
    return check_box_format(bounding_box_format).startswith("rel_")


def convert_boxes(boxes, source: str, target: str, height=None, width=None, valid=None):
    """Boxes `[..., 4]` converted from `source` to `target` format, padding rows kept.

    Args:
        boxes: `[..., 4]` array or tensor.
        source, target: names of `BOX_FORMATS` (case-insensitive).
        height, width: image size in pixels (scalars or tensors), needed when
            either format is `rel_*`: relative coordinates are fractions of it.
        valid: `[...]` bool, False for padding rows. None: rows whose four
            values are all -1 are padding (the padding of `make_batches`,
            keras-cv and keras-hub).

    Returns:
        float32 tensor of the shape of `boxes`; padding rows are returned
        unchanged (still -1), not converted.

    Raises:
        ValueError: an unknown format, or a `rel_` format without height and width.
    """
    source = check_box_format(source, "source format")
    target = check_box_format(target, "target format")
    boxes = tf.cast(boxes, tf.float32)
    if source == target:
        return boxes
    if (source.startswith("rel_") or target.startswith("rel_")) and (height is None or width is None):
        raise ValueError(
            f"Converting boxes from {source!r} to {target!r} needs the image height and width "
            "(relative formats are fractions of them); pass height= and width=."
        )
    converted = keras.utils.bounding_boxes.convert_format(
        boxes, source=source, target=target, height=height, width=width, dtype="float32"
    )
    if valid is None:
        valid = ~tf.reduce_all(tf.equal(boxes, PADDING), axis=-1)
    return tf.where(tf.cast(valid, tf.bool)[..., None], converted, boxes)
