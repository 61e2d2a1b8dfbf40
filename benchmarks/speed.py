"""Speed of IPG detectors against their ipg=False baselines and keras-cv's RetinaNet, side by side.

One run measures, for every model, on the same machine and interleaved (one
call of each model per timing round, so that load changes hit all alike):

* forward images/s (raw head outputs, `model(x, training=False)` in a `tf.function`),
* end-to-end images/s (forward + decoding + NMS, i.e. what each model's `predict_step` computes,
  in a `tf.function`),
* post-processing time (the decoding + NMS alone, on precomputed head outputs) / forward time,
  on the real outputs of the (randomly initialised) network and, for RetinaNets, on
  "busy" outputs whose class logits are drawn U(-6, 1) so that NMS gets many candidates,
* GFLOPs of one forward pass counted from the frozen graph by `tf.compat.v1.profiler`,
  and achieved GFLOP/s against the measured peak of a big matmul and a big 3x3 conv,
* training step images/s (`fit` steps on one identical batch),
* the cost of IPG: FLOPs and params added over `ipg=False` (target: at most +15 % FLOPs on R50 RetinaNet).

    python benchmarks/speed.py                      # R50 at 512, RetinaNets + Faster R-CNNs
    python benchmarks/speed.py --preset tiny        # seconds: smoke test of the script itself
    python benchmarks/speed.py --detectors retinanet --retinanets ipg --num-classes 80 --no-train --no-flops
                                                    # post-processing share at 80 classes (COCO)

keras-cv note: `keras_cv.models.ResNet50Backbone()` calls `from_preset("resnet50")`,
which downloads the preset's config from Kaggle even without weights; with no
network it raises `requests.exceptions.ConnectionError`. The identical
architecture is built here offline with `keras_cv.models.ResNetBackbone(
stackwise_filters=[64, 128, 256, 512], stackwise_blocks=[3, 4, 6, 3],
stackwise_strides=[1, 2, 2, 2], include_rescaling=True)` (23,561,152 params, the preset's count).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    count_flops,
    format_table,
    machine_info,
    measure_peak,
    quiet_tf,
    time_interleaved,
    write_json,
)

import numpy as np  # noqa: E402

IPG_FLOP_TARGET = 0.15
RETINANETS = ("ipg", "ipg_false", "keras_cv")  # --retinanets: which RetinaNets to build

PRESETS = {
    # The setting: ResNet-50 detectors at 512x512, float32.
    "full": dict(image_size=512, backbone="resnet50", num_classes=5, warmup1=3, iters1=5, warmup8=1, iters8=2,
                 train_batch=2, train_warmup=1, train_iters=3, train_steps_per_call=1, peak_repeats=3),
    # Smoke test: tiny networks at 128x128; only checks that the script works.
    "tiny": dict(image_size=128, backbone="resnet18", num_classes=3, warmup1=1, iters1=1, warmup8=1, iters8=1,
                 train_batch=2, train_warmup=1, train_iters=1, train_steps_per_call=1, peak_repeats=1),
}


# ----------------------------------------------------------------------------- models
def build_ipg_retinanet(preset: str, ipg: bool, num_classes: int, backbone: str):
    from ipg_keras.models import IPGRetinaNet

    if preset == "tiny":
        return IPGRetinaNet(num_classes, backbone=backbone, ipg=ipg, fpn_channels=16, head_width=16, head_depth=1,
                            backbone_kwargs={"width_multiplier": 0.25, "ipg_width": 8})
    return IPGRetinaNet(num_classes, backbone=backbone, ipg=ipg)


def build_ipg_faster_rcnn(preset: str, ipg: bool, num_classes: int, backbone: str):
    from ipg_keras.models import IPGFasterRCNN

    if preset == "tiny":
        return IPGFasterRCNN(num_classes, backbone=backbone, ipg=ipg, fpn_channels=16, rpn_head_width=16,
                             roi_head_width=32, num_rois=32, pre_nms_topk_train=100, post_nms_topk_train=64,
                             pre_nms_topk_test=100, post_nms_topk_test=64,
                             backbone_kwargs={"width_multiplier": 0.25, "ipg_width": 8})
    return IPGFasterRCNN(num_classes, backbone=backbone, ipg=ipg)


def build_keras_cv_retinanet(preset: str, num_classes: int, head_convs: int | None = None):
    """keras-cv's RetinaNet (defaults) on a ResNet-50 v1 backbone built offline (see module docstring).

    `head_convs` (e.g. 4, the paper's and our head depth; keras-cv's default is 3)
    builds it with that many hidden convs per head (`benchmarks/flops.py`'s builder).
    """
    import keras_cv

    if head_convs is not None:
        from flops import build_keras_cv

        return build_keras_cv(preset, num_classes, head_convs)

    if preset == "tiny":
        backbone = keras_cv.models.ResNetBackbone(
            stackwise_filters=[8, 16, 32, 64], stackwise_blocks=[1, 1, 1, 1], stackwise_strides=[1, 2, 2, 2],
            include_rescaling=True)
    else:
        backbone = keras_cv.models.ResNetBackbone(
            stackwise_filters=[64, 128, 256, 512], stackwise_blocks=[3, 4, 6, 3], stackwise_strides=[1, 2, 2, 2],
            include_rescaling=True)  # ResNet50Backbone's default
    return keras_cv.models.RetinaNet(num_classes=num_classes, bounding_box_format="xyxy", backbone=backbone)


class Entry:
    """One benchmarked model and the functions that run it."""

    def __init__(self, name: str, family: str, model, kind: str):
        import tensorflow as tf

        self.name, self.family, self.model, self.kind = name, family, model, kind
        self.forward = tf.function(lambda x: model(x, training=False))
        self.decode = tf.function(lambda raw, x: model.decode_predictions(raw, x))
        # End to end = what `predict_step` computes, compiled the same way for every model.
        # (keras-cv's RetinaNet.predict_on_batch fails on Keras 3.15: its predict_step receives
        # the batch as a tuple `(x,)`, takes `images[0].shape` = (B, H, W, 3) as the image shape
        # and its anchor generator raises "image_shape should be of length 3". `predict()` works.)
        if kind == "keras_cv":
            self.end_to_end = tf.function(lambda x: model.decode_predictions(model(x, training=False), x))
        else:
            self.end_to_end = tf.function(model.detect)

    def busy_raw(self, raw: dict, seed: int = 0) -> dict | None:
        """Head outputs with many confident candidates (RetinaNets only), to load NMS."""
        import tensorflow as tf

        if self.kind == "faster_rcnn":
            return None
        cls_key = "classification" if self.kind == "keras_cv" else "cls"
        gen = tf.random.Generator.from_seed(seed)
        busy = dict(raw)
        busy[cls_key] = gen.uniform(tf.shape(raw[cls_key]), -6.0, 1.0)
        busy["box"] = gen.normal(tf.shape(raw["box"]), stddev=0.3)
        return busy


def build_entries(detectors: list[str], preset: str, p: dict, errors: dict) -> list[Entry]:
    entries: list[Entry] = []
    nc, bb = p["num_classes"], p["backbone"]
    tag = "R50" if bb == "resnet50" else bb
    wanted = p.get("retinanets", RETINANETS)
    if "retinanet" in detectors:
        if "ipg" in wanted:
            entries.append(Entry(f"IPG-RetinaNet-{tag}", "retinanet", build_ipg_retinanet(preset, True, nc, bb),
                                 "ours"))
        if "ipg_false" in wanted:
            entries.append(Entry(f"RetinaNet-{tag} (ipg=False)", "retinanet",
                                 build_ipg_retinanet(preset, False, nc, bb), "ours"))
        if "keras_cv" in wanted:
            try:
                entries.append(Entry(f"keras-cv RetinaNet-{tag}", "retinanet", build_keras_cv_retinanet(preset, nc),
                                     "keras_cv"))
            except Exception as error:  # noqa: BLE001 - reported in the table and JSON
                errors["keras_cv RetinaNet"] = f"{type(error).__name__}: {error}"
                print(f"keras-cv RetinaNet unavailable: {errors['keras_cv RetinaNet']}", flush=True)
        if p.get("keras_cv_same_head", True) and "keras_cv" in wanted and "keras_cv RetinaNet" not in errors:
            depth = 1 if preset == "tiny" else 4
            entries.append(Entry(f"keras-cv RetinaNet-{tag} ({depth} head convs)", "retinanet",
                                 build_keras_cv_retinanet(preset, nc, depth), "keras_cv"))
    if "faster_rcnn" in detectors:
        try:
            entries.append(Entry(f"IPG-FasterRCNN-{tag}", "faster_rcnn", build_ipg_faster_rcnn(preset, True, nc, bb),
                                 "faster_rcnn"))
            entries.append(Entry(f"FasterRCNN-{tag} (ipg=False)", "faster_rcnn",
                                 build_ipg_faster_rcnn(preset, False, nc, bb), "faster_rcnn"))
        except Exception as error:  # noqa: BLE001
            errors["IPGFasterRCNN"] = f"{type(error).__name__}: {error}"
            print(f"IPGFasterRCNN unavailable: {errors['IPGFasterRCNN']}", flush=True)
            entries = [e for e in entries if e.family != "faster_rcnn"]
    return entries


def training_batch(batch: int, size: int, num_classes: int):
    """One identical batch (synthetic small objects) for every model's train step."""
    from ipg_keras.data import make_batches, synthetic_dataset

    ds = synthetic_dataset("train", num_images=batch, image_size=size, max_size=min(64, size - 2))
    images, targets = next(iter(make_batches(ds, batch, size, max_boxes=16)))
    classes = np.minimum(targets["classes"].numpy(), num_classes - 1)  # the set has 5 classes
    return images, {"boxes": targets["boxes"], "classes": classes.astype("int32")}


def compile_for_training(entry: Entry):
    import keras

    if entry.kind == "keras_cv":
        entry.model.compile(classification_loss="focal", box_loss="smoothl1",
                            optimizer=keras.optimizers.Adam(1e-4), jit_compile=False)
    else:
        entry.model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=False)


