"""Where the FLOPs of a RetinaNet-R50 forward pass sit: per component, ours against keras-cv's.

Deterministic (no timing). For each model, `model(x, training=False)` at
`[1, S, S, 3]` is traced, its variables are frozen into constants, and every
node of the graph is assigned to a component (backbone stem / C2..C5 stages,
IPG, FPN laterals / outputs / top-down, P6, P7, class head, box head, head
output reshape + concat, input normalization). Two counts per component:

* **conv (analytic)**: `2 * prod(output shape) * kh * kw * c_in` summed over
  the component's convolutions (2 FLOPs per multiply-add; the kernel shape is
  read from the frozen filter constant, the output shape from the graph);
* **all ops (registered)**: TensorFlow's registered FLOP statistics of every
  node (`ops.get_stats_for_node_def(..., "flops")`: the same numbers that
  `tf.compat.v1.profiler`'s `float_operation` sums, so element-wise ops such
  as bias adds, BN multiply/adds and ReLUs count 1 per element).

The total of the second column is cross-checked against
`benchmarks.common.count_flops` (the profiler); the script fails if they
differ by more than 0.1 %.

    python benchmarks/flops.py                      # R50 at 512: ours (ipg=False / True, head depth 4 and 3), keras-cv (3 and 4 head convs)
    python benchmarks/flops.py --preset tiny        # seconds: smoke test

keras-cv's RetinaNet is built offline as in `benchmarks/speed.py`, with its
default `FeaturePyramid` and `PredictionHead`s passed explicitly (named, so the
heads can be told apart; `num_conv_layers=3` is keras-cv's default,
`4` is the paper's and ours).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import count_flops, format_table, machine_info, quiet_tf, write_json  # noqa: E402

CONV_TYPES = ("Conv2D", "DepthwiseConv2dNative", "MatMul")

COMPONENTS = (
    "input normalization",
    "backbone stem (conv1 + pool)",
    "backbone C2",
    "backbone C3",
    "backbone C4",
    "backbone C5",
    "IPG (pyramid, transforms, fusions)",
    "FPN laterals (1x1)",
    "FPN top-down (upsample + add)",
    "FPN outputs (3x3)",
    "P6 (3x3 s2)",
    "P7 (3x3 s2)",
    "class head convs",
    "class head output conv",
    "box head convs",
    "box head output conv",
    "head outputs reshape + concat",
    "other",
)


# ----------------------------------------------------------------------------- models
def build_models(preset: str, num_classes: int) -> "OrderedDict[str, Any]":
    from ipg_keras.models import IPGRetinaNet

    tiny = preset == "tiny"
    kw = dict(fpn_channels=16, head_width=16, backbone_kwargs={"width_multiplier": 0.25, "ipg_width": 8}) if tiny \
        else {}
    backbone = "resnet18" if tiny else "resnet50"
    depth = 2 if tiny else 4
    models: "OrderedDict[str, Any]" = OrderedDict()
    models["ours ipg=False"] = IPGRetinaNet(num_classes, backbone, ipg=False, head_depth=depth, **kw)
    models["ours ipg=True"] = IPGRetinaNet(num_classes, backbone, ipg=True, head_depth=depth, **kw)
    models[f"ours ipg=False, head_depth={depth - 1}"] = IPGRetinaNet(num_classes, backbone, ipg=False,
                                                                      head_depth=depth - 1, **kw)
    models[f"keras-cv, {depth - 1} head convs" + ("" if tiny else " (its default)")] = build_keras_cv(
        preset, num_classes, depth - 1)
    models[f"keras-cv, {depth} head convs"] = build_keras_cv(preset, num_classes, depth)
    return models


def build_keras_cv(preset: str, num_classes: int, head_convs: int):
    """keras-cv's RetinaNet on ResNet-50 v1 (built offline), its FPN and heads passed explicitly.

    The architecture is keras-cv's default (its `FeaturePyramid`, `PredictionHead`
    with `num_conv_layers=head_convs`); only the sublayers' names are set to
    ours (`lateral_c3`, `output_p3`, `extra_p6`, `cls_head/conv0`, ...), so
    that graph nodes can be told apart by name in both models.
    """
    import keras
    import keras_cv
    import numpy as np
    from keras_cv.models.retinanet import FeaturePyramid, PredictionHead

    if preset == "tiny":
        backbone = keras_cv.models.ResNetBackbone(stackwise_filters=[8, 16, 32, 64], stackwise_blocks=[1, 1, 1, 1],
                                                  stackwise_strides=[1, 2, 2, 2], include_rescaling=True)
    else:
        backbone = keras_cv.models.ResNetBackbone(stackwise_filters=[64, 128, 256, 512],
                                                  stackwise_blocks=[3, 4, 6, 3], stackwise_strides=[1, 2, 2, 2],
                                                  include_rescaling=True)
    fpn = FeaturePyramid(name="fpn")
    for level in (3, 4, 5):
        getattr(fpn, f"conv_c{level}_1x1").name = f"lateral_c{level}"
        getattr(fpn, f"conv_c{level}_3x3").name = f"output_p{level}"
    fpn.conv_c6_3x3.name, fpn.conv_c7_3x3.name = "extra_p6", "extra_p7"
    prior = keras.initializers.Constant(-np.log((1 - 0.01) / 0.01))
    heads = {
        "cls_head": PredictionHead(9 * num_classes, prior, num_conv_layers=head_convs, name="cls_head"),
        "box_head": PredictionHead(9 * 4, keras.initializers.Zeros(), num_conv_layers=head_convs, name="box_head"),
    }
    for head in heads.values():
        for i, conv in enumerate(head.conv_layers):
            conv.name = f"conv{i}"
        head.prediction_layer.name = "output"
    return keras_cv.models.RetinaNet(num_classes=num_classes, bounding_box_format="xyxy", backbone=backbone,
                                     feature_pyramid=fpn, classification_head=heads["cls_head"],
                                     box_head=heads["box_head"])


# ------------------------------------------------------------------------ classify
def component_of(name: str) -> str:
    """The component of one graph node or profiled op, by its name (ours and `build_keras_cv`'s).

    Gradient ops (`gradient_tape/...`) get the component of the op they differentiate.
    """
    if re.search(r"/fpn[^/]*/", name):
        if "/lateral_c" in name:
            return "FPN laterals (1x1)"
        if "/output_p" in name:
            return "FPN outputs (3x3)"
        if "/extra_p6" in name:
            return "P6 (3x3 s2)"
        if "/extra_p7" in name:
            return "P7 (3x3 s2)"
        return "FPN top-down (upsample + add)"
    for head, label in (("/cls_head", "class head"), ("/box_head", "box head")):
        if re.search(head + r"[^/]*/", name):
            if "/postprocess" in name:
                return "head outputs reshape + concat"
            if re.search(r"/output(_\d+)?/", name):
                return f"{label} output conv"
            return f"{label} convs"
    if re.search(r"/(normalization|rescaling)[^/]*/", name):
        return "input normalization"
    if re.search(r"/ipg_(pyramid|transform|fusion)", name):
        return "IPG (pyramid, transforms, fusions)"
    if re.search(r"/(conv1_|pool1_)", name):
        return "backbone stem (conv1 + pool)"
    m = re.search(r"/conv([2-5])_block", name) or re.search(r"/v2_stack_([0-3])_", name)
    if m:
        level = int(m.group(1))
        return f"backbone C{level if '/conv' in m.group(0) else level + 2}"
    if re.search(r"(^|/)(reshape|classification|box)(_\d+)*/", name):
        return "head outputs reshape + concat"  # keras-cv's Reshape layers and its final Concatenates
    return "other"


def _conv_geometry(op) -> tuple[int, int, int, int, int] | None:
    """(kh, kw, c_in, c_out, stride) of a Conv2D node, None for other ops."""
    if op.type != "Conv2D":
        return None
    kh, kw, cin, cout = [int(d) for d in op.inputs[1].shape]
    stride = int(op.get_attr("strides")[1])
    return kh, kw, cin, cout, stride


# ----------------------------------------------------------------------------- count
def breakdown(model, size: int) -> dict[str, Any]:
    import tensorflow as tf
    from tensorflow.python.framework import ops as tf_ops
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    model(tf.zeros([1, size, size, 3]), training=False)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, size, size, 3], tf.float32))
    graph_def = convert_variables_to_constants_v2(concrete).graph.as_graph_def()
    rows = OrderedDict((c, {"conv_gflops": 0.0, "registered_gflops": 0.0, "convs": 0, "conv_params": 0})
                       for c in COMPONENTS)
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        total_registered = 0
        for op in graph.get_operations():
            comp = component_of(op.name)
            try:
                flops = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops").value or 0
            except ValueError:
                flops = 0
            rows[comp]["registered_gflops"] += flops / 1e9
            total_registered += flops
            geo = _conv_geometry(op)
            if geo is not None:
                kh, kw, cin, cout, _ = geo
                out = [int(d) for d in op.outputs[0].shape]
                rows[comp]["conv_gflops"] += 2.0 * out[0] * out[1] * out[2] * out[3] * kh * kw * cin / 1e9
                rows[comp]["convs"] += 1
                rows[comp]["conv_params"] += kh * kw * cin * cout
    profiler = count_flops(lambda x: model(x, training=False), tf.TensorSpec([1, size, size, 3], tf.float32))
    return {
        "components": {c: r for c, r in rows.items() if r["registered_gflops"] or r["convs"]},
        "conv_gflops": sum(r["conv_gflops"] for r in rows.values()),
        "registered_gflops": total_registered / 1e9,
        "profiler_gflops": profiler / 1e9,
        "params": int(model.count_params()),
    }


def report(result: dict[str, Any]) -> str:
    names = list(result["models"])
    lines = [f"GFLOPs per component, one {result['image_size']}x{result['image_size']} image, "
             f"{result['num_classes']} classes (conv = analytic 2*MACs of the convolutions; "
             f"all = TF's registered FLOPs of every op):", ""]
    headers = ["component"] + [f"{n}: conv / all" for n in names]
    rows = []
    for comp in COMPONENTS:
        cells = []
        seen = False
        for n in names:
            r = result["models"][n]["components"].get(comp)
            if r:
                seen = True
                cells.append(f"{r['conv_gflops']:.3f} / {r['registered_gflops']:.3f}")
            else:
                cells.append("-")
        if seen:
            rows.append([comp] + cells)
    rows.append(["**total**"] + [f"{result['models'][n]['conv_gflops']:.2f} / {result['models'][n]['registered_gflops']:.2f}"
                                 for n in names])
    rows.append(["profiler total (common.count_flops)"] + [f"{result['models'][n]['profiler_gflops']:.2f}"
                                                             for n in names])
    rows.append(["params"] + [f"{result['models'][n]['params']:,}" for n in names])
    lines.append(format_table(headers, rows))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("full", "tiny"), default="full")
    parser.add_argument("--num-classes", type=int, default=5)
    parser.add_argument("--output", default=None, help="JSON path (default benchmarks/results/flops_<preset>.json)")
    args = parser.parse_args(argv)
    quiet_tf()
    size = 128 if args.preset == "tiny" else 512
    result: dict[str, Any] = {"preset": args.preset, "image_size": size, "num_classes": args.num_classes,
                              "machine": machine_info(), "models": {}}
    for name, model in build_models(args.preset, args.num_classes).items():
        res = breakdown(model, size)
        gap = abs(res["registered_gflops"] - res["profiler_gflops"]) / res["profiler_gflops"]
        print(f"{name}: conv {res['conv_gflops']:.3f}, all ops {res['registered_gflops']:.3f}, "
              f"profiler {res['profiler_gflops']:.3f} GFLOPs", flush=True)
        if gap > 1e-3:
            raise SystemExit(f"{name}: per-node sum {res['registered_gflops']:.4f} differs from the profiler's "
                             f"{res['profiler_gflops']:.4f} GFLOPs by {100 * gap:.2f} %")
        result["models"][name] = res
    text = report(result)
    result["table"] = text
    out = args.output or str(Path(__file__).resolve().parent / "results" / f"flops_{args.preset}.json")
    write_json(out, result)
    print("\n" + text + f"\n\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
