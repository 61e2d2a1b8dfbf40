"""Per-op time profile of a RetinaNet-R50 forward pass and training step: ours against keras-cv's.

Each model's compiled forward (`model(x, training=False)` in a `tf.function`)
and one `fit` step (Adam, one repeated batch, as `benchmarks/speed.py`) run
under `tf.profiler.experimental` after a warm-up call; the trace is reduced by
TensorFlow's own profiler tool (`framework_op_stats`, the TensorBoard "TF op
stats" table) to the self time of every graph op. Ops are grouped by model
component with the same names as `benchmarks/flops.py` (gradient ops under
`gradient_tape/` count to the component they differentiate, in a separate
"backward" column); ops of no model layer are the loss (matching, target
encoding, focal / box losses), the optimizer and Keras' step.

Self times are summed over the inter-op threads, so on 2 cores they can add
up to more than the wall time; read them as shares. Profiles are taken one
model after the other (not interleaved): compare shares and op types, not
absolute times across models.

    python benchmarks/op_profile.py                      # R50 at 512: forward batch 1, training batch 2
    python benchmarks/op_profile.py --preset tiny        # seconds: smoke test
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import block, format_table, machine_info, quiet_tf, write_json  # noqa: E402
from flops import build_keras_cv, component_of  # noqa: E402

OPTIMIZER = "optimizer (Adam update)"
LOSS = "loss: matching, targets, focal + box loss"


def build_models(preset: str, num_classes: int, which: list[str]) -> dict[str, Any]:
    from ipg_keras.models import IPGRetinaNet

    tiny = preset == "tiny"
    kw = dict(fpn_channels=16, head_width=16, head_depth=2,
              backbone_kwargs={"width_multiplier": 0.25, "ipg_width": 8}) if tiny else {}
    backbone = "resnet18" if tiny else "resnet50"
    out = {}
    for name in which:
        if name == "ours":
            out["ours ipg=False"] = IPGRetinaNet(num_classes, backbone, ipg=False, **kw)
        elif name == "ours3":
            out["ours ipg=False, head_depth=3"] = IPGRetinaNet(num_classes, backbone, ipg=False,
                                                                **{**kw, "head_depth": 3})
        elif name == "ipg":
            out["ours ipg=True"] = IPGRetinaNet(num_classes, backbone, ipg=True, **kw)
        elif name == "main":  # the main job's model (training/configs/synthetic_retinanet_cpu.yaml)
            from ipg_keras.training.config import load_config
            from ipg_keras.training.train import build_model

            out["main job IPG-RetinaNet"] = build_model(load_config("synthetic_retinanet_cpu"), num_classes=num_classes)
        elif name == "kcv":
            out["keras-cv (3 head convs, default)"] = build_keras_cv(preset, num_classes, 1 if tiny else 3)
        elif name == "kcv4":
            out["keras-cv, 4 head convs"] = build_keras_cv(preset, num_classes, 2 if tiny else 4)
        else:
            raise SystemExit(f"unknown model {name!r}: use ours, ours3, ipg, kcv, kcv4, main")
    return out


def classify(name: str, op_type: str) -> tuple[str, bool]:
    """(component, is_backward) of one profiled op."""
    backward = name.startswith("gradient_tape/") or "/gradient_tape/" in name
    if op_type == "IDLE":
        return "idle (threads waiting)", False
    comp = component_of(name)
    if comp != "other":
        return comp, backward
    if re.search(r"(^|/)(adam|Adam)[^/]*/", name) or op_type.startswith("ResourceApply") or \
            re.search(r"(^|/)(iteration|AssignAdd|AssignSub)", name):
        return OPTIMIZER, False
    if op_type in ("__inference", "_Retval", "_Arg", "NoOp", "Identity", "ReadVariableOp"):
        return "other", backward
    return LOSS, backward


def op_stats(logdir: str) -> list[dict[str, Any]]:
    """Rows of TensorFlow's `framework_op_stats` tool for the newest trace under `logdir`."""
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    paths = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")))
    data, ok = plugin.xspace_to_tools_data(paths[-1:], "framework_op_stats")
    if not ok:
        raise RuntimeError(f"framework_op_stats failed on {paths[-1:]}")
    table = json.loads(data)[0]
    ids = [c["id"] for c in table["cols"]]
    rows = []
    for r in table["rows"]:
        cells = {i: (c or {}).get("v") for i, c in zip(ids, r["c"])}
        if cells.get("host_or_device") != "Host":
            continue
        rows.append({"type": cells["type"], "name": cells["operation"], "count": int(cells["occurrences"]),
                     "self_us": float(cells["total_self_time"])})
    return rows


def profile(fn, calls: int) -> tuple[list[dict[str, Any]], float]:
    """Profiles `calls` calls of `fn` (already warmed up); returns (op rows, wall seconds per call)."""
    import tensorflow as tf

    logdir = tempfile.mkdtemp(prefix="op_profile_")
    try:
        tf.profiler.experimental.start(logdir)
        t0 = time.perf_counter()
        for _ in range(calls):
            block(fn())
        wall = (time.perf_counter() - t0) / calls
        tf.profiler.experimental.stop()
        rows = op_stats(logdir)
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    for r in rows:
        r["self_us"] /= calls
        r["count"] = r["count"] / calls
    return rows, wall


