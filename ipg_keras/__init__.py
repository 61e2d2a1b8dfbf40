"""ipg-keras: IPG-Net (Image Pyramid Guidance) detectors for Keras 3."""

__version__ = "0.1.0"

from ipg_keras.models import IPGFasterRCNN  # noqa: E402
from ipg_keras.models import IPGRetinaNet  # noqa: E402

__all__ = ["IPGFasterRCNN", "IPGRetinaNet", "__version__"]
