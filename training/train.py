"""`ipg-train CONFIG [--output DIR] [--set key=value ...]`: train, evaluate, export.

The main job: `ipg-train synthetic_retinanet_cpu` trains IPG-RetinaNet on the
embedded synthetic small-object set, evaluates COCO metrics on its validation
split, writes `metrics.json`, a PNG of detections and training curves, and a
SavedModel under `saved_models/`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.config import ConfigError, ExperimentConfig, load_config, save_config

log = logging.getLogger("ipg_keras.train")


# ---------------------------------------------------------------- distribution
def build_strategy(name: str) -> tf.distribute.Strategy:
    """`default` (one device), `mirrored` (all local devices), `multi_worker` (TF_CONFIG), `tpu`."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError(
                "train.strategy=multi_worker needs the TF_CONFIG environment variable "
                '({"cluster": {"worker": [...]}, "task": {"type": "worker", "index": i}}).'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ConfigError(f"Unknown train.strategy {name!r}.")


# ----------------------------------------------------------------------- data
def build_datasets(cfg: ExperimentConfig):
    """Returns `(train_elements, val_elements, class_names)` as element datasets."""
    from ipg_keras import data as ipg_data

    d = cfg.data
    if d.source == "synthetic":
        common = dict(
            image_size=d.image_size, seed=cfg.train.seed, min_size=d.min_object_size,
            max_size=d.max_object_size, max_objects=d.max_objects,
        )
        train = ipg_data.synthetic_dataset("train", num_images=d.num_train_images, **common)
        val = ipg_data.synthetic_dataset("val", num_images=d.num_val_images, **common)
        return train, val, list(ipg_data.SYNTHETIC_CLASS_NAMES)
    if d.source == "tfds":
        if not d.tfds_name:
            raise ConfigError("data.source=tfds needs data.tfds_name (e.g. coco/2017 or voc/2007).")
        train = ipg_data.from_tfds(d.tfds_name, d.train_split, data_dir=d.tfds_data_dir)
        val = ipg_data.from_tfds(d.tfds_name, d.val_split, data_dir=d.tfds_data_dir)
        return train, val, list(train.class_names)
    if d.source in ("coco_json", "pascal_voc"):
        if not d.train_annotations:
            raise ConfigError(f"data.source={d.source} needs data.train_annotations.")
        if d.source == "coco_json":
            train = ipg_data.from_coco_json(d.train_annotations, d.train_images)
            val = ipg_data.from_coco_json(d.val_annotations or d.train_annotations, d.val_images or d.train_images)
        else:
            train = ipg_data.from_pascal_voc(d.train_annotations, class_names=d.class_names)
            names = d.class_names or list(train.class_names)
            val = ipg_data.from_pascal_voc(d.val_annotations or d.train_annotations, class_names=names)
        return train, val, list(d.class_names or train.class_names)
    raise ConfigError(f"Unknown data.source {d.source!r}.")


def batch_train(cfg: ExperimentConfig, elements):
    from ipg_keras.data import make_batches

    d = cfg.data
    if d.tile_size:
        from ipg_keras.data import tile_dataset

        elements = tile_dataset(elements, tile_size=d.tile_size, overlap=d.tile_overlap, min_visible=d.min_visible)
    return make_batches(
        elements, cfg.train.batch_size, d.image_size, augment=d.augment,
        shuffle=d.shuffle_buffer or False, cache=d.cache, seed=cfg.train.seed, repeat=True,
        drop_remainder=cfg.train.strategy != "default",
    )


def batch_eval(cfg: ExperimentConfig, elements):
    from ipg_keras.data import make_batches

    if cfg.eval.max_images:
        elements = elements.take(cfg.eval.max_images)
    return make_batches(elements, cfg.eval.batch_size, cfg.data.image_size, augment=False, cache=True)


