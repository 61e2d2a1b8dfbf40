"""SavedModel export for TF Serving: uint8 image batches and encoded JPEG/PNG bytes.

Signatures (both return boxes in the ORIGINAL image's pixels):

* ``serving_default``: input ``images`` uint8 ``[B, H, W, 3]`` (any H, W; one size
  per batch). Every image is resized keeping its aspect ratio to fit the export
  size ``image_size`` and zero-padded bottom/right, as in training.
* ``serving_bytes``: input ``image_bytes`` string ``[B]`` of encoded JPEG or PNG
  files (TF Serving REST: ``{"instances": [{"b64": "..."}]}``; gRPC: a DT_STRING
  tensor). Images may differ in size; each is resized to fit ``image_size``. The
  header is checked before decoding: corrupt bytes, other formats, images above
  ``max_pixels`` or requests of more than ``max_batch_size`` images fail that
  request with ``InvalidArgument`` before any pixel buffer is allocated, so memory
  stays below ``max_batch_size`` network inputs plus a few decoded images.

Outputs of both (names are the signature's output keys):

* ``boxes`` float32 ``[B, D, 4]``: xyxy ``(x1, y1, x2, y2)`` in original image pixels;
* ``scores`` float32 ``[B, D]``; ``classes`` int32 ``[B, D]`` (0-based, -1 = padding);
* ``num_detections`` int32 ``[B]``: entries past it are padding (score 0, class -1).

``D`` is the model's ``max_detections``. ``assets.extra/ipg_export.json`` records
the export size, pixel limit and the model's class count.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import tensorflow as tf

from ipg_keras.export.common import (
    METADATA_FILE,
    OUTPUT_NAMES,
    detect_callable,
    ensure_built,
    model_metadata,
    resize_and_pad_images,
    resolve_image_size,
    standardize_detections,
    to_original_pixels,
    tracked_variables,
    write_metadata,
)

#: Default pixel limit of `serving_bytes` (a 6000 x 4000 photo has 24 M pixels).
DEFAULT_MAX_PIXELS = 25_000_000
#: Default largest number of images in one `serving_bytes` request.
DEFAULT_MAX_BATCH_SIZE = 64

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"


def _png_size(data):
    """(height, width) int64 from a PNG's IHDR chunk (bytes 16..23), checked to be present."""
    length = tf.strings.length(data)
    checks = [
        tf.debugging.assert_greater_equal(
            length, 33, message="serving_bytes: PNG data is truncated (no complete IHDR chunk)"
        ),
    ]
    with tf.control_dependencies(checks):
        chunk_type = tf.strings.substr(data, 12, 4)
    with tf.control_dependencies(
        [tf.debugging.Assert(tf.equal(chunk_type, b"IHDR"), ["serving_bytes: PNG has no IHDR chunk"])]
    ):
        raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, 16, 8), tf.uint8), tf.int64)
    width = raw[0] * 16777216 + raw[1] * 65536 + raw[2] * 256 + raw[3]
    height = raw[4] * 16777216 + raw[5] * 65536 + raw[6] * 256 + raw[7]
    return height, width


def _jpeg_size(data):
    shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)  # reads the header only
    return shape[0], shape[1]


def decode_image_checked(data, max_pixels: int):
    """Decodes one JPEG/PNG string to uint8 `[H, W, 3]` after validating its header.

    Raises `InvalidArgumentError` (at run time) for another format, a corrupt or
    truncated header, zero-sized images or more than `max_pixels` pixels, before any
    pixel buffer is allocated.
    """
    is_jpeg = tf.equal(tf.strings.substr(data, 0, 3), _JPEG_SIGNATURE)
    is_png = tf.equal(tf.strings.substr(data, 0, 8), _PNG_SIGNATURE)
    known = tf.debugging.Assert(
        tf.logical_or(is_jpeg, is_png),
        ["serving_bytes: input is not a JPEG or PNG file (bad magic bytes); send encoded JPEG or PNG images"],
    )
    with tf.control_dependencies([known]):
        height, width = tf.cond(is_jpeg, lambda: _jpeg_size(data), lambda: _png_size(data))
    pixels = height * width
    checks = [
        tf.debugging.Assert(
            tf.logical_and(height > 0, width > 0), ["serving_bytes: image has zero height or width"]
        ),
        tf.debugging.Assert(
            pixels <= max_pixels,
            ["serving_bytes: image of", height, "x", width, "pixels is above the limit of", max_pixels,
             "pixels; downscale it before sending (limit set by export_saved_model(max_pixels=...))"],
        ),
    ]
    with tf.control_dependencies(checks):
        image = tf.cond(
            is_jpeg,
            lambda: tf.io.decode_jpeg(data, channels=3),
            lambda: tf.io.decode_png(data, channels=3, dtype=tf.uint8),
        )
    return tf.ensure_shape(image, [None, None, 3])


