"""XLA (`jit_compile=True`) against the default graph for the RetinaNet train step: speed and loss curve.

Two copies of one model (identical initial weights, same optimizer) are
compiled with `jit_compile=False` and `jit_compile=True`. Both first train the
same fixed sequence of batches (`--curve-steps` steps, one step per epoch so
that every loss is that step's own): the per-step losses are compared. Then
`fit` calls of `--steps-per-call` steps are timed interleaved (one call of each
per round, medians), so the ratio is fair on a shared machine.

    python benchmarks/xla_train.py --model main     # the main job's IPG-RetinaNet (synthetic_retinanet_cpu), batch 8 at 256
    python benchmarks/xla_train.py --model r50      # RetinaNet-R50 ipg=False, batch 2 at 512
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import format_table, machine_info, quiet_tf, time_interleaved, write_json  # noqa: E402

import numpy as np  # noqa: E402


def build(model_name: str):
    """(model factory, batch size, image size, learning rate) of one benchmarked setting."""
    if model_name == "main":
        from ipg_keras.data.synthetic import CLASS_NAMES
        from ipg_keras.training.config import load_config
        from ipg_keras.training.train import build_model

        cfg = load_config("synthetic_retinanet_cpu")
        return (lambda: build_model(cfg, num_classes=len(CLASS_NAMES))), cfg.train.batch_size, cfg.data.image_size, \
            cfg.train.learning_rate
    if model_name == "r50":
        from ipg_keras.models import IPGRetinaNet

        return (lambda: IPGRetinaNet(5, "resnet50", ipg=False)), 2, 512, 1e-4
    if model_name == "tiny":
        from ipg_keras.models import IPGRetinaNet

        return (lambda: IPGRetinaNet(5, "resnet18", ipg=True, fpn_channels=16, head_width=16, head_depth=1,
                                     backbone_kwargs={"width_multiplier": 0.25, "ipg_width": 8})), 2, 128, 1e-3
    raise SystemExit(f"unknown model {model_name!r}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("main", "r50", "tiny"), default="main")
    parser.add_argument("--curve-steps", type=int, default=None, help="steps of the loss-curve comparison")
    parser.add_argument("--steps-per-call", type=int, default=None)
    parser.add_argument("--iters", type=int, default=None, help="timed calls per arm")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    quiet_tf()
    import keras
    import tensorflow as tf

    from ipg_keras.data import make_batches, synthetic_dataset

    defaults = {"main": (40, 10, 5), "r50": (3, 1, 3), "tiny": (5, 2, 2)}[args.model]
    curve_steps = args.curve_steps or defaults[0]
    k = args.steps_per_call or defaults[1]
    iters = args.iters or defaults[2]
    factory, batch, size, lr = build(args.model)
    result: dict[str, Any] = {"model": args.model, "batch": batch, "image_size": size, "machine": machine_info()}
    print(f"load average at start: {result['machine']['load_average_start']}", flush=True)

    elements = synthetic_dataset("train", num_images=batch * curve_steps, image_size=size,
                                 max_size=min(64, size - 2))
    batches = make_batches(elements, batch, size, max_boxes=32, drop_remainder=True).cache()
    fixed = batches.repeat()

    keras.utils.set_random_seed(0)
    models = {}
    for jit in (False, True):
        model = factory()
        model(tf.zeros([1, size, size, 3]))
        if models:
            model.set_weights(next(iter(models.values())).get_weights())
        model.compile(optimizer=keras.optimizers.Adam(lr), jit_compile=jit)
        models["xla" if jit else "graph"] = model

    curves, first_call = {}, {}
    for name, model in models.items():
        t0 = time.perf_counter()
        hist = model.fit(batches.repeat(), steps_per_epoch=1, epochs=curve_steps, verbose=0).history
        first_call[name] = time.perf_counter() - t0
        curves[name] = [float(v) for v in hist["loss"]]
        print(f"{name}: {curve_steps} steps (incl. tracing/compiling) {first_call[name]:.1f} s, "
              f"losses {curves[name][0]:.4f} .. {curves[name][-1]:.4f}", flush=True)
    a, b = np.array(curves["graph"]), np.array(curves["xla"])
    rel = np.abs(a - b) / np.maximum(np.abs(a), 1e-6)
    result["loss_curves"] = curves
    result["max_relative_loss_difference"] = float(rel.max())
    result["first_step_relative_loss_difference"] = float(rel[0])
    result["curve_seconds_including_compile"] = first_call

    fns = {name: (lambda m=model: m.fit(fixed, steps_per_epoch=k, epochs=1, verbose=0).history["loss"])
           for name, model in models.items()}
    timed = time_interleaved(fns, 1, iters, label=f"{args.model} train")
    result["timings"] = timed
    result["steps_per_call"] = k
    result["seconds_per_step"] = {n: t["median_s"] / k for n, t in timed.items()}
    result["xla_speedup"] = timed["graph"]["median_s"] / timed["xla"]["median_s"]
    result["load_average_end"] = list(os.getloadavg())
    rows = [[n, result["seconds_per_step"][n], batch / result["seconds_per_step"][n], first_call[n]]
            for n in models]
    text = (format_table(["train step", "s / step (median)", "img/s", f"first {curve_steps} steps incl. compile (s)"],
                         rows)
            + f"\n\nXLA speed-up (graph time / XLA time, interleaved): {result['xla_speedup']:.2f}"
            + f"\nloss curve over {curve_steps} steps: max relative difference {rel.max():.2e} "
              f"(step 1: {rel[0]:.2e}); final loss graph {a[-1]:.4f}, XLA {b[-1]:.4f}"
            + f"\nload average: start {result['machine']['load_average_start'][0]:.1f}, "
              f"end {result['load_average_end'][0]:.1f}")
    result["table"] = text
    out = args.output or str(Path(__file__).resolve().parent / "results" / f"xla_train_{args.model}.json")
    write_json(out, result)
    print("\n" + text + f"\n\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
