"""A/B timing of one training step: this version against its previous implementations, interleaved.

The previous implementations are restored in the same process on a copy of the
model (identical weights, same optimizer and batches), so one interleaved run
gives the ratio the change bought:

* `iou`: `pairwise_iou` as before (xyxy pairs broadcast as `[..., N, 1, 2]` x `[..., 1, M, 2]`);
* `bias`: every conv bias of a bottleneck ResNet trainable (before `IPGResNet.freeze_redundant_biases`).

    python benchmarks/ab_train_step.py --model main --previous iou        # main job model, batch 8 at 256
    python benchmarks/ab_train_step.py --model r50 --previous iou,bias    # RetinaNet-R50 ipg=False, batch 2 at 512
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, quiet_tf, time_interleaved, write_json  # noqa: E402
from xla_train import build  # noqa: E402


def previous_intersection_and_union(boxes1, boxes2):
    """`ipg_keras.ops.boxes._intersection_and_union` before the per-coordinate form."""
    from keras import ops

    from ipg_keras.ops.boxes import box_area

    b1 = ops.expand_dims(boxes1, -2)
    b2 = ops.expand_dims(boxes2, -3)
    lt = ops.maximum(b1[..., :2], b2[..., :2])
    rb = ops.minimum(b1[..., 2:], b2[..., 2:])
    wh = ops.maximum(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = ops.expand_dims(box_area(boxes1), -1) + ops.expand_dims(box_area(boxes2), -2) - inter
    return inter, union


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("main", "r50", "tiny"), default="main")
    parser.add_argument("--previous", default="iou", help="comma-separated: iou, bias (all restored together)")
    parser.add_argument("--steps-per-call", type=int, default=None)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    quiet_tf()
    import keras
    import tensorflow as tf

    import ipg_keras.ops.boxes as boxes
    from ipg_keras.data import make_batches, synthetic_dataset

    previous = {p for p in args.previous.split(",") if p}
    factory, batch, size, lr = build(args.model)
    k = args.steps_per_call or (10 if args.model == "main" else 1)
    elements = synthetic_dataset("train", num_images=batch * 8, image_size=size, max_size=min(64, size - 2))
    ds = make_batches(elements, batch, size, max_boxes=32, drop_remainder=True).cache().repeat()
    info = machine_info()
    print(f"load average at start: {info['load_average_start']}", flush=True)

    keras.utils.set_random_seed(0)
    current = factory()
    current(tf.zeros([1, size, size, 3]))
    old = factory()
    old(tf.zeros([1, size, size, 3]))
    old.set_weights(current.get_weights())
    if "bias" in previous:
        for conv, _ in old.backbone.conv_bn_pairs():
            conv.bias.trainable = True
    for m in (current, old):
        m.compile(optimizer=keras.optimizers.Adam(lr), jit_compile=False)
    new_iou = boxes._intersection_and_union

    def fit(model, iou):
        boxes._intersection_and_union = iou  # read when the train function is traced (first call)
        try:
            return model.fit(ds, steps_per_epoch=k, epochs=1, verbose=0).history["loss"]
        finally:
            boxes._intersection_and_union = new_iou

    old_iou = previous_intersection_and_union if "iou" in previous else new_iou
    fns = {"current": lambda: fit(current, new_iou), "previous": lambda: fit(old, old_iou)}
    timed = time_interleaved(fns, 1, args.iters, label=f"{args.model} train")
    ratio = timed["previous"]["median_s"] / timed["current"]["median_s"]
    load_end = list(os.getloadavg())
    text = (f"{args.model}: previous ({', '.join(sorted(previous))}) {timed['previous']['median_s'] / k:.3f} s/step, "
            f"current {timed['current']['median_s'] / k:.3f} s/step: speed-up x{ratio:.2f} "
            f"(median of {args.iters} interleaved calls of {k} steps; load {info['load_average_start'][0]:.1f} -> "
            f"{load_end[0]:.1f})")
    out = args.output or str(Path(__file__).resolve().parent / "results" /
                             f"ab_train_step_{args.model}_{'_'.join(sorted(previous))}.json")
    write_json(out, {"model": args.model, "previous": sorted(previous), "steps_per_call": k, "timings": timed,
                     "speedup": ratio, "machine": info, "load_average_end": load_end, "table": text})
    print(text + f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