def summarise(rows: list[dict[str, Any]], top: int) -> dict[str, Any]:
    comps: dict[str, dict[str, float]] = defaultdict(lambda: {"forward_ms": 0.0, "backward_ms": 0.0})
    types: dict[str, float] = defaultdict(float)
    for r in rows:
        comp, backward = classify(r["name"], r["type"])
        r["component"], r["backward"] = comp, backward
        comps[comp]["backward_ms" if backward else "forward_ms"] += r["self_us"] / 1e3
        types[r["type"]] += r["self_us"] / 1e3
    total = sum(r["self_us"] for r in rows) / 1e3
    return {
        "total_self_ms": total,
        "components": dict(comps),
        "op_types": dict(sorted(types.items(), key=lambda kv: -kv[1])),
        "top_ops": sorted(rows, key=lambda r: -r["self_us"])[:top],
    }


def report(result: dict[str, Any]) -> str:
    lines = []
    for phase in ("forward", "train"):
        names = [n for n in result["models"] if phase in result["models"][n]]
        if not names:
            continue
        head = result["models"][names[0]][phase]
        lines.append(f"\n### {phase}: batch {head['batch']}, self time per call (ms; share of the op total)\n")
        comps = []
        for n in names:
            for c in result["models"][n][phase]["components"]:
                if c not in comps:
                    comps.append(c)
        rows = []
        for c in comps:
            cells = []
            for n in names:
                s = result["models"][n][phase]
                v = s["components"].get(c)
                if v is None:
                    cells.append("-")
                    continue
                tot = v["forward_ms"] + v["backward_ms"]
                txt = f"{tot:.0f} ({100 * tot / s['total_self_ms']:.1f} %)"
                if phase == "train":
                    txt += f" [fwd {v['forward_ms']:.0f} / bwd {v['backward_ms']:.0f}]"
                cells.append(txt)
            rows.append([c] + cells)
        rows.append(["**sum of op self times**"] + [f"{result['models'][n][phase]['total_self_ms']:.0f}" for n in names])
        rows.append(["wall time per call"] + [f"{1e3 * result['models'][n][phase]['wall_s']:.0f}" for n in names])
        lines.append(format_table(["component"] + names, rows))
        for n in names:
            s = result["models"][n][phase]
            lines.append(f"\n{n}, {phase}: op types by self time: " + ", ".join(
                f"{t} {v:.0f} ms" for t, v in list(s["op_types"].items())[:12]))
            lines.append(f"{n}, {phase}: top ops: " + "; ".join(
                f"{r['name']} ({r['type']}, {r['component']}) {r['self_us'] / 1e3:.0f} ms"
                for r in s["top_ops"][:8]))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("full", "tiny"), default="full")
    parser.add_argument("--models", default="ours,kcv", help="comma-separated: ours, ours3, ipg, kcv, kcv4, main")
    parser.add_argument("--image-size", type=int, default=None, help="default 512 (128 for --preset tiny)")
    parser.add_argument("--phases", default="forward,train")
    parser.add_argument("--forward-batch", type=int, default=1)
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--calls", type=int, default=2, help="profiled forward calls (training: 1 step)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    quiet_tf()
    import keras
    import numpy as np
    import tensorflow as tf

    from speed import training_batch

    size = args.image_size or (128 if args.preset == "tiny" else 512)
    num_classes = 5
    phases = [p for p in args.phases.split(",") if p]
    result: dict[str, Any] = {"preset": args.preset, "image_size": size, "machine": machine_info(), "models": {}}
    print(f"load average at start: {result['machine']['load_average_start']}", flush=True)
    models = build_models(args.preset, num_classes, [m for m in args.models.split(",") if m])
    rng = np.random.default_rng(0)
    for name, model in models.items():
        res: dict[str, Any] = {}
        if "forward" in phases:
            x = tf.constant(rng.uniform(0, 255, (args.forward_batch, size, size, 3)).astype("float32"))
            fwd = tf.function(lambda x, m=model: m(x, training=False))
            block(fwd(x))
            rows, wall = profile(lambda: fwd(x), args.calls)
            res["forward"] = {"batch": args.forward_batch, "wall_s": wall, **summarise(rows, args.top)}
            print(f"{name}: forward {wall:.2f} s/call, load {os.getloadavg()[0]:.1f}", flush=True)
        if "train" in phases:
            images, targets = training_batch(args.train_batch, size, num_classes)
            ds = tf.data.Dataset.from_tensors((images, targets)).repeat()
            if "keras-cv" in name:
                model.compile(classification_loss="focal", box_loss="smoothl1",
                              optimizer=keras.optimizers.Adam(1e-4), jit_compile=args.jit_compile)
            else:
                model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=args.jit_compile)
            model.fit(ds, steps_per_epoch=1, epochs=1, verbose=0)  # traces the train function
            rows, wall = profile(lambda: model.fit(ds, steps_per_epoch=1, epochs=1, verbose=0).history["loss"], 1)
            res["train"] = {"batch": args.train_batch, "wall_s": wall, **summarise(rows, args.top)}
            print(f"{name}: train step {wall:.2f} s, load {os.getloadavg()[0]:.1f}", flush=True)
        result["models"][name] = res
    result["load_average_end"] = list(os.getloadavg())
    text = report(result)
    result["table"] = text
    out = args.output or str(Path(__file__).resolve().parent / "results" / f"op_profile_{args.preset}.json")
    write_json(out, result)
    print(text + f"\n\nload average at end: {result['load_average_end']}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
