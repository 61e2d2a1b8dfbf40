"""Training step with `FusedBatchNormalization` against Keras 3's BatchNormalization, interleaved.

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
    """Sends every FusedBatchNormalization of `model` down Keras' own code path; returns how many."""
    from ipg_keras.layers import FusedBatchNormalization

    layers = [l for l in model._flatten_layers(include_self=False, recursive=True)
              if isinstance(l, FusedBatchNormalization)]
    for layer in layers:
        layer._fusable = lambda *args: False
    return len(layers)


def measure(config: str, overrides: list[str], rounds: int) -> dict:
    import keras

    from ipg_keras.training import load_config
    from ipg_keras.training import train as T

    name = "synthetic_retinanet_cpu" if config == "tiny" else config
    cfg = load_config(name, (TINY if config == "tiny" else []) + overrides)
    train, _, class_names = T.build_datasets(cfg)
    x, y = next(iter(T.batch_train(cfg, train)))
    num_classes = len(class_names)
    models = {}
    for arm in ("fused", "keras"):
        keras.utils.set_random_seed(0)
        model = T.build_model(cfg, num_classes)
        if arm == "keras":
            count = keras_bn_only(model)
        model.compile(optimizer=keras.optimizers.Adam(1e-4))
        models[arm] = model
    models["keras"].set_weights(models["fused"].get_weights())
    for model in models.values():  # trace and warm up
        for _ in range(2):
            model.train_on_batch(x, y)
    times: dict[str, list[float]] = {arm: [] for arm in models}
    losses: dict[str, float] = {}
    for _ in range(rounds):
        for arm, model in models.items():
            start = time.perf_counter()
            out = model.train_on_batch(x, y)
            times[arm].append(time.perf_counter() - start)
            losses[arm] = float(out[0] if isinstance(out, (list, tuple)) else out)
    medians = {arm: sorted(t)[len(t) // 2] for arm, t in times.items()}
    return {"config": config, "overrides": overrides, "bn_layers": count, "batch": int(x.shape[0]),
            "image_size": int(x.shape[1]), "s_per_step": medians, "speedup": medians["keras"] / medians["fused"],
            "loss_after": losses, "rounds": rounds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="synthetic_retinanet_cpu,trees_retinanet",
                        help="comma-separated ipg-train configs (or 'tiny')")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE override for every config")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "fused_batchnorm.json"))
    args = parser.parse_args(argv)
    quiet_tf()
    results = []
    for config in [c.strip() for c in args.configs.split(",") if c.strip()]:
        r = measure(config, args.set, args.rounds)
        results.append(r)
        print(f"{config} {' '.join(args.set)}: {r['bn_layers']} BN layers, batch {r['batch']} at {r['image_size']} px: "
              f"fused {r['s_per_step']['fused']:.4f} s/step, Keras BN {r['s_per_step']['keras']:.4f} s/step, "
              f"speed-up {r['speedup']:.2f}x; loss after the timed steps {r['loss_after']['fused']:.5f} vs "
              f"{r['loss_after']['keras']:.5f}", flush=True)
    write_json(args.output, {"machine": machine_info(), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