# ------------------------------------------------------------------------------- run
def run(args) -> dict[str, Any]:
    import tensorflow as tf

    p = dict(PRESETS[args.preset])
    for key in ("image_size", "num_classes", "warmup1", "iters1", "warmup8", "iters8", "train_batch", "train_iters",
                "keras_cv_same_head", "retinanets"):
        if getattr(args, key, None) is not None:
            p[key] = getattr(args, key)
    size = p["image_size"]
    result: dict[str, Any] = {"preset": args.preset, "settings": p, "machine": machine_info(), "errors": {}}
    print(f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, load "
          f"{result['machine']['load_average_start']}", flush=True)

    t0 = time.time()
    entries = build_entries(args.detectors, args.preset, p, result["errors"])
    for e in entries:
        e.model(tf.zeros([1, size, size, 3]), training=False)  # build
    result["build_seconds"] = round(time.time() - t0, 1)

    # Static properties: params and graph FLOPs of one forward pass at batch 1.
    models: dict[str, dict[str, Any]] = {}
    for e in entries:
        info: dict[str, Any] = {"family": e.family, "kind": e.kind, "params": int(e.model.count_params())}
        info["gflops"] = None
        if args.flops:
            try:
                info["gflops"] = count_flops(lambda x, m=e.model: m(x, training=False),
                                             tf.TensorSpec([1, size, size, 3], tf.float32)) / 1e9
            except Exception as error:  # noqa: BLE001 - reported in the table and JSON
                info["gflops_error"] = f"{type(error).__name__}: {error}"
                traceback.print_exc()
        print(f"{e.name}: {info['params']:,} params, {info['gflops']} GFLOPs", flush=True)
        models[e.name] = info

    result["peak"] = measure_peak(p["peak_repeats"], *( (512, (2, 32, 32, 64)) if args.preset == "tiny" else ()))

    # Inference timing, interleaved over models, at each batch size.
    rng = np.random.default_rng(0)
    for batch in args.batch_sizes:
        warmup, iters = (p["warmup1"], p["iters1"]) if batch == 1 else (p["warmup8"], p["iters8"])
        x = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"))
        fns = {}
        for e in entries:
            raw = e.forward(x)
            busy = None if args.forward_only else e.busy_raw(raw)
            fns[f"{e.name}|forward"] = lambda e=e: e.forward(x)
            if args.forward_only:
                continue
            fns[f"{e.name}|end_to_end"] = lambda e=e: e.end_to_end(x)
            fns[f"{e.name}|post"] = lambda e=e, raw=raw: e.decode(raw, x)
            if busy is not None:
                fns[f"{e.name}|post_busy"] = lambda e=e, busy=busy: e.decode(busy, x)
        timed = time_interleaved(fns, warmup, iters, label=f"batch {batch}")
        for e in entries:
            r = {k.split("|")[1]: v for k, v in timed.items() if k.split("|")[0] == e.name}
            nan = {"median_s": float("nan")}
            fwd = r["forward"]["median_s"]
            e2e, post = r.get("end_to_end", nan)["median_s"], r.get("post", nan)["median_s"]
            m = models[e.name]
            row = {
                "forward_images_per_s": batch / fwd,
                "end_to_end_images_per_s": batch / e2e,
                "post_over_forward": post / fwd,
                "post_busy_over_forward": r["post_busy"]["median_s"] / fwd if "post_busy" in r else None,
                "e2e_minus_forward_over_forward": (e2e - fwd) / fwd,
                "achieved_gflops_per_s": m["gflops"] * batch / fwd if m.get("gflops") else None,
                "timings": r,
            }
            m[f"batch{batch}"] = row

    # Training step on one identical batch.
    write_json(args.output + ".partial", {**result, "models": models})  # inference results survive a crash
    if args.train:
        images, targets = training_batch(p["train_batch"], size, p["num_classes"])
        import tensorflow as tf

        # The compiled train function (what fit() runs per step) on an iterator over the one
        # batch repeated, `train_steps_per_call` steps per timed call. Not fit() per call:
        # each fit() call adds about 1 s of set-up and tear-down here (its times came in
        # whole-second steps, 1.5 / 2.5 s for the same R50 step), which hid the step itself.
        # Not train_on_batch: on Keras 3.15 it hands keras-cv's RetinaNet.train_step the
        # batch as (x, y, sample_weight), which keras-cv cannot unpack ("ValueError: too
        # many values to unpack (expected 2)"); the train function takes (x, y) as it is.
        ds = tf.data.Dataset.from_tensors((images, targets)).repeat()
        k = p["train_steps_per_call"]
        fns = {}
        for e in entries:
            try:  # the first call traces the train function: a failure here leaves the model out
                compile_for_training(e)
                e.model.make_train_function()
                iterator = iter(ds)
                e.model.train_function(iterator)
            except Exception as error:  # noqa: BLE001 - reported in the table and JSON
                result["errors"][f"training step of {e.name}"] = f"{type(error).__name__}: {str(error)[:500]}"
                traceback.print_exc()
                continue
            fns[e.name] = lambda e=e, it=iterator: [e.model.train_function(it) for _ in range(k)]
        timed = time_interleaved(fns, p["train_warmup"], p["train_iters"], label=f"train batch {p['train_batch']}")
        for e in entries:
            if e.name not in fns:
                continue
            models[e.name]["train_images_per_s"] = k * p["train_batch"] / timed[e.name]["median_s"]
            models[e.name]["train_timings"] = timed[e.name]

    result["models"] = models
    result["ipg_cost"] = ipg_cost(entries, models)
    result["load_average_end"] = list(__import__("os").getloadavg())
    result["total_seconds"] = round(time.time() - t0, 1)
    return result


