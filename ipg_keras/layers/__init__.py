"""Keras layers of IPG-Net and its detectors (all registered serializable)."""

from ipg_keras.layers.batch_normalization import BatchNormalization
from ipg_keras.layers.feature_pyramid import FeaturePyramid
from ipg_keras.layers.image_normalization import ImageNormalization
from ipg_keras.layers.image_pyramid import ImagePyramid
from ipg_keras.layers.ipg_fusion import IPGFusion
from ipg_keras.layers.ipg_transform import IPGTransform
from ipg_keras.layers.prediction_head import PredictionHead

__all__ = ["BatchNormalization", "FeaturePyramid", "IPGFusion", "IPGTransform", "ImageNormalization", "ImagePyramid",
           "PredictionHead"]
