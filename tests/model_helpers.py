"""Tiny model factories shared by the test modules (tests/ is on sys.path via conftest)."""

TINY_BACKBONE = {"width_multiplier": 0.25, "ipg_width": 8}


def tiny_retinanet(num_classes=3, ipg=True, **kwargs):
    """An IPG-RetinaNet small enough to train a few steps in seconds on a CPU."""
    from ipg_keras import IPGRetinaNet

    params = dict(
        backbone="resnet18", ipg=ipg, fpn_channels=16, head_width=16, head_depth=1, backbone_kwargs=TINY_BACKBONE
    )
    params.update(kwargs)
    return IPGRetinaNet(num_classes, **params)
