"""`ipg-train CONFIG [--output DIR] [--set key=value ...]`: train, evaluate, export.

The main job: `ipg-train synthetic_retinanet_cpu` trains IPG-RetinaNet on the
embedded synthetic small-object set, evaluates COCO metrics on its validation
split, writes `metrics.json`, a PNG of detections and training curves, and a
SavedModel under `saved_models/`.

Distributed training runs on tf.distribute (`train.strategy`): `mirrored` (all
local GPUs, or `train.cpu_devices` logical CPUs), `multi_worker` (processes
described by TF_CONFIG, started with the same command on every machine) and
`tpu`. `train.batch_size` is the global batch. A run killed at any point and
started again with the same command resumes from `<output>/checkpoints`,
continues the training data stream where it stopped (it does not replay the
first batches) and ends at the configured step count. `export.saved_model`
writes `<export.directory>/<name>/`, `export.tflite: [float32, int8, ...]`
(or `true` for float32) writes `<export.directory>/<name>_<precision>.tflite`.
Output folder:

    config.yaml          the resolved config
    checkpoints/         resumable training state (every N steps and each epoch)
    progress.json        steps done / epochs completed at the last checkpoint
    history.jsonl/.csv   per-epoch losses, lr and val_* metrics (all attempts merged)
    tensorboard/         TensorBoard logs
    last.keras, best.keras (+ best.keras.json)   latest / best-val_AP models
    model.keras, metrics.json, detections.png, training_curves.png
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from ipg_keras.training.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ipg-train", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="YAML path, or a name in training/configs/ (e.g. synthetic_retinanet_cpu)")
    parser.add_argument("--output", default=None, help="run folder (default runs/<config name>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=2 (repeatable)")
    parser.add_argument("--check-anchors", action="store_true",
                        help="print how the anchors fit the training boxes (best-anchor IoU, share without an "
                             "anchor at model.positive_iou) and fitted anchors, then exit without training")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as error:
        print(f"ipg-train: {error}", file=sys.stderr)
        return 2
    if args.check_anchors:
        from ipg_keras.training.anchor_check import anchor_check_report

        try:
            text, _ = anchor_check_report(cfg)
        except (ConfigError, ValueError, FileNotFoundError) as error:
            print(f"ipg-train --check-anchors: {error}", file=sys.stderr)
            return 2
        print(text)
        return 0
    output = args.output or os.path.join("runs", cfg.name)
    from ipg_keras.training.train import run  # TensorFlow starts here, not for --help or a bad config

    try:
        result = run(cfg, output)
    except ConfigError as error:  # found once the strategy is known (e.g. batch vs replicas)
        print(f"ipg-train: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
