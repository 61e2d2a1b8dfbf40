"""SavedModel export for TF Serving: uint8 image batches and encoded image bytes.

Signatures (both return boxes in the ORIGINAL image's pixels):

* ``serving_default``: input ``images`` uint8 ``[B, H, W, 3]`` (any H, W; one size
  per batch). Every image is resized keeping its aspect ratio to fit the export
  size ``image_size`` and zero-padded bottom/right, as in training.
* ``serving_bytes``: input ``image_bytes`` string ``[B]`` of encoded JPEG, PNG, BMP,
  GIF or WebP files (TF Serving REST: ``{"instances": [{"b64": "..."}]}``; gRPC: a
  DT_STRING tensor), decoded to the pixels of `ipg_keras.data.image_io.read_image`
  (EXIF orientation, transparency over black, 16-bit PNG by the same full-scale
  rule; limits in `ipg_keras.data.image_bytes`). Images may differ in size; each
  is resized to fit ``image_size``. The
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

from ipg_keras.data.image_bytes import decode_image_bytes
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

def decode_image_checked(data, max_pixels: int):
    """Decodes one encoded image to uint8 `[H, W, 3]` after validating its header.

    `ipg_keras.data.image_bytes.decode_image_bytes`: JPEG, PNG, BMP, GIF and WebP
    give the pixels of `ipg_keras.data.image_io.read_image` (the reader of every
    other path). Raises `InvalidArgumentError` (at run time) for another format, a
    corrupt or truncated header, zero-sized images or more than `max_pixels`
    pixels, before any pixel buffer is allocated.
    """
    return decode_image_bytes(data, max_pixels)


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
                "serving_bytes": {"inputs": {"image_bytes": "string [B] (JPEG, PNG, BMP, GIF or WebP)"}},
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
