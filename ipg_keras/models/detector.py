"""What every ipg_keras detector shares: backbone, input checks, padded predict, serialization."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import keras
import tensorflow as tf
from keras import ops

from ipg_keras.backbones import BACKBONES, IPGResNet, build_backbone
from ipg_keras.models.targets import replica_count, unpack_targets
from ipg_keras.ops import POSTPROCESS_SCOPE
from ipg_keras.ops.box_formats import check_box_format, convert_boxes
from ipg_keras.ops.boxes import clip_boxes


def check_images(images, multiple: int):
    """Raises a clear error for images that are not `[B, H, W, 3]` or not divisible by `multiple`."""
    shape = images.shape
    if len(shape) != 4 or (shape[-1] is not None and shape[-1] != 3):
        raise ValueError(
            f"Images must be a batch [B, H, W, 3] of RGB values in 0..255; got shape {tuple(shape)}. "
            "Add a batch axis with images[None] for a single image."
        )
    for size, axis in ((shape[1], "height"), (shape[2], "width")):
        if size is not None and size % multiple:
            raise ValueError(
                f"Image {axis} {size} is not divisible by {multiple} (the stride of the coarsest FPN level). "
                f"Resize or pad images to a multiple of {multiple}: ipg_keras.data.make_batches does it, and "
                "model.predict pads automatically."
            )


class Detector(keras.Model):
    """Base of `IPGRetinaNet` and `IPGFasterRCNN`.

    Subclasses set `self._config` (their constructor arguments), `size_multiple`,
    `call`, `compute_loss` and `decode_predictions(raw, images)`; this class
    gives them the same backbone handling, `bounding_box_format`,
    `predict`/`detect` contract and `.keras` serialization.

    Box formats: inside, every box is xyxy pixels. `bounding_box_format`
    (keras-cv / keras-hub's argument, any name of
    `ipg_keras.ops.box_formats.BOX_FORMATS`) is the format of the `fit` /
    `evaluate` targets (converted to xyxy pixels before they are checked and
    encoded; `rel_` formats are relative to the height and width of the images
    given to `fit`, i.e. the padded network input) and of the `predict` /
    `predict_on_batch` boxes (`rel_` formats relative to the height and width of
    the images given to `predict`, before its internal padding). `detect()`
    and the SavedModel / TFLite exports always give xyxy pixels, whatever the
    format: that is the deployment contract.
    """

    def _init_box_format(self, bounding_box_format: str) -> None:
        """Checks and stores `bounding_box_format` (ValueError listing the valid names)."""
        self.bounding_box_format = check_box_format(bounding_box_format)

    def _init_backbone(
        self,
        num_classes: int,
        backbone: str | IPGResNet,
        ipg: bool,
        backbone_weights: str | None,
        backbone_kwargs: dict[str, Any] | None,
    ) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        self.num_classes = int(num_classes)
        self.backbone_kwargs = dict(backbone_kwargs or {})
        if isinstance(backbone, IPGResNet):
            self.backbone = backbone
        elif isinstance(backbone, str):
            if backbone not in BACKBONES:
                raise ValueError(f"Unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}.")
            self.backbone = build_backbone(
                backbone, ipg=ipg, weights=backbone_weights, name="backbone", **self.backbone_kwargs
            )
        else:
            raise TypeError(f"backbone must be a name or an IPGResNet, got {type(backbone).__name__}.")
        self.backbone_name = backbone if isinstance(backbone, str) else None
        self.ipg = self.backbone.ipg

    @property
    def size_multiple(self) -> int:
        """H and W of the network input must be multiples of this."""
        raise NotImplementedError

    def anchors_for(self, images):
        shape = ops.shape(images)
        return self.anchor_generator(shape[1], shape[2])

    def decode_predictions(self, raw, images):
        raise NotImplementedError

    def _track_and_sum(self, terms):
        """Total loss of `(value, tracker, weight)` terms, plus regularisation losses.

        Trackers show the global-batch value, as Keras' own loss tracker does
        (each replica's value is its share of the global-batch loss).
        """
        replicas = float(replica_count())
        total = 0.0
        for value, tracker, weight in terms:
            tracker.update_state(value * replicas)
            total = total + weight * value
        if self.losses:
            total = total + ops.sum(self.losses) / replicas
        return total

    def unpack_targets(self, images, y):
        """Checked targets in xyxy pixels: `(boxes [B, M, 4] f32, classes [B, M] i32, valid [B, M])`.

        `y["boxes"]` are in `bounding_box_format`; `rel_` formats are relative to
        the size of `images` (the padded network input). Padding rows stay -1.
        """
        return unpack_targets(y, self.num_classes, self.bounding_box_format, images)

    def to_box_format(self, detections, images):
        """`detect()` output with boxes converted from xyxy pixels to `bounding_box_format`.

        `rel_` formats are relative to the height and width of `images` (what
        was given to `detect`); rows past `num_detections` (class -1) are left
        as they are.
        """
        if self.bounding_box_format == "xyxy":
            return detections
        shape = ops.shape(images)
        detections = dict(detections)
        detections["boxes"] = convert_boxes(
            detections["boxes"], "xyxy", self.bounding_box_format, shape[1], shape[2],
            valid=detections["classes"] >= 0,
        )
        return detections

    def predict_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        if isinstance(images, dict):
            images = images["images"]
        return self.to_box_format(self.detect(images), images)

    @contextlib.contextmanager
    def builtin_ops_variant(self) -> Iterator["Detector"]:
        """While active, the model traces only ops that TFLite has as builtins (export uses it).

        Detectors whose default path uses a TF-only op override this; here it changes nothing.
        """
        yield self

    def detect(self, images):
        """Detections for a batch of images of any size.

        Images are padded bottom/right to `size_multiple` (box coordinates are
        unchanged by that) and boxes clipped to the unpadded size.
        Returns `boxes` `[B, D, 4]` xyxy pixels (whatever `bounding_box_format`:
        `predict` converts them, exports rely on xyxy), `scores` `[B, D]`,
        `classes` `[B, D]` int32 (-1 = none), `num_detections` `[B]`.
        """
        images = ops.convert_to_tensor(images, "float32")
        if len(images.shape) != 4:
            check_images(images, self.size_multiple)
        shape = ops.shape(images)
        m = self.size_multiple
        pad_h = (m - shape[1] % m) % m
        pad_w = (m - shape[2] % m) % m
        padded = tf.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
        padded = tf.ensure_shape(padded, [None, None, None, 3])
        raw = self(padded, training=False)
        with tf.name_scope(POSTPROCESS_SCOPE):
            detections = self.decode_predictions(raw, padded)
            detections["boxes"] = clip_boxes(
                detections["boxes"], ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")
            )
        return detections

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable, **self._config,
                  "bounding_box_format": self.bounding_box_format}
        if self.backbone_name is not None:
            config["backbone"] = self.backbone_name
        else:
            config["backbone"] = keras.saving.serialize_keras_object(self.backbone)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("backbone"), dict):
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