def ipg_cost(entries: list[Entry], models: dict) -> list[dict[str, Any]]:
    """FLOPs and params that IPG adds over the ipg=False network of each detector family."""
    out = []
    for family in ("retinanet", "faster_rcnn"):
        ours = [e for e in entries if e.family == family and e.kind != "keras_cv"]
        ipg = [e for e in ours if getattr(e.model, "ipg", False)]
        base = [e for e in ours if not getattr(e.model, "ipg", True)]
        if not ipg or not base:
            continue
        a, b = models[ipg[0].name], models[base[0].name]
        flops = (a["gflops"] / b["gflops"] - 1.0) if a.get("gflops") and b.get("gflops") else None
        row = {
            "family": family,
            "ipg_model": ipg[0].name,
            "baseline_model": base[0].name,
            "added_gflops": (a["gflops"] - b["gflops"]) if flops is not None else None,
            "added_flops_fraction": flops,
            "added_params": a["params"] - b["params"],
            "added_params_fraction": a["params"] / b["params"] - 1.0,
        }
        if family == "retinanet":
            row["target_fraction"] = IPG_FLOP_TARGET
            row["pass"] = None if flops is None else bool(flops <= IPG_FLOP_TARGET)
        out.append(row)
    return out


# ----------------------------------------------------------------------------- report
def report(result: dict[str, Any]) -> str:
    models = result["models"]
    size = result["settings"]["image_size"]
    lines = [f"## Speed at {size}x{size}, {result['settings']['num_classes']} classes, float32, CPU: "
             f"{result['machine']['cpu']} "
             f"({result['machine']['cores']} cores), load avg at start {result['machine']['load_average_start'][0]:.1f}"]
    peak = result["peak"]
    lines.append(f"Measured peak: matmul {peak['matmul_size']}^3 {peak['matmul_gflops_per_s']:.1f} GFLOP/s, "
                 f"conv3x3 {peak['conv_shape']} {peak['conv3x3_gflops_per_s']:.1f} GFLOP/s")
    best_peak = max(peak["matmul_gflops_per_s"], peak["conv3x3_gflops_per_s"])
    rows = []
    batches = sorted({int(k[5:]) for m in models.values() for k in m if k.startswith("batch")})
    for name, m in models.items():
        for b in batches:
            r = m.get(f"batch{b}")
            if r is None:
                continue
            ach = r["achieved_gflops_per_s"]
            rows.append([name, b, r["forward_images_per_s"], r["end_to_end_images_per_s"], r["post_over_forward"],
                         r["post_busy_over_forward"], m.get("gflops"), ach,
                         f"{100 * ach / best_peak:.0f} %" if ach else None])
    lines.append("")
    lines.append(format_table(["model", "batch", "forward img/s", "end-to-end img/s", "post/forward",
                               "post/forward (busy NMS)", "GFLOPs/img", "achieved GFLOP/s", "of peak"], rows))

    # Ratios against the IPG model of the same family.
    ratio_rows = []
    for b in batches:
        for family, ref in (("retinanet", "IPG-RetinaNet"), ("faster_rcnn", "IPG-FasterRCNN")):
            names = [n for n, m in models.items() if m["family"] == family and f"batch{b}" in m]
            refs = [n for n in names if n.startswith(ref)]
            if not refs:
                continue
            r0 = models[refs[0]][f"batch{b}"]
            for n in names:
                if n == refs[0]:
                    continue
                r = models[n][f"batch{b}"]
                ratio_rows.append([f"{refs[0]} / {n}", b, r0["forward_images_per_s"] / r["forward_images_per_s"],
                                   r0["end_to_end_images_per_s"] / r["end_to_end_images_per_s"]])
    for b in batches:
        kcv = [n for n, m in models.items() if m["kind"] == "keras_cv" and f"batch{b}" in m]
        ours = [n for n, m in models.items() if m["family"] == "retinanet" and m["kind"] == "ours"
                and f"batch{b}" in m and not n.startswith("IPG")]
        for n0 in ours:
            for n in kcv:
                r0, r = models[n0][f"batch{b}"], models[n][f"batch{b}"]
                ratio_rows.append([f"{n0} / {n}", b, r0["forward_images_per_s"] / r["forward_images_per_s"],
                                   r0["end_to_end_images_per_s"] / r["end_to_end_images_per_s"]])
    if ratio_rows:
        lines.append("")
        lines.append(format_table(["speed ratio (images/s)", "batch", "forward", "end-to-end"], ratio_rows))

    train_rows = [[n, m["train_images_per_s"]] for n, m in models.items() if "train_images_per_s" in m]
    if train_rows:
        lines.append("")
        lines.append(f"Training step (the compiled train step, as `fit` runs it, on one repeated batch, Adam, identical batch of "
                     f"{result['settings']['train_batch']} at {size}x{size}):")
        lines.append(format_table(["model", "train img/s"], train_rows))
        for family, ref in (("retinanet", "IPG-RetinaNet"), ("retinanet", "RetinaNet-"),
                            ("faster_rcnn", "IPG-FasterRCNN")):
            names = [n for n, m in models.items() if m["family"] == family and "train_images_per_s" in m]
            refs = [n for n in names if n.startswith(ref)]
            for n in names:
                if refs and n != refs[0]:
                    lines.append(f"  train speed ratio {refs[0]} / {n}: "
                                 f"{models[refs[0]]['train_images_per_s'] / models[n]['train_images_per_s']:.2f}")

    cost_rows = []
    for c in result["ipg_cost"]:
        verdict = ("PASS" if c["pass"] else "FAIL") if c.get("pass") is not None else "(no target)"
        if c["family"] == "retinanet" and c.get("pass") is None:
            verdict = "n/a (FLOPs not counted)"
        cost_rows.append([c["family"], c["added_gflops"],
                          f"{100 * c['added_flops_fraction']:+.1f} %" if c["added_flops_fraction"] is not None
                          else None, f"{c['added_params']:,}", f"{100 * c['added_params_fraction']:+.1f} %",
                          verdict + (" vs <= +15 % FLOPs" if c.get("target_fraction") else "")])
    if cost_rows:
        lines.append("")
        lines.append(f"IPG cost at {size}x{size} (IPG network vs the same network with ipg=False):")
        lines.append(format_table(["detector", "added GFLOPs", "FLOPs", "added params", "params", "target"],
                                  cost_rows))
    for key, err in result["errors"].items():
        lines.append(f"\nNOT MEASURED: {key}: {err}")
    for name, m in models.items():
        if m.get("gflops_error"):
            lines.append(f"\nGFLOPs not counted for {name}: {m['gflops_error']}")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--detectors", default="retinanet,faster_rcnn",
                        help="comma-separated: retinanet (IPG, ipg=False, keras-cv), faster_rcnn (IPG, ipg=False)")
    parser.add_argument("--batch-sizes", default="1,8", help='inference batch sizes; "" to time training only')
    parser.add_argument("--image-size", dest="image_size", type=int)
    parser.add_argument("--num-classes", dest="num_classes", type=int,
                        help="classes of every model (default 5; 80 = COCO, the post-processing worst case)")
    parser.add_argument("--retinanets", default=",".join(RETINANETS),
                        help="comma-separated RetinaNets to build: ipg, ipg_false, keras_cv (keras-cv with its "
                             "own and with our head depth)")
    parser.add_argument("--warmup1", type=int, help="warm-up calls at batch 1")
    parser.add_argument("--iters1", type=int, help="timed calls at batch 1")
    parser.add_argument("--warmup8", type=int, help="warm-up calls at batches > 1")
    parser.add_argument("--iters8", type=int, help="timed calls at batches > 1")
    parser.add_argument("--train-batch", dest="train_batch", type=int)
    parser.add_argument("--train-iters", dest="train_iters", type=int)
    parser.add_argument("--no-train", dest="train", action="store_false", help="skip the training-step timing")
    parser.add_argument("--no-flops", dest="flops", action="store_false", help="skip the graph FLOP count")
    parser.add_argument("--forward-only", action="store_true",
                        help="time the forward pass only (no end-to-end / post-processing calls)")
    parser.add_argument("--no-keras-cv-same-head", dest="keras_cv_same_head", action="store_false",
                        help="leave out keras-cv's RetinaNet with our head depth (4 convs; its default is 3)")
    parser.add_argument("--output", default=None, help="JSON path (default benchmarks/results/speed_<preset>.json)")
    args = parser.parse_args(argv)
    args.detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    unknown = set(args.detectors) - {"retinanet", "faster_rcnn"}
    if unknown:
        parser.error(f"unknown detectors {sorted(unknown)}; use retinanet and/or faster_rcnn")
    args.retinanets = [r.strip() for r in args.retinanets.split(",") if r.strip()]
    if set(args.retinanets) - set(RETINANETS):
        parser.error(f"unknown RetinaNets {sorted(set(args.retinanets) - set(RETINANETS))}; use {RETINANETS}")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]  # "": training only
    if args.output is None:
        args.output = str(Path(__file__).resolve().parent / "results" / f"speed_{args.preset}.json")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_tf()
    result = run(args)
    text = report(result)
    result["table"] = text
    write_json(args.output, result)
    Path(args.output + ".partial").unlink(missing_ok=True)  # the complete result replaces the crash copy
    print("\n" + text)
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