class DetectorServingModule(tf.Module):
    """tf.Module with the two serving functions around a detector's `detect`.

    Only the model's variables are tracked (not the Keras object), so the SavedModel
    holds the inference graphs and weights and loads without the package.
    """

    def __init__(self, model: Any, image_size: tuple[int, int], max_pixels: int,
                 max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, parallel_decodes: int = 4):
        super().__init__(name="ipg_detector")
        self._detect = detect_callable(model)
        ensure_built(model, self._detect, image_size)
        self.model_variables = tracked_variables(model)
        self.image_size = image_size
        self.max_pixels = int(max_pixels)
        self.max_batch_size = int(max_batch_size)
        self.parallel_decodes = int(parallel_decodes)
        h, w = image_size

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        def serve_images(images):
            shape = tf.shape(images)
            nonempty = tf.debugging.Assert(
                tf.logical_and(shape[1] > 0, shape[2] > 0), ["images must have non-zero height and width"]
            )
            with tf.control_dependencies([nonempty]):
                batch, scale = resize_and_pad_images(images, h, w)
            out = standardize_detections(self._detect(batch))
            out["boxes"] = to_original_pixels(out["boxes"], scale, shape[1], shape[2])
            return out

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve_bytes(image_bytes):
            def prepare(data):
                image = decode_image_checked(data, self.max_pixels)
                padded, scale = resize_and_pad_images(image[None], h, w)
                return padded[0], scale, tf.shape(image)[:2]

            count = tf.debugging.Assert(
                tf.size(image_bytes) <= self.max_batch_size,
                ["serving_bytes: request of", tf.size(image_bytes), "images is above the limit of",
                 self.max_batch_size, "per request; split it (limit set by export_saved_model(max_batch_size=...))"],
            )
            with tf.control_dependencies([count]):
                image_bytes = tf.identity(image_bytes)
            batch, scales, sizes = tf.map_fn(
                prepare,
                image_bytes,
                fn_output_signature=(
                    tf.TensorSpec([h, w, 3], tf.float32),
                    tf.TensorSpec([], tf.float32),
                    tf.TensorSpec([2], tf.int32),
                ),
                # Bounds memory: at most this many decoded full-size images at once.
                parallel_iterations=self.parallel_decodes,
            )
            out = standardize_detections(self._detect(batch))
            out["boxes"] = to_original_pixels(out["boxes"], scales, sizes[:, 0], sizes[:, 1])
            return out

        self.serve_images = serve_images
        self.serve_bytes = serve_bytes


def export_saved_model(
    model: Any,
    path: str | Path,
    image_size: int | tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    overwrite: bool = True,
) -> Path:
    """Writes a TF Serving SavedModel of `model` to `path` (a folder); returns the path.

    Args:
        model: a detector with `detect(images)` (float32 `[B, H, W, 3]` 0..255 ->
            `{"boxes", "scores", "classes", "num_detections"}`), e.g. `IPGRetinaNet`.
        path: output folder (TF Serving wants `<model_name>/<version>/`).
        image_size: `(H, W)` or `S` the images are resized to fit (aspect kept, padded);
            default `model.image_size` if set, else 512. Use the training image size.
        max_pixels: largest `height * width` accepted by `serving_bytes`.
        max_batch_size: most images in one `serving_bytes` request.
        overwrite: replace an existing folder at `path`.

    Signatures `serving_default` (uint8 `images` `[B, H, W, 3]`) and `serving_bytes`
    (string `image_bytes` `[B]`), both with outputs `boxes` (xyxy original pixels),
    `scores`, `classes`, `num_detections` (see the module docstring).
    """
    path = Path(path)
    size = resolve_image_size(model, image_size)
    if int(max_pixels) <= 0 or int(max_batch_size) <= 0:
        raise ValueError(f"max_pixels and max_batch_size must be positive, got {max_pixels}, {max_batch_size}.")
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True or choose another folder.")
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    module = DetectorServingModule(model, size, max_pixels, max_batch_size)
    signatures = {
        "serving_default": module.serve_images.get_concrete_function(),
        "serving_bytes": module.serve_bytes.get_concrete_function(),
    }
    tf.saved_model.save(module, str(path), signatures=signatures)
    write_metadata(
        path / "assets.extra" / METADATA_FILE,
        {
            "format": "saved_model",
            "image_size": list(size),
            "max_pixels": int(max_pixels),
            "max_batch_size": int(max_batch_size),
            "signatures": {
                "serving_default": {"inputs": {"images": "uint8 [B, H, W, 3]"}},
                "serving_bytes": {"inputs": {"image_bytes": "string [B] (JPEG or PNG)"}},
            },
            "outputs": {
                "boxes": "float32 [B, D, 4] xyxy, original image pixels",
                "scores": "float32 [B, D]",
                "classes": "int32 [B, D], -1 = padding",
                "num_detections": "int32 [B]",
            },
            "output_names": list(OUTPUT_NAMES),
            **model_metadata(model),
        },
    )
    return path
