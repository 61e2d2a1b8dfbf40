"""Training step with `BatchNormalization` against Keras 3's BatchNormalization, interleaved.

    python benchmarks/fused_batchnorm.py                                  # main job and trees recipe
    python benchmarks/fused_batchnorm.py --configs synthetic_retinanet_cpu --set model.ipg=false
    python benchmarks/fused_batchnorm.py --configs tiny --rounds 1        # smoke test

Per config: two copies of the same model with the same initial weights and
optimizer, one whose BN layers take the fused path (the package default), one
forced onto Keras' own BatchNormalization code (`_fusable` off per layer).
One `train_on_batch` of each per round on the same batch, medians of
`--rounds` rounds; then both losses after the timed steps (they trained on the
same batches, so they should agree to float rounding). Prints one line per
config and writes `benchmarks/results/fused_batchnorm.json`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine_info, quiet_tf, write_json  # noqa: E402

TINY = ["model.width_multiplier=0.125", "model.ipg_width=4", "model.fpn_channels=8", "model.head_width=8",
        "model.head_depth=1", "data.image_size=128", "data.num_train_images=8", "data.num_val_images=2",
        "train.batch_size=2"]


def keras_bn_only(model) -> int:
    """Sends every BatchNormalization of `model` down Keras' own code path; returns how many."""
    from ipg_keras.layers import BatchNormalization

    layers = [l for l in model._flatten_layers(include_self=False, recursive=True)
              if isinstance(l, BatchNormalization)]
    for layer in layers:
        layer._fusable = lambda *args: False
    return len(layers)


def _build(config: str, overrides: list[str], batch: int | None):
    """(model builder, images, targets or None) of one benchmarked configuration."""
    if config == "r50":
        import tensorflow as tf
        from speed import build_ipg_retinanet

        images = tf.random.uniform((batch or 1, 512, 512, 3), 0, 255, seed=0)
        return (lambda: build_ipg_retinanet("full", True, 5, "resnet50")), images, None
    from ipg_keras.training import load_config
    from ipg_keras.training import train as T

    name = "synthetic_retinanet_cpu" if config == "tiny" else config
    cfg = load_config(name, (TINY if config == "tiny" else []) + overrides)
    train, _, class_names = T.build_datasets(cfg)
    images, targets = next(iter(T.batch_train(cfg, train)))
    if batch:
        images, targets = images[:batch], {k: v[:batch] for k, v in targets.items()}
    return (lambda: T.build_model(cfg, len(class_names))), images, targets


def measure(config: str, overrides: list[str], rounds: int, batch: int | None = None,
            fuse_all_inference: bool = False) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from ipg_keras.layers import BatchNormalization

    build, x, y = _build(config, overrides, batch)
    models = {}
    for arm in ("fused", "keras"):
        keras.utils.set_random_seed(0)
        model = build()
        model(x[:1], training=False)
        if arm == "keras":
            count = keras_bn_only(model)
        elif fuse_all_inference:
            for layer in model._flatten_layers(include_self=False, recursive=True):
                if isinstance(layer, BatchNormalization):
                    layer.fuse_inference = True
        if y is not None:
            model.compile(optimizer=keras.optimizers.Adam(1e-4))
        models[arm] = model
    rng = np.random.default_rng(0)
    for layer in models["fused"]._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):  # statistics other than 0 / 1, as after training
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
    models["keras"].set_weights(models["fused"].get_weights())
    forward = {arm: tf.function(lambda images, m=model: m(images, training=False)) for arm, model in models.items()}
    outputs = {arm: f(x) for arm, f in forward.items()}
    max_diff = max(float(np.max(np.abs(np.asarray(outputs["fused"][k]) - np.asarray(outputs["keras"][k]))))
                   for k in outputs["fused"])
    calls = {f"forward_{arm}": (lambda f=f: f(x)) for arm, f in forward.items()}
    if y is not None:
        calls.update({f"train_{arm}": (lambda m=model: m.train_on_batch(x, y)) for arm, model in models.items()})
    for call in calls.values():  # trace and warm up
        call()
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    losses: dict[str, float] = {}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            out = call()
            times[name].append(time.perf_counter() - start)
            if name.startswith("train_"):
                losses[name[6:]] = float(out[0] if isinstance(out, (list, tuple)) else out)
    medians = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    result = {"config": config, "overrides": overrides, "bn_layers": count, "batch": int(x.shape[0]),
              "image_size": int(x.shape[1]), "fuse_all_inference": fuse_all_inference, "s_per_call": medians,
              "forward_speedup": medians["forward_keras"] / medians["forward_fused"],
              "forward_max_abs_diff": max_diff, "rounds": rounds}
    if y is not None:
        result.update(train_speedup=medians["train_keras"] / medians["train_fused"], loss_after=losses)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="synthetic_retinanet_cpu,trees_retinanet",
                        help="comma-separated ipg-train configs (or 'tiny')")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE override for every config")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batch", type=int, default=None, help="images per call (default: the config's batch)")
    parser.add_argument("--fuse-all-inference", action="store_true",
                        help="r50: also fuse the BN layers after biased convs in inference")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "fused_batchnorm.json"))
    args = parser.parse_args(argv)
    quiet_tf()
    results = []
    for config in [c.strip() for c in args.configs.split(",") if c.strip()]:
        r = measure(config, args.set, args.rounds, args.batch, args.fuse_all_inference)
        results.append(r)
        t = r["s_per_call"]
        line = (f"{config} {' '.join(args.set)}: {r['bn_layers']} BN layers, batch {r['batch']} at "
                f"{r['image_size']} px: forward fused {t['forward_fused']:.4f} s, Keras BN {t['forward_keras']:.4f} s, "
                f"speed-up {r['forward_speedup']:.2f}x (outputs differ by {r['forward_max_abs_diff']:.1e})")
        if "train_speedup" in r:
            line += (f"; train step fused {t['train_fused']:.4f} s, Keras BN {t['train_keras']:.4f} s, speed-up "
                     f"{r['train_speedup']:.2f}x; loss after the timed steps {r['loss_after']['fused']:.5f} vs "
                     f"{r['loss_after']['keras']:.5f}")
        print(line, flush=True)
    write_json(args.output, {"machine": machine_info(), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
