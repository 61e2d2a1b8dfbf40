"""ipg-keras: IPG-Net (Image Pyramid Guidance) detectors for Keras 3."""

__version__ = "0.1.0"