# ---------------------------------------------------------------------- model
def build_model(cfg: ExperimentConfig, num_classes: int) -> keras.Model:
    from ipg_keras.models import IPGRetinaNet

    m = cfg.model
    backbone_kwargs = dict(
        ipg_levels=m.ipg_levels, ipg_width=m.ipg_width, ipg_depth=m.ipg_depth, ipg_out_ratio=m.ipg_out_ratio,
        fusion=m.fusion, pyramid_method=m.pyramid_method, width_multiplier=m.width_multiplier,
    )
    common = dict(
        num_classes=num_classes, backbone=m.backbone, ipg=m.ipg, backbone_weights=m.backbone_weights,
        backbone_kwargs=backbone_kwargs, score_threshold=m.score_threshold,
        nms_iou_threshold=m.nms_iou_threshold, max_detections=m.max_detections,
    )
    if m.type == "retinanet":
        return IPGRetinaNet(
            **common, min_level=m.min_level, max_level=m.max_level, fpn_channels=m.fpn_channels,
            head_width=m.head_width, head_depth=m.head_depth, head_norm=m.head_norm, anchor_size=m.anchor_size,
            box_loss=m.box_loss, box_loss_weight=m.box_loss_weight,
        )
    if m.type == "faster_rcnn":
        from ipg_keras.models import IPGFasterRCNN  # noqa: WPS433 - optional detector

        return IPGFasterRCNN(**common, fpn_channels=m.fpn_channels)
    raise ConfigError(f"Unknown model.type {m.type!r}.")


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 into a step, cosine or constant schedule (per optimizer step)."""

    def __init__(self, base_lr, warmup_steps, total_steps, kind="step", boundaries=(), decay_rate=0.1):
        self.base_lr = float(base_lr)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.kind = kind
        self.boundaries = [int(b) for b in boundaries]
        self.decay_rate = float(decay_rate)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        lr = tf.constant(self.base_lr)
        if self.kind == "cosine":
            progress = tf.clip_by_value(
                (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps), 0.0, 1.0
            )
            lr = self.base_lr * 0.5 * (1.0 + tf.cos(np.pi * progress))
        elif self.kind == "step":
            for b in self.boundaries:
                lr = tf.where(step >= b, lr * self.decay_rate, lr)
        if self.warmup_steps > 0:
            lr = lr * tf.minimum(1.0, (step + 1.0) / self.warmup_steps)
        return lr

    def get_config(self):
        return {
            "base_lr": self.base_lr, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
            "kind": self.kind, "boundaries": self.boundaries, "decay_rate": self.decay_rate,
        }


def build_optimizer(cfg: ExperimentConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    t = cfg.train
    schedule = WarmupSchedule(
        t.learning_rate, t.warmup_steps, t.epochs * steps_per_epoch, t.schedule,
        [e * steps_per_epoch for e in t.decay_epochs], t.decay_rate,
    )
    clip = {"clipnorm": t.clipnorm} if t.clipnorm else {}
    if t.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=t.momentum, weight_decay=t.weight_decay or None, **clip)
    if t.optimizer == "adam":
        return keras.optimizers.Adam(schedule, **clip)
    return keras.optimizers.AdamW(schedule, weight_decay=t.weight_decay, **clip)


class TimeLimit(keras.callbacks.Callback):
    """Stops training cleanly (after the current batch) once `minutes` of wall time have passed."""

    def __init__(self, minutes: float):
        super().__init__()
        self.seconds = minutes * 60.0
        self.start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self.start > self.seconds:
            self.model.stop_training = True


# ------------------------------------------------------------------------ run
def run(cfg: ExperimentConfig, output: str | Path) -> dict[str, Any]:
    """Trains, evaluates and exports one experiment; returns the metrics written to metrics.json."""
    from ipg_keras.evaluation import COCOMetricsCallback, evaluate_model
    from ipg_keras.visualization import plot_history, save_detection_grid

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    save_config(cfg, output / "config.yaml")
    keras.utils.set_random_seed(cfg.train.seed)
    if cfg.train.mixed_precision:
        keras.mixed_precision.set_global_policy(cfg.train.mixed_precision)
    start = time.time()

    strategy = build_strategy(cfg.train.strategy)
    train_elements, val_elements, class_names = build_datasets(cfg)
    num_classes = cfg.model.num_classes or len(class_names)
    train_ds = batch_train(cfg, train_elements)
    val_ds = batch_eval(cfg, val_elements)
    steps = cfg.train.steps_per_epoch
    if steps is None:
        n = int(train_elements.cardinality())
        if n <= 0:
            raise ConfigError("train.steps_per_epoch must be set for datasets of unknown size.")
        steps = max(1, n // cfg.train.batch_size)

    with strategy.scope():
        model = build_model(cfg, num_classes)
        # Build the weights now: BackupAndRestore needs them before fit() to restore into.
        model(tf.zeros([1, cfg.data.image_size, cfg.data.image_size, 3]), training=False)
        model.compile(optimizer=build_optimizer(cfg, steps), jit_compile=cfg.train.jit_compile)

    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.BackupAndRestore(str(output / "backup"), save_freq="epoch", delete_checkpoint=False),
        keras.callbacks.CSVLogger(str(output / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(output / "tensorboard"), update_freq="epoch"),
    ]
    if cfg.eval.every_n_epochs:
        callbacks.append(
            COCOMetricsCallback(val_ds, every_n_epochs=cfg.eval.every_n_epochs, num_classes=num_classes)
        )
    callbacks.append(keras.callbacks.ModelCheckpoint(str(output / "last.keras"), save_freq="epoch"))
    if cfg.train.max_minutes:
        callbacks.append(TimeLimit(cfg.train.max_minutes))

    history = model.fit(
        train_ds, epochs=cfg.train.epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=cfg.train.verbose
    )
    train_seconds = time.time() - start

    metrics = evaluate_model(model, val_ds, num_classes=num_classes, class_names=class_names, verbose=True)
    result = {
        **{k: metrics[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")},
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": None,
        "epochs_completed": len(history.history.get("loss", [])),
        "model": cfg.model.type,
        "backbone": cfg.model.backbone,
        "ipg": cfg.model.ipg,
        "num_val_images": int(sum(int(tf.shape(b[0])[0]) for b in val_ds)),
    }

    images, targets = next(iter(val_ds))
    predictions = model.predict_on_batch(images)
    save_detection_grid(
        images.numpy(), predictions, output / "detections.png", class_names=class_names,
        ground_truths={k: v.numpy() for k, v in targets.items()}, max_images=cfg.eval.num_visualized,
    )
    if history.history:
        plot_history(history.history, output / "training_curves.png", title=cfg.name)

    model.save(output / "model.keras")
    if cfg.export.saved_model:
        from ipg_keras.export import export_saved_model

        export_dir = Path(cfg.export.directory) / cfg.name
        export_saved_model(model, export_dir)
        result["saved_model"] = str(export_dir)
    result["wall_seconds"] = round(time.time() - start, 1)
    with open(output / "metrics.json", "w") as f:
        json.dump(result, f, indent=2)
    log.info("metrics: %s", json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ipg-train", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="YAML path, or a name in training/configs/ (e.g. synthetic_retinanet_cpu)")
    parser.add_argument("--output", default=None, help="run folder (default runs/<config name>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=2 (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as error:
        print(f"ipg-train: {error}", file=sys.stderr)
        return 2
    output = args.output or os.path.join("runs", cfg.name)
    result = run(cfg, output)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
