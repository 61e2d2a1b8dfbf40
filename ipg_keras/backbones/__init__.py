"""Backbones: ResNets with image pyramid guidance."""

from ipg_keras.backbones.ipg_resnet import IPGResNet, load_imagenet_weights

BACKBONES = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101}


def build_backbone(backbone: str, **kwargs) -> IPGResNet:
    """Builds a backbone by name (`"resnet18"`, `"resnet34"`, `"resnet50"`, `"resnet101"`)."""
    if backbone not in BACKBONES:
        raise ValueError(f"Unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}.")
    return IPGResNet(depth=BACKBONES[backbone], **kwargs)


__all__ = ["BACKBONES", "IPGResNet", "build_backbone", "load_imagenet_weights"]
