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


def tiny_faster_rcnn(num_classes=3, ipg=True, **kwargs):
    """An IPG-Faster R-CNN small enough to train a few steps in seconds on a CPU (64x64 images)."""
    from ipg_keras import IPGFasterRCNN

    params = dict(
        backbone="resnet18", ipg=ipg, fpn_channels=16, roi_head_width=64, backbone_kwargs=TINY_BACKBONE,
        rpn_batch_size=64, num_rois=64, pre_nms_topk_train=200, post_nms_topk_train=100,
        pre_nms_topk_test=100, post_nms_topk_test=50,
    )
    params.update(kwargs)
    return IPGFasterRCNN(num_classes, **params)
