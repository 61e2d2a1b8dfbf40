"""Batching for training (`make_batches`) and evaluation (`make_eval_batches`).

Both resize images aspect-preserving to a fixed square size and zero-pad them
bottom/right (boxes scaled accordingly), pad boxes per batch with -1 (the
keras-cv "dense" convention of conventions.md), decode/augment with a
parallel map and prefetch with AUTOTUNE.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import tensorflow as tf

from ipg_keras.data.augment import AugmentConfig, augment_element, resize_and_pad
from ipg_keras.data.boxes import box_area, convert_element_boxes, filter_boxes
from ipg_keras.data.records import DEFAULT_MIN_VISIBLE, NORMALIZED_MIN_IMAGE_SIZE
from ipg_keras.data.report import LoadReport
from ipg_keras.ops.box_formats import check_box_format, convert_boxes

logger = logging.getLogger("ipg_keras.data")

DEFAULT_SHUFFLE_BUFFER = 1024

# Map functions use explicit tf.cond, so AutoGraph is off: converting them (and the
# keras code they call) would cost seconds of tracing per pipeline.
_no_autograph = tf.autograph.experimental.do_not_convert


def _cache(ds: tf.data.Dataset, cache: bool | str) -> tf.data.Dataset:
    if cache is True:
        return ds.cache()
    if isinstance(cache, str) and cache:
        return ds.cache(cache)
    if cache not in (False, None, ""):
        raise ValueError(f"cache must be False, True (memory) or a file path prefix, got {cache!r}")
    return ds


def _drop_flagged(element: dict, drop_crowd: bool, drop_difficult: bool) -> dict:
    """Training view of an element: images + boxes/classes, flagged boxes removed."""
    bb = element["bounding_boxes"]
    keep = tf.ones_like(bb["classes"], tf.bool)
    if drop_crowd and "iscrowd" in bb:
        keep &= ~tf.cast(bb["iscrowd"], tf.bool)
    if drop_difficult and "difficult" in bb:
        keep &= ~tf.cast(bb["difficult"], tf.bool)
    return {"images": _image(element),
            "bounding_boxes": filter_boxes({"boxes": bb["boxes"], "classes": bb["classes"]}, keep)}


def _check_boxes(element: dict, min_visible: float, clipped: tf.Variable, dropped: tf.Variable,
                 warned: tf.Variable) -> dict:
    """The data-boundary box check of `make_batches` (the rule of `records.sanitize_boxes`, in graph).

    Boxes that all lie in [0, 1] on an image of 32 px or more are normalized, not
    pixels: refused (InvalidArgumentError naming the image id, count and first
    box). Boxes partly outside the image are clipped and kept when at least
    `min_visible` of their area is inside, else dropped; both are counted
    (`clipped`, `dropped`) and the first is printed once.
    """
    bb = dict(element["bounding_boxes"])
    shape = tf.shape(element["images"])
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    boxes = tf.reshape(tf.cast(bb["boxes"], tf.float32), [-1, 4])
    n = tf.shape(boxes)[0]
    image_id = tf.cast(element.get("image_id", tf.constant(-1, tf.int64)), tf.int64)
    normalized = ((n > 0) & tf.reduce_all((boxes >= 0.0) & (boxes <= 1.0))
                  & (tf.minimum(h, w) >= float(NORMALIZED_MIN_IMAGE_SIZE)))
    check = tf.debugging.Assert(
        ~normalized,
        ["make_batches: all", n, "boxes of image_id", image_id, "lie within [0, 1] on a", shape[1], "x", shape[0],
         "image: they look normalized (fractions of the image size), not pixels. Convert them to xyxy pixels "
         "(x * width, y * height) before make_batches. First box:", boxes[:1]],
        summarize=8,
    )
    with tf.control_dependencies([check]):
        boxes = tf.identity(boxes)
    inside = tf.stack([tf.clip_by_value(boxes[:, 0], 0.0, w), tf.clip_by_value(boxes[:, 1], 0.0, h),
                       tf.clip_by_value(boxes[:, 2], 0.0, w), tf.clip_by_value(boxes[:, 3], 0.0, h)], axis=-1)
    visible, area = box_area(inside), box_area(boxes)
    outside = (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > w) | (boxes[:, 3] > h)
    kept = (visible > 0.0) & (visible >= min_visible * area)
    keep = ~outside | kept
    n_clipped = tf.reduce_sum(tf.cast(outside & kept, tf.int64))
    n_dropped = tf.reduce_sum(tf.cast(outside & ~kept, tf.int64))

    def warn():
        i = tf.argmax(tf.cast(outside, tf.int32))
        message = tf.print(
            "make_batches: image_id", image_id, ": box", boxes[i], "extends outside the", shape[1], "x", shape[0],
            "image; boxes with at least min_visible =", min_visible, "of their area inside are clipped, others "
            "dropped (counted in the dataset's .report; only this first case is printed)",
            output_stream=sys.stderr,
        )
        with tf.control_dependencies([message]):
            return tf.identity(warned.assign(True))

    first = tf.cond(tf.reduce_any(outside) & ~warned, warn, lambda: tf.identity(warned))
    with tf.control_dependencies([clipped.assign_add(n_clipped), dropped.assign_add(n_dropped), first]):
        bb["boxes"] = tf.identity(tf.where(outside[:, None], inside, boxes))
    out = dict(element)
    out["bounding_boxes"] = filter_boxes(bb, keep)
    return out


def _image(element: dict) -> tf.Tensor:
    # Upstream maps (py_function, user code) may lose the static shape; restore it.
    return tf.ensure_shape(tf.cast(element["images"], tf.float32), [None, None, 3])


def make_batches(
    dataset: tf.data.Dataset,
    batch_size: int,
    image_size: int,
    *,
    augment: bool | AugmentConfig = False,
    shuffle: bool | int = False,
    cache: bool | str = False,
    seed: int = 0,
    repeat: bool | int = False,
    max_boxes: int | None = None,
    drop_remainder: bool = False,
    drop_crowd: bool = True,
    drop_difficult: bool = False,
    min_visible: float = DEFAULT_MIN_VISIBLE,
    skip: int = 0,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    bounding_box_format: str = "xyxy",
) -> tf.data.Dataset:
    """Training batches in the tuple form of conventions.md.

    Args:
        dataset: element dataset (any loader, `tile_dataset`, synthetic).
        batch_size: images per batch.
        image_size: side S of the square training images.
        augment: False: resize + pad only. True or an `AugmentConfig`: random
            crop (if configured), scale jitter to S, flips, colour jitter.
        shuffle: False, True (buffer 1024) or a buffer size; seeded, reshuffled each epoch.
        cache: False, True (in memory) or a file path prefix. Caches the decoded
            elements before shuffling and augmentation, so augmentation differs
            per epoch. (Cache a tiled dataset to avoid re-decoding large images.)
        seed: seeds shuffling and augmentation; the same seed gives the same batches.
        repeat: False, True (forever) or a number of repetitions.
        max_boxes: pad (and truncate) boxes to exactly this many per image, for
            static shapes; None pads to the largest count in each batch. Boxes
            cut off are counted in the returned dataset's `.truncated_boxes`
            (a tf.Variable, read it with int(...)).
        drop_remainder: drop the last incomplete batch (static batch dimension).
        drop_crowd / drop_difficult: leave boxes flagged iscrowd / difficult out
            of the targets (COCO practice: crowd regions are not positives).
        min_visible: boxes of the input elements that extend outside their image
            are clipped and kept when at least this share of their area is inside,
            else dropped (the loaders' rule, `records.sanitize_boxes`); both are
            counted in the returned dataset's `.report` (reasons "box_clipped",
            "box_outside") and the first case is printed.
        bounding_box_format: format of the boxes, in and out, as in keras-cv's
            layers: the elements of `dataset` carry boxes in it (`rel_` relative
            to each element's image; the loaders' `bounding_box_format=` makes
            them so) and the batches give boxes in it (`rel_` relative to the
            S x S batch image, which is what a detector built with the same
            `bounding_box_format` expects). A name of
            `ipg_keras.ops.box_formats.BOX_FORMATS`; default "xyxy" pixels.
            Resizing, augmentation and padding work on xyxy pixels in between;
            padding rows stay -1.
        skip: leave out the first `skip` batches of the stream (`skip *
            batch_size` elements, dropped after shuffling and after drawing
            their augmentation seeds, before resizing and augmenting them):
            batch `i` of the result is batch `skip + i` of the same call with
            `skip=0`. A resumed training run continues its data stream so
            (`ipg-train` does). The skipped elements are still read and
            shuffled (decoded once per pass unless cached).

    Returns:
        Dataset of (images [B, S, S, 3] float32 0..255,
        {"boxes": [B, M, 4] float32 in bounding_box_format, "classes": [B, M] int32}), -1 padded.
        Attributes: `.report` (`LoadReport` with live counts), `.truncated_boxes`.

    Raises:
        ValueError: non-positive sizes, min_visible outside [0, 1] or an unknown bounding_box_format.
        tf.errors.InvalidArgumentError while iterating, naming the image id: the
        boxes of an image of 32 px or more all lie within [0, 1] (normalized
        coordinates, not pixels: training on them would be wrong).
    """
    if batch_size <= 0 or image_size <= 0:
        raise ValueError(f"batch_size and image_size must be positive, got {batch_size}, {image_size}")
    box_format = check_box_format(bounding_box_format)
    if int(skip) < 0:
        raise ValueError(f"skip must be >= 0 batches, got {skip}")
    config = AugmentConfig() if augment is True else (augment or None)
    if config is not None and not isinstance(config, AugmentConfig):
        raise TypeError(f"augment must be a bool or an AugmentConfig, got {type(augment).__name__}")

    if not 0.0 <= min_visible <= 1.0:
        raise ValueError(f"min_visible must be in [0, 1], got {min_visible}")
    with tf.init_scope():
        clipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="clipped_boxes")
        dropped = tf.Variable(0, dtype=tf.int64, trainable=False, name="outside_boxes")
        warned = tf.Variable(False, trainable=False, name="outside_warned")
    report = LoadReport("make_batches")
    report.add_live_counter("box_clipped", clipped)
    report.add_live_counter("box_outside", dropped)

    def check_and_drop(e):
        e = convert_element_boxes(e, box_format, "xyxy")  # checks and all later steps work in xyxy pixels
        return _drop_flagged(_check_boxes(e, min_visible, clipped, dropped, warned), drop_crowd, drop_difficult)

    ds = dataset.map(_no_autograph(check_and_drop), num_parallel_calls=num_parallel_calls, deterministic=True)
    ds = _cache(ds, cache)
    if shuffle:
        buffer = DEFAULT_SHUFFLE_BUFFER if shuffle is True else int(shuffle)
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat(None if repeat is True else int(repeat))

    truncated = None
    if max_boxes is not None:
        with tf.init_scope():
            truncated = tf.Variable(0, dtype=tf.int64, trainable=False, name="truncated_boxes")
        logger.info("make_batches: at most %d boxes per image; extra boxes are cut and counted "
                    "in .truncated_boxes", max_boxes)

    if config is not None:
        # One stateless seed per element: reproducible under parallel map, new each epoch.
        randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, randoms)
        ds = _skip(ds, int(skip) * batch_size)

        def prepare(element, r):
            el = augment_element(element, tf.stack([r, tf.constant(seed, tf.int64)]), image_size, config)
            return _to_tuple(el, max_boxes, truncated, box_format, image_size)
    else:
        ds = _skip(ds, int(skip) * batch_size)

        def prepare(element):
            el, _ = resize_and_pad(element, image_size)
            return _to_tuple(el, max_boxes, truncated, box_format, image_size)

    ds = ds.map(_no_autograph(prepare), num_parallel_calls=num_parallel_calls, deterministic=True)
    m = max_boxes if max_boxes is not None else None
    ds = ds.padded_batch(
        batch_size,
        padded_shapes=([image_size, image_size, 3], {"boxes": [m, 4], "classes": [m]}),
        padding_values=(0.0, {"boxes": -1.0, "classes": -1}),
        drop_remainder=drop_remainder,
    )
    ds = ds.prefetch(tf.data.AUTOTUNE)
    ds.truncated_boxes = truncated
    ds.report = report
    return ds


def _skip(ds: tf.data.Dataset, count: int) -> tf.data.Dataset:
    if count:
        logger.info("make_batches: skipping the first %d elements of the stream", count)
        return ds.skip(count)
    return ds


def _to_tuple(element: dict, max_boxes: int | None, truncated: tf.Variable | None = None,
              bounding_box_format: str = "xyxy", image_size: int | None = None):
    """(image, targets) of one S x S element; boxes from xyxy pixels to `bounding_box_format` (before padding)."""
    boxes = tf.cast(element["bounding_boxes"]["boxes"], tf.float32)
    if bounding_box_format != "xyxy":
        boxes = convert_boxes(boxes, "xyxy", bounding_box_format, height=image_size, width=image_size,
                              valid=tf.ones_like(boxes[:, 0], tf.bool))
    classes = tf.cast(element["bounding_boxes"]["classes"], tf.int32)
    if max_boxes is not None:
        extra = tf.maximum(tf.shape(boxes, out_type=tf.int64)[0] - max_boxes, 0)
        with tf.control_dependencies([truncated.assign_add(extra)]):
            boxes, classes = tf.identity(boxes[:max_boxes]), tf.identity(classes[:max_boxes])
    return element["images"], {"boxes": boxes, "classes": classes}


def make_eval_batches(
    dataset: tf.data.Dataset,
    batch_size: int,
    image_size: int,
    *,
    cache: bool | str = False,
    num_parallel_calls: int = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """Evaluation batches that keep what is needed to map predictions back to the image.

    Images are resized + padded as in `make_batches` (no augmentation, order kept).
    Elements must carry xyxy pixel boxes (the loaders' default `bounding_box_format`).

    Returns:
        Dataset of dicts:
        {"images": [B, S, S, 3] float32,
         "image_id": [B] int64,
         "scale": [B] float32 (network-input pixels per original pixel),
         "original_size": [B, 2] int32 (height, width),
         "bounding_boxes": {"boxes": [B, M, 4] ground truth in ORIGINAL pixels,
                            "classes": [B, M] int32, plus flags such as
                            "difficult"/"iscrowd" [B, M] bool}} (-1 / False padded).
        Map predicted boxes back with `to_original_frame(boxes, scale, original_size)`.
    """
    def prepare(element):
        element = dict(element)
        element["images"] = _image(element)
        resized, s = resize_and_pad(element, image_size)
        shape = tf.shape(element["images"])[:2]
        return {
            "images": resized["images"],
            "image_id": tf.cast(element["image_id"], tf.int64),
            "scale": s,
            "original_size": tf.cast(shape, tf.int32),
            "bounding_boxes": dict(element["bounding_boxes"]),
        }

    ds = _cache(dataset, cache)
    ds = ds.map(_no_autograph(prepare), num_parallel_calls=num_parallel_calls, deterministic=True)

    def pad_value(spec):
        if spec.dtype == tf.bool:
            return tf.constant(False)
        if spec.dtype.is_floating:
            return tf.constant(-1.0, spec.dtype)
        return tf.constant(-1, spec.dtype)

    padding_values = tf.nest.map_structure(pad_value, ds.element_spec)
    padding_values["images"] = tf.constant(0.0)
    return ds.padded_batch(batch_size, padding_values=padding_values).prefetch(tf.data.AUTOTUNE)


def to_original_frame(boxes, scale, original_size=None):
    """Map xyxy boxes [B, K, 4] (or [K, 4] with scalar scale) from the network input
    frame of `make_eval_batches` back to original image pixels, clipped to
    original_size [B, 2] (height, width) when given. Works on numpy arrays or tensors."""
    boxes = np.asarray(boxes, np.float32)
    scale = np.asarray(scale, np.float32)
    out = boxes / scale.reshape(scale.shape + (1,) * (boxes.ndim - scale.ndim))
    if original_size is not None:
        size = np.asarray(original_size, np.float32)
        h = size[..., 0].reshape(size.shape[:-1] + (1,) * (boxes.ndim - size.ndim))
        w = size[..., 1].reshape(h.shape)
        out[..., 0] = np.clip(out[..., 0], 0, w)
        out[..., 2] = np.clip(out[..., 2], 0, w)
        out[..., 1] = np.clip(out[..., 1], 0, h)
        out[..., 3] = np.clip(out[..., 3], 0, h)
    return out
