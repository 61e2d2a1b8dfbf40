"""benchmarks/flops.py and op_profile.py: component names and the per-component FLOP count."""

from __future__ import annotations

import math

import pytest

from .bench_loader import load_benchmark as _load


@pytest.mark.parametrize("name,component", [
    ("ipg_retina_net_1/backbone_1/conv1_conv_1/convolution", "backbone stem (conv1 + pool)"),
    ("ipg_retina_net_1/backbone_1/conv3_block2_1_bn_1/batchnorm/mul", "backbone C3"),
    ("ipg_retina_net_1/backbone_1/ipg_transform_c2_1/stem_conv_1/convolution", "IPG (pyramid, transforms, fusions)"),
    ("StatefulPartitionedCall/gradient_tape/ipg_retina_net_1/cls_head_1/conv1_1/convolution/Conv2DBackpropFilter",
     "class head convs"),  # gradient ops count to the op they differentiate; head "conv1" is not the stem
    ("ipg_retina_net_1/box_head_1/output_3/convolution", "box head output conv"),
    ("ipg_retina_net_1/cls_head_1/postprocess/Reshape_1", "head outputs reshape + concat"),
    ("ipg_retina_net_1/fpn_1/extra_p6_1/convolution", "P6 (3x3 s2)"),
    ("ipg_retina_net_1/fpn_1/Repeat/mul", "FPN top-down (upsample + add)"),
    ("retina_net_1/functional_1/v2_stack_0_block1_1_conv_1/convolution", "backbone C2"),
    ("retina_net_1/functional_1/rescaling_1/mul", "input normalization"),
    ("retina_net_1/fpn_1/lateral_c4_1/convolution", "FPN laterals (1x1)"),
    ("retina_net_1/reshape_3_1/Reshape", "head outputs reshape + concat"),
    ("StatefulPartitionedCall/Maximum", "other"),
])
def test_component_names(name, component):
    assert _load("flops").component_of(name) == component


def test_op_profile_classifies_loss_optimizer_and_idle():
    classify = _load("op_profile").classify
    assert classify("StatefulPartitionedCall/Maximum", "Maximum") == ("loss: matching, targets, focal + box loss",
                                                                      False)
    assert classify("StatefulPartitionedCall/adam/Sub_3", "Sub")[0] == "optimizer (Adam update)"
    assert classify("IDLE", "IDLE") == ("idle (threads waiting)", False)
    assert classify("StatefulPartitionedCall/gradient_tape/ipg_retina_net_1/box_head_1/Relu_1/ReluGrad",
                    "ReluGrad") == ("box head convs", True)


def test_flop_breakdown_of_a_tiny_retinanet_matches_the_conv_arithmetic():
    from ipg_keras.models import IPGRetinaNet

    flops = _load("flops")
    width, depth, classes = 16, 2, 3
    model = IPGRetinaNet(classes, "resnet18", ipg=False, fpn_channels=width, head_width=width, head_depth=depth,
                         backbone_kwargs={"width_multiplier": 0.25})
    res = flops.breakdown(model, 128)
    comps = res["components"]
    positions = sum((128 // 2**l) ** 2 for l in range(3, 8))  # P3..P7: 256 + 64 + 16 + 4 + 1 = 341
    head_conv = 2 * 9 * width * width * positions
    assert math.isclose(comps["class head convs"]["conv_gflops"] * 1e9, depth * head_conv, rel_tol=1e-9)
    assert comps["class head convs"]["convs"] == depth * 5  # the shared head runs once per level
    assert math.isclose(comps["class head output conv"]["conv_gflops"] * 1e9,
                        2 * 9 * width * 9 * classes * positions, rel_tol=1e-9)
    # P6: stride-2 3x3 conv on C5 (128 channels at 4x4) -> 2x2x16.
    assert math.isclose(comps["P6 (3x3 s2)"]["conv_gflops"] * 1e9, 2 * 9 * 128 * width * 4, rel_tol=1e-9)
    # The per-node sum is the profiler's total, and convolutions are almost all of it.
    assert math.isclose(res["registered_gflops"], res["profiler_gflops"], rel_tol=1e-6)
    assert 0.97 * res["registered_gflops"] < res["conv_gflops"] < res["registered_gflops"]
    assert "other" not in comps or comps["other"]["convs"] == 0
