"""Input normalisation of 0..255 RGB images, inside the model so exports keep it."""

from __future__ import annotations

import keras
from keras import ops

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
NORMALIZATION_MODES = ("torch", "caffe")


@keras.saving.register_keras_serializable(package="ipg_keras")
class ImageNormalization(keras.layers.Layer):
    """Maps RGB images in 0..255 to what the backbone's weights expect.

    `"torch"`: `(x / 255 - mean) / std` with ImageNet statistics (training
    from scratch). `"caffe"`: RGB -> BGR and subtract the ImageNet mean, the
    preprocessing keras.applications' ResNet50/101 weights were trained with.

    Shape: `[B, H, W, 3]` -> `[B, H, W, 3]`.
    """

    def __init__(self, mode: str = "torch", **kwargs):
        super().__init__(**kwargs)
        if mode not in NORMALIZATION_MODES:
            raise ValueError(f"ImageNormalization mode must be one of {NORMALIZATION_MODES}, got {mode!r}.")
        self.mode = mode

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        if self.mode == "caffe":
            return ops.flip(images, axis=-1) - ops.convert_to_tensor(CAFFE_MEAN_BGR, self.compute_dtype)
        mean = ops.convert_to_tensor([255.0 * m for m in IMAGENET_MEAN_RGB], self.compute_dtype)
        std = ops.convert_to_tensor([255.0 * s for s in IMAGENET_STD_RGB], self.compute_dtype)
        return (images - mean) / std

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
