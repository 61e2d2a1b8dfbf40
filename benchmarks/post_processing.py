"""RetinaNet post-processing (decoding + top-k + NMS) against the previous single top-k, interleaved.

Times `IPGRetinaNet.decode_predictions` and the previous implementation kept as
the reference in `tests/models/test_retinanet_decode.py` (one top-k over all
anchor x class pairs per level) on the same head outputs, one call of each per
round, plus the per-level selection alone. Head outputs have the shapes of a
512x512 input (49,104 anchors) and are drawn like `speed.py`'s: "real" logits
near the 0.01 prior (a fresh network; few pairs above the 0.05 threshold) and
"busy" logits U(-6, 1) (about 44 % of the pairs above it). Decoding does not
depend on the backbone, so a tiny one is built.

    python benchmarks/post_processing.py --num-classes 80 --batch-sizes 1,8
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _reference():
    path = REPO / "tests" / "models" / "test_retinanet_decode.py"
    sys.path.insert(0, str(REPO / "tests"))  # model_helpers
    spec = importlib.util.spec_from_file_location("decode_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_decode


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--iters", type=int, default=15)
    parser.add_argument("--output", default=None, help="JSON file for the timings")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from ipg_keras.models import IPGRetinaNet
    from ipg_keras.models.retinanet import _sigmoid_whole_packets, top_pairs

    reference_decode = _reference()
    c, size = args.num_classes, args.image_size
    model = IPGRetinaNet(c, backbone="resnet18", fpn_channels=16, head_width=16, head_depth=1,
                         backbone_kwargs={"width_multiplier": 0.25, "ipg_width": 8})
    counts = model.anchor_generator.level_sizes(size, size)
    rng = np.random.default_rng(0)
    rows, results = [], {}
    for batch in [int(b) for b in args.batch_sizes.split(",") if b.strip()]:
        images = tf.zeros([batch, size, size, 3])
        n = sum(counts)
        raws = {
            "real": {"cls": tf.constant(rng.normal(-4.6, 0.3, (batch, n, c)), tf.float32),
                     "box": tf.constant(rng.normal(0, 0.3, (batch, n, 4)), tf.float32)},
            "busy": {"cls": tf.constant(rng.uniform(-6, 1, (batch, n, c)), tf.float32),
                     "box": tf.constant(rng.normal(0, 0.3, (batch, n, 4)), tf.float32)},
        }
        k = model.get_config()["pre_nms_topk"]

        def select_new(raw):  # what decode_predictions does before decoding boxes (one-sigmoid path)
            best = tf.reduce_max(tf.sigmoid(raw["cls"]), axis=-1)
            out, start = [], 0
            for count in counts:
                out.append(top_pairs(raw["cls"], k, start, count, best[:, start:start + count],
                                     _sigmoid_whole_packets))
                start += count
            return out

        def select_reference(raw):
            out, start = [], 0
            for count in counts:
                flat = tf.reshape(tf.sigmoid(raw["cls"][:, start:start + count]), (batch, -1))
                out.append(tf.math.top_k(flat, k=min(k, count * c)))
                start += count
            return out

        fns = {
            "decode": tf.function(lambda raw: model.decode_predictions(raw, images)),
            "decode (reference)": tf.function(lambda raw: reference_decode(model, raw, images)),
            "top-k selection": tf.function(select_new),
            "top-k selection (reference)": tf.function(select_reference),
        }
        for kind, raw in raws.items():
            for fn in fns.values():
                fn(raw)  # trace
            times = {name: [] for name in fns}
            for _ in range(args.iters):
                for name, fn in fns.items():
                    start = time.perf_counter()
                    tf.nest.map_structure(lambda t: t.numpy(), fn(raw))
                    times[name].append((time.perf_counter() - start) * 1000)
            for name, t in times.items():
                med = float(np.median(t))
                results[f"batch{batch}|{kind}|{name}"] = {"median_ms": med, "min_ms": float(np.min(t))}
                rows.append(f"| {batch} | {kind} | {name} | {med:.1f} | {np.min(t):.1f} |")
    table = "\n".join([f"{c} classes, {size}x{size} ({sum(counts):,} anchors), {args.iters} interleaved rounds:", "",
                       "| batch | head outputs | what | median ms | min ms |", "| --- | --- | --- | --- | --- |", *rows])
    print(table)
    if args.output:
        Path(args.output).write_text(json.dumps({"argv": argv or sys.argv[1:], "results": results, "table": table},
                                                indent=1))
    return results


if __name__ == "__main__":
    main()
