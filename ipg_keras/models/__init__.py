"""Detectors and their parts (anchors, matching, losses)."""

from ipg_keras.models.anchors import AnchorGenerator
from ipg_keras.models.faster_rcnn import IPGFasterRCNN
from ipg_keras.models.retinanet import IPGRetinaNet

__all__ = ["AnchorGenerator", "IPGFasterRCNN", "IPGRetinaNet"]
