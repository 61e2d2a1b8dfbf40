"""Any TFDS detection dataset (`objects/bbox` + `objects/label`): `from_tfds`.

TFDS stores boxes normalised as (ymin, xmin, ymax, xmax); they are converted to
absolute xyxy pixels here. TFDS data was validated when it was built, so there
are no files to check; degenerate boxes are still dropped (in the graph) and
counted in the dataset's `.report` as the pipeline runs.
"""

from __future__ import annotations

import tensorflow as tf

from ipg_keras.data.boxes import to_box_format
from ipg_keras.data.image_bytes import decode_image_bytes
from ipg_keras.data.records import attach_info
from ipg_keras.data.report import LoadReport
from ipg_keras.ops.box_formats import check_box_format

# TFDS object flag -> our bounding_boxes key.
_FLAG_MAP = {"is_crowd": "iscrowd", "is_difficult": "difficult"}


def from_tfds(
    name: str,
    split: str = "train",
    *,
    data_dir: str | None = None,
    download: bool = True,
    shuffle_files: bool = False,
    read_config=None,
    builder_kwargs: dict | None = None,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    bounding_box_format: str = "xyxy",
) -> tf.data.Dataset:
    """A TFDS detection dataset in the element format of conventions.md.

    Args:
        name: TFDS name, e.g. "coco/2017", "voc/2007", "voc/2012".
        split: TFDS split string ("train", "validation[:10%]", ...).
        data_dir, download, shuffle_files, read_config, builder_kwargs: passed to
            `tfds.load`.
        bounding_box_format: format of the emitted boxes (keras-cv / keras-hub
            names, `ipg_keras.ops.box_formats.BOX_FORMATS`; `rel_` formats are
            relative to each image's size, so "rel_yxyx" is TFDS' own layout).
            Default "xyxy" pixels. Raises ValueError for an unknown name, before
            anything is loaded.

    Returns:
        Dataset of {"images" [H,W,3] float32, "bounding_boxes": {"boxes" [N,4] in
        bounding_box_format, "classes" [N] int32, plus "iscrowd"/"difficult" [N] bool when the
        dataset has them}, "image_id" int64}. image_id is the dataset's
        "image/id" when it has one (COCO), else the example's position in the
        split (stable with shuffle_files=False). Attributes: `.class_names` (from
        the dataset info), `.info` (tfds.core.DatasetInfo), `.report`.
    """
    check_box_format(bounding_box_format)
    import tensorflow_datasets as tfds  # heavy import, only when used

    ds, info = tfds.load(
        name,
        split=split,
        data_dir=data_dir,
        download=download,
        shuffle_files=shuffle_files,
        read_config=read_config,
        builder_kwargs=builder_kwargs,
        with_info=True,
        # Encoded bytes, decoded below by the package's reader rules (TFDS's own
        # decode_image uses TensorFlow's fast, inexact JPEG IDCT).
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    features = info.features
    if "objects" not in features or "bbox" not in features["objects"] or "label" not in features["objects"]:
        raise ValueError(
            f"TFDS dataset {name!r} has no 'objects/bbox' and 'objects/label' features "
            f"(features: {list(features.keys())}); it is not a detection dataset from_tfds can read"
        )
    class_names = list(features["objects"]["label"].names)
    flags = {src: dst for src, dst in _FLAG_MAP.items() if src in features["objects"]}
    has_id = "image/id" in features

    report = LoadReport(f"tfds:{name}[{split}]")
    dropped = tf.Variable(0, dtype=tf.int64, trainable=False, name="tfds_degenerate_boxes")
    report.add_live_counter("degenerate_box", dropped)

    def convert(index, ex):
        image = ex["image"]
        if image.dtype == tf.string:  # encoded JPEG/PNG: the pixels read_image gives for the same file
            image = decode_image_bytes(image, max_pixels=2**40)
        image = tf.cast(image, tf.float32)
        if image.shape.rank == 3 and image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        h = tf.cast(tf.shape(image)[0], tf.float32)
        w = tf.cast(tf.shape(image)[1], tf.float32)
        bbox = tf.reshape(tf.cast(ex["objects"]["bbox"], tf.float32), [-1, 4])
        labels = tf.cast(ex["objects"]["label"], tf.int32)
        n = tf.shape(bbox)[0]
        # Real TFDS data always has one label per box; fail loudly if not.
        tf.debugging.assert_equal(tf.shape(labels)[0], n, message=f"{name}: objects/label and objects/bbox lengths differ")
        ymin, xmin, ymax, xmax = tf.unstack(tf.clip_by_value(bbox, 0.0, 1.0), axis=-1)
        boxes = tf.stack([xmin * w, ymin * h, xmax * w, ymax * h], axis=-1)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        # Counting side effect: keeps the drop visible in `.report` (never silent).
        with tf.control_dependencies([dropped.assign_add(tf.reduce_sum(tf.cast(~keep, tf.int64)))]):
            keep = tf.identity(keep)
        bb = {"boxes": tf.boolean_mask(boxes, keep), "classes": tf.boolean_mask(labels, keep)}
        for src, dst in flags.items():
            flag = tf.reshape(tf.cast(ex["objects"][src], tf.bool), [-1])
            tf.debugging.assert_equal(tf.shape(flag)[0], n, message=f"{name}: objects/{src} length differs from bbox")
            bb[dst] = tf.boolean_mask(flag, keep)
        image_id = tf.cast(ex["image/id"], tf.int64) if has_id else index
        return {"images": image, "bounding_boxes": bb, "image_id": image_id}

    out = ds.enumerate().map(tf.autograph.experimental.do_not_convert(convert), num_parallel_calls=num_parallel_calls, deterministic=True)
    out = to_box_format(out, bounding_box_format, num_parallel_calls)
    return attach_info(out, class_names=class_names, info=info, report=report)
