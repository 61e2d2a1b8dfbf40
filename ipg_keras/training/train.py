"""Training: `run(config, output)` builds data, model and optimizer from an
experiment config, trains with resumable checkpoints, evaluates and exports.

The command line is `ipg-train` (`ipg_keras.cli.train`); its help lists the
run folder's contents. Distributed training runs on tf.distribute
(`train.strategy`): `mirrored`, `multi_worker` and `tpu`; `train.batch_size`
is the global batch. A run killed at any point and started again with the same
output folder resumes from `<output>/checkpoints`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
import types
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from ipg_keras.training.callbacks import (
    apply_average_weights,
    BestCheckpoint,
    ChiefCOCOMetrics,
    HistoryLogger,
    LastCheckpoint,
    StepCheckpoint,
    SwapAverageWeights,
    TimeLimit,
    TrainingState,
    WorkerContext,
    chief_value,
    history_series,
    history_steps,
    make_predict_fn,
    read_history,
    save_model_file,
    write_history_csv,
    write_json_atomic,
)
from ipg_keras.training.config import ConfigError, ExperimentConfig, per_replica_batch_size, save_config

log = logging.getLogger("ipg_keras.train")

# Curves in training_curves.png besides the losses (history.csv has all of them).
PLOTTED_METRICS = ("val_AP", "val_AP50", "val_AP75", "val_APs")


# ---------------------------------------------------------------- distribution
def configure_cpu_devices(count: int) -> None:
    """Splits the host CPU into `count` logical devices (must run before TensorFlow initialises)."""
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != count:
            raise ConfigError(
                f"train.cpu_devices={count}: TensorFlow is already initialised with {have} CPU device(s) in "
                "this process; logical devices can only be set up first thing (run ipg-train in a new process)."
            ) from None


def build_strategy(name: str) -> tf.distribute.Strategy:
    """`default` (one device), `mirrored` (all local GPUs, else all logical CPUs), `multi_worker` (TF_CONFIG), `tpu`."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        # MirroredStrategy() alone would use one CPU; train.cpu_devices makes several.
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError(
                "train.strategy=multi_worker needs the TF_CONFIG environment variable "
                '({"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": i}}), '
                "one process per entry, all started with the same command."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ConfigError(f"Unknown train.strategy {name!r}.")


def apply_distribution_fixes(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
    """Works around Keras 3 (3.15) behaviour of `fit()` under a tf.distribute strategy.

    1. `fit()` pulls a first batch from the distributed iterator to learn the
       input shapes, then restarts the iterator. The restart starts a new pass of
       the seeded shuffle and augmentation, so the batches differ from a
       single-device run with the same seed; and under MultiWorkerMirroredStrategy
       the reduction of that batch fails outright (it cannot reduce a nested
       structure: keras-team/keras#20585, tensorflow/tensorflow#72388). Here the
       shapes come from the dataset's element_spec, without iterating.
    2. Under MultiWorkerMirroredStrategy the train step reduces its scalar
       metrics with `strategy.reduce(MEAN, axis=0)`, which fails on scalars;
       they are reduced with axis=None (the same mean over replicas).
    """
    if getattr(model, "_distribute_strategy", None) is None:  # default strategy: Keras does not iterate
        return

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if data_batch is None and iterator is not None:
            data_batch = iterator.data_adapter.get_tf_dataset().element_spec
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = types.MethodType(maybe_symbolic_build, model)

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = getattr(tf_trainer.reduce_per_replica, "__wrapped__", tf_trainer.reduce_per_replica)

    def reduce_per_replica(values, strategy_, reduction):
        if reduction in ("auto", "mean") and isinstance(strategy_, tf.distribute.MultiWorkerMirroredStrategy):
            def reduce(v):
                if isinstance(v, tf.distribute.DistributedValues) or tf.is_tensor(v):
                    return strategy_.reduce("MEAN", v, axis=None)
                return v

            return tree.map_structure(reduce, values)
        return original(values, strategy_, reduction)

    reduce_per_replica.__wrapped__ = original
    tf_trainer.reduce_per_replica = reduce_per_replica


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
            # data.train_images / val_images: a folder searched for the images first (VOC's JPEGImages).
            train = ipg_data.from_pascal_voc(d.train_annotations, class_names=d.class_names,
                                             image_dir=d.train_images)
            names = d.class_names or list(train.class_names)
            val = ipg_data.from_pascal_voc(d.val_annotations or d.train_annotations, class_names=names,
                                           image_dir=d.val_images or d.train_images)
        return train, val, list(d.class_names or train.class_names)
    raise ConfigError(f"Unknown data.source {d.source!r}.")


def batch_train(cfg: ExperimentConfig, elements, multi_worker: bool = False, start_step: int = 0):
    """Infinite training batches of the GLOBAL batch size (fit() splits each one over the replicas).

    drop_remainder keeps every batch full and static: with `repeat` before
    batching only a finite `take` could leave a partial batch, but a static
    batch dimension also keeps XLA and the per-replica split simple.

    The stream is a function of the config alone (seeded shuffle and
    augmentation): `start_step=k` gives its batches from step `k` on, so a
    resumed run trains on the batches an uninterrupted run would have seen
    instead of replaying the data from the start (a bad image would otherwise
    stop every resume at the same step).
    """
    from ipg_keras.data import make_batches

    d = cfg.data
    augment = augment_config(d) if d.augment else False
    cache = d.cache
    if d.tile_size and d.sampling == "random":
        from ipg_keras.data import random_tiles

        if cache:  # the decoded large images, before the windows (new ones every pass)
            elements = elements.cache()
            cache = False
        scale_range = tuple(d.scale_range) if d.augment else (1.0, 1.0)
        elements = random_tiles(elements, d.tile_size, tiles_per_image=d.tiles_per_image,
                                overlap=tile_overlap_pixels(d), scale_range=scale_range,
                                min_visible=d.min_visible, seed=cfg.train.seed)
        if augment:  # the windows are already scaled
            augment = dataclasses.replace(augment, scale_range=(1.0, 1.0))
    elif d.tile_size:
        from ipg_keras.data import tile_dataset

        elements = tile_dataset(elements, tile_size=d.tile_size, overlap=tile_overlap_pixels(d), min_visible=d.min_visible)
    max_boxes = d.max_boxes
    if max_boxes is None and (cfg.train.jit_compile or cfg.train.strategy == "tpu"):
        max_boxes = 100  # XLA compiles one program per input shape: keep the target shape fixed
    ds = make_batches(
        elements, cfg.train.batch_size, d.image_size, augment=augment,
        shuffle=d.shuffle_buffer or False, cache=cache, seed=cfg.train.seed, repeat=True,
        drop_remainder=True, max_boxes=max_boxes, skip=start_step,
    )
    if multi_worker:
        # Every worker builds the same seeded pipeline and keeps its share of each
        # global batch. (FILE sharding would need at least one input file per worker.)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        ds = ds.with_options(options)
    return ds


def augment_config(d):
    """The `AugmentConfig` of the `data` section (flips, 90° turns, scale jitter, copy-paste, blur, colour)."""
    from ipg_keras.data import AugmentConfig

    return AugmentConfig(
        horizontal_flip=d.horizontal_flip, vertical_flip=d.vertical_flip, rotate90=d.rotate90,
        scale_range=tuple(d.scale_range), brightness=d.brightness, contrast=d.contrast,
        saturation=d.saturation, hue=d.hue, channel_gain=d.channel_gain, blur=d.blur,
        blur_sigma=tuple(d.blur_sigma), copy_paste=d.copy_paste, copy_paste_count=d.copy_paste_count,
    )


def tile_overlap_pixels(d) -> int:
    """`data.tile_overlap` is a fraction of `data.tile_size`; the tilers take pixels."""
    return int(round(d.tile_overlap * d.tile_size))


def batch_eval(cfg: ExperimentConfig, elements):
    from ipg_keras.data import make_batches

    if cfg.eval.max_images:
        elements = elements.take(cfg.eval.max_images)
    return make_batches(elements, cfg.eval.batch_size, cfg.data.image_size, augment=False, cache=True)


def make_sliced_evaluate_fn(cfg: ExperimentConfig, val_elements, predict_fn, num_classes: int, class_names,
                            verbose: bool = False):
    """`() -> COCO metrics` of the whole validation images (at most `eval.max_images`), each
    predicted by sliced inference with the training tiles' size and overlap.

    The images are decoded once, on the first call, and kept in memory: a
    periodic evaluation then costs only the tiles' forward passes and COCOeval.
    """
    from ipg_keras.evaluation import evaluate_sliced

    cache: list = []

    def evaluate() -> dict[str, float]:
        if not cache:
            elements = val_elements.take(cfg.eval.max_images) if cfg.eval.max_images else val_elements
            cache.extend(elements.as_numpy_iterator())
        return evaluate_sliced(
            predict_fn, cache, tile_size=cfg.data.tile_size, overlap=tile_overlap_pixels(cfg.data),
            input_size=cfg.data.image_size, batch_size=cfg.eval.batch_size, num_classes=num_classes, class_names=class_names,
            score_threshold=cfg.model.score_threshold, iou_threshold=cfg.model.nms_iou_threshold,
            max_detections=cfg.model.max_detections, tta=cfg.eval.tta, tta_scales=cfg.eval.tta_scales, verbose=verbose,
        )

    return evaluate


# ---------------------------------------------------------------------- model
FASTER_RCNN_OPTIONAL = (
    "rpn_head_width", "roi_head_width", "num_rois",
    "pre_nms_topk_train", "post_nms_topk_train", "pre_nms_topk_test", "post_nms_topk_test",
)


def build_model(cfg: ExperimentConfig, num_classes: int) -> keras.Model:
    from ipg_keras.models import IPGRetinaNet

    m = cfg.model
    backbone_kwargs = dict(
        ipg_levels=m.ipg_levels, ipg_width=m.ipg_width, ipg_depth=m.ipg_depth, ipg_out_ratio=m.ipg_out_ratio,
        fusion=m.fusion, fusion_init=m.fusion_init, pyramid_method=m.pyramid_method, width_multiplier=m.width_multiplier,
    )
    common = dict(
        num_classes=num_classes, backbone=m.backbone, ipg=m.ipg, backbone_weights=m.backbone_weights,
        backbone_kwargs=backbone_kwargs, score_threshold=m.score_threshold,
        nms_iou_threshold=m.nms_iou_threshold, max_detections=m.max_detections,
    )
    if m.anchor_size is not None:  # None: the detector's own default
        common["anchor_size"] = m.anchor_size
    if m.type == "retinanet":
        model = IPGRetinaNet(
            **common, min_level=m.min_level, max_level=m.max_level, fpn_channels=m.fpn_channels,
            head_width=m.head_width, head_depth=m.head_depth, head_norm=m.head_norm,
            anchor_scales=m.anchor_scales, aspect_ratios=m.aspect_ratios, positive_iou=m.positive_iou,
            negative_iou=m.negative_iou, matcher=m.matcher, atss_topk=m.atss_topk, focal_alpha=m.focal_alpha,
            focal_gamma=m.focal_gamma, cls_loss=m.cls_loss, box_loss=m.box_loss, box_loss_weight=m.box_loss_weight,
        )
    elif m.type == "faster_rcnn":
        from ipg_keras.models import IPGFasterRCNN  # noqa: WPS433 - optional detector

        # FPN levels are fixed in IPGFasterRCNN; config.check_keys_apply rejects other min/max levels.
        extra = {k: getattr(m, k) for k in FASTER_RCNN_OPTIONAL if getattr(m, k) is not None}
        model = IPGFasterRCNN(**common, fpn_channels=m.fpn_channels, **extra)
    else:
        raise ConfigError(f"Unknown model.type {m.type!r}.")
    configure_batchnorm(model, m.batchnorm)
    return model


def configure_batchnorm(model: keras.Model, mode: str) -> int:
    """Applies `model.batchnorm` to the built detector; returns the number of BN layers changed.

    "sync": every BatchNormalization normalises with the mean/variance of the
    global batch (an all-reduce over replicas), so a step on R replicas equals a
    step on one device with the same global batch. "frozen": the backbone's own
    ResNet BN layers (its direct layers, the ones ImageNet weights load into;
    not the new IPG layers' BN) run in inference mode with frozen scale/offset.
    "train": unchanged (per-replica batch statistics).
    """
    if mode == "train":
        return 0
    if mode == "sync":
        layers = [l for l in model._flatten_layers(include_self=False, recursive=True)
                  if isinstance(l, keras.layers.BatchNormalization)]
        for layer in layers:
            layer.synchronized = True
        return len(layers)
    if mode == "frozen":
        backbone = getattr(model, "backbone", None)
        layers = [l for l in getattr(backbone, "layers", []) if isinstance(l, keras.layers.BatchNormalization)]
        if not layers:
            raise ConfigError("model.batchnorm=frozen: the model has no backbone with BatchNormalization layers.")
        for layer in layers:
            layer.trainable = False
        if hasattr(backbone, "freeze_redundant_biases"):
            backbone.freeze_redundant_biases()  # a frozen BN no longer cancels the conv bias before it
        return len(layers)
    raise ConfigError(f"model.batchnorm: {mode!r} is not one of ['train', 'sync', 'frozen'].")


# ------------------------------------------------------- schedule / optimizer
@keras.saving.register_keras_serializable(package="ipg_train")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate per optimizer step: linear warm-up, then step decay, cosine or constant.

    lr(step) = base_lr * decay(step) * warmup(step), with
      warmup(step) = warmup_factor * (1 - a) + a, a = min(1, step / warmup_steps)  (Detectron2's linear warm-up),
      decay = decay_rate ** (number of boundaries <= step)                  for "step",
      decay = f + (1 - f) * (1 + cos(pi * p)) / 2, p = (step - warmup_steps) / (total_steps - warmup_steps)
              clipped to [0, 1], f = min_lr_factor                            for "cosine",
      decay = 1                                                              for "constant".
    """

    def __init__(self, base_lr, warmup_steps, total_steps, kind="step", boundaries=(), decay_rate=0.1,
                 warmup_factor=0.001, min_lr_factor=0.0):
        if kind not in ("step", "cosine", "constant"):
            raise ValueError(f"WarmupSchedule kind must be step|cosine|constant, got {kind!r}.")
        self.base_lr = float(base_lr)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.kind = kind
        self.boundaries = [int(b) for b in boundaries]
        self.decay_rate = float(decay_rate)
        self.warmup_factor = float(warmup_factor)
        self.min_lr_factor = float(min_lr_factor)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        if self.kind == "cosine":
            span = float(max(1, self.total_steps - self.warmup_steps))
            progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
            f = self.min_lr_factor
            lr = self.base_lr * (f + (1.0 - f) * 0.5 * (1.0 + tf.cos(math.pi * progress)))
        elif self.kind == "step" and self.boundaries:
            passed = tf.reduce_sum(tf.cast(step >= tf.constant(self.boundaries, tf.float32), tf.float32))
            lr = self.base_lr * tf.pow(self.decay_rate, passed)
        else:
            lr = tf.constant(self.base_lr, tf.float32)
        if self.warmup_steps > 0:
            alpha = tf.minimum(1.0, step / self.warmup_steps)
            lr = lr * (self.warmup_factor * (1.0 - alpha) + alpha)
        return lr

    def get_config(self):
        return {
            "base_lr": self.base_lr, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
            "kind": self.kind, "boundaries": self.boundaries, "decay_rate": self.decay_rate,
            "warmup_factor": self.warmup_factor, "min_lr_factor": self.min_lr_factor,
        }


class GlobalGradientMixin:
    """Clips the gradient of the GLOBAL batch under tf.distribute.

    Keras 3 clips (`clipnorm`, `global_clipnorm`, `clipvalue`) each replica's
    partial gradient before the all-reduce that sums them, so a clipped
    multi-replica step differs from the single-device step. With clipping on,
    this sums the gradients over replicas first, then clips, then skips Keras'
    own (now redundant) all-reduce.
    """

    _grads_reduced = False

    def apply(self, grads, trainable_variables=None):
        context = tf.distribute.get_replica_context()
        clips = self.clipnorm or self.global_clipnorm or self.clipvalue
        if not clips or context is None or context.num_replicas_in_sync == 1:
            return super().apply(grads, trainable_variables)
        grads = list(grads)
        index = [i for i, g in enumerate(grads) if g is not None]
        reduced = context.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in index])
        for i, g in zip(index, reduced):
            grads[i] = g
        self._grads_reduced = True  # read while this call traces _all_reduce_sum_gradients
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self._grads_reduced = False

    def _all_reduce_sum_gradients(self, grads_and_vars):
        if self._grads_reduced:
            return list(grads_and_vars)
        return super()._all_reduce_sum_gradients(grads_and_vars)


class ExplicitAverageMixin:
    """Leaves the weight average (`use_ema`) to ipg-train instead of the end of every `fit()`.

    Keras overwrites the weights with their moving average when `fit()` ends
    (`finalize_variable_values`). ipg-train calls `fit()` twice when it resumes
    in the middle of an epoch, and training must go on from the raw weights, so
    it applies the average itself, once, after the last `fit()`
    (`callbacks.apply_average_weights`), and swaps it in for evaluations
    (`callbacks.SwapAverageWeights`).
    """

    def finalize_variable_values(self, var_list):
        return None


@keras.saving.register_keras_serializable(package="ipg_train", name="SGD")
class SGD(ExplicitAverageMixin, GlobalGradientMixin, keras.optimizers.SGD):
    """SGD with momentum and coupled L2 weight decay.

    `weight_decay` adds `weight_decay * w` to the gradient before momentum, as
    torch.optim.SGD (the detection papers' optimizer) does; Keras' own SGD
    `weight_decay` is decoupled (`w -= lr * wd * w`), about 10x weaker at
    momentum 0.9. (Momentum follows Keras: v = m * v - lr * g.)
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, **kwargs)
        self.l2 = float(weight_decay or 0.0)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2:
            gradient = ops.cast(gradient, variable.dtype) + ops.cast(self.l2, variable.dtype) * variable
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["weight_decay"] = self.l2
        return config


@keras.saving.register_keras_serializable(package="ipg_train", name="Adam")
class Adam(ExplicitAverageMixin, GlobalGradientMixin, keras.optimizers.Adam):
    """keras Adam with clipping of the global-batch gradient."""


@keras.saving.register_keras_serializable(package="ipg_train", name="AdamW")
class AdamW(ExplicitAverageMixin, GlobalGradientMixin, keras.optimizers.AdamW):
    """keras AdamW (decoupled weight decay) with clipping of the global-batch gradient."""


def build_schedule(cfg: ExperimentConfig, steps_per_epoch: int) -> WarmupSchedule:
    t = cfg.train
    return WarmupSchedule(
        t.learning_rate, t.warmup_steps, t.epochs * steps_per_epoch, t.schedule,
        [e * steps_per_epoch for e in t.decay_epochs], t.decay_rate,
        warmup_factor=t.warmup_factor, min_lr_factor=t.min_lr_factor,
    )


def build_optimizer(cfg: ExperimentConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The optimizer of `cfg.train` on a `WarmupSchedule` counted in optimizer steps.

    With `train.ema` the optimizer also keeps the moving average of the trainable
    weights (Keras' `use_ema`), which `run` evaluates, saves and returns.

    The learning rate is the one for the global batch (no automatic scaling by
    the number of replicas). Under `mixed_float16`, `compile()` wraps it in a
    LossScaleOptimizer (dynamic loss scaling).
    """
    t = cfg.train
    schedule = build_schedule(cfg, steps_per_epoch)
    options = {}
    if t.clipnorm:
        options["clipnorm"] = t.clipnorm
    if t.global_clipnorm:
        options["global_clipnorm"] = t.global_clipnorm
    if t.ema:  # Keras' own weight average, applied by ipg-train (ExplicitAverageMixin)
        options.update(use_ema=True, ema_momentum=t.ema)
    if t.optimizer == "sgd":
        return SGD(schedule, momentum=t.momentum, weight_decay=t.weight_decay, **options)
    if t.optimizer == "adam":
        return Adam(schedule, **options)
    return AdamW(schedule, weight_decay=t.weight_decay, **options)


def weights_digest(model: keras.Model, trainable_only: bool = False) -> str:
    """sha256 of the model weights (all, or the trainable ones), to compare workers bit for bit."""
    h = hashlib.sha256()
    for v in model.trainable_weights if trainable_only else model.weights:
        h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------- export
def export_tflite_files(cfg: ExperimentConfig, model: keras.Model, train_elements) -> dict[str, str]:
    """`export.tflite`: one `<export.directory>/<name>_<precision>.tflite` per listed precision.

    The input size is `data.image_size`; `int8` calibrates on 100 training
    images (a seeded shuffle of the training data, before augmentation).
    Returns `{precision: path}`.
    """
    from ipg_keras.export import export_tflite

    written = {}
    for precision in cfg.export.tflite:
        path = Path(cfg.export.directory) / f"{cfg.name}_{precision}.tflite"
        calibration = train_elements.shuffle(256, seed=cfg.train.seed) if precision == "int8" else None
        export_tflite(model, path, precision=precision, image_size=cfg.data.image_size,
                      representative_dataset=calibration)
        log.info("exported %s TFLite model to %s", precision, path)
        written[precision] = str(path)
    return written


# ------------------------------------------------------------------------ run
def run(cfg: ExperimentConfig, output: str | Path) -> dict[str, Any]:
    """Trains (or resumes), evaluates and exports one experiment; returns the metrics written to metrics.json.

    Under `multi_worker` every worker calls this with the same config and output
    folder; only the chief evaluates and writes files other than checkpoints,
    and the others return a smaller dict (steps, weights digest).
    """
    output = Path(output)
    # Logical devices and the multi-worker runtime must be set up before TensorFlow initialises.
    if cfg.train.cpu_devices:
        configure_cpu_devices(cfg.train.cpu_devices)
    strategy = build_strategy(cfg.train.strategy)
    worker = WorkerContext.from_strategy(strategy)
    per_replica = per_replica_batch_size(cfg.train.batch_size, strategy.num_replicas_in_sync)
    output.mkdir(parents=True, exist_ok=True)
    if worker.is_chief:
        save_config(cfg, output / "config.yaml")
    log.info("strategy %s: %d replica(s), global batch %d = %d per replica%s", type(strategy).__name__,
             strategy.num_replicas_in_sync, cfg.train.batch_size, per_replica,
             f", worker {worker.task_type}:{worker.task_id}{' (chief)' if worker.is_chief else ''}"
             if worker.multi_worker else "")
    keras.utils.set_random_seed(cfg.train.seed)
    previous_policy = keras.mixed_precision.global_policy()
    if cfg.train.mixed_precision:
        keras.mixed_precision.set_global_policy(cfg.train.mixed_precision)
    try:
        return _run(cfg, output, strategy, worker, per_replica)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _run(cfg: ExperimentConfig, output: Path, strategy, worker: WorkerContext, per_replica: int) -> dict[str, Any]:
    from ipg_keras.evaluation import METRIC_NAMES, evaluate_model
    from ipg_keras.visualization import plot_history, save_detection_grid

    start = time.time()
    train_elements, val_elements, class_names = build_datasets(cfg)
    num_classes = cfg.model.num_classes or len(class_names)
    val_ds = batch_eval(cfg, val_elements)
    steps = cfg.train.steps_per_epoch
    if steps is None:
        n = int(train_elements.cardinality())
        if n <= 0:
            raise ConfigError("train.steps_per_epoch must be set for datasets of unknown size.")
        steps = max(1, n // cfg.train.batch_size)
    epochs = cfg.train.epochs
    total_steps = epochs * steps

    # Seed again right before the weights are created: building the input pipeline
    # may draw from the global generators (once per process), and the initial
    # weights must not depend on that.
    keras.utils.set_random_seed(cfg.train.seed)
    with strategy.scope():
        model = build_model(cfg, num_classes)
        # Build the weights and the optimizer slots now: a checkpoint restores into them.
        model(tf.zeros([1, cfg.data.image_size, cfg.data.image_size, 3]), training=False)
        model.compile(optimizer=build_optimizer(cfg, steps), jit_compile=cfg.train.jit_compile)
        model.optimizer.build(model.trainable_variables)
    apply_distribution_fixes(model, strategy)
    if strategy.num_replicas_in_sync > 1 and cfg.model.batchnorm == "train":
        log.warning("model.batchnorm=train with %d replicas: BatchNorm uses per-replica batch statistics and each "
                    "replica keeps its own moving mean/variance (replica 0's are saved); model.batchnorm=sync "
                    "normalises over the global batch.", strategy.num_replicas_in_sync)
    loss_scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    if cfg.train.mixed_precision:
        log.info("mixed precision %s: compute %s, variables %s, loss scaling %s", cfg.train.mixed_precision,
                 model.dtype_policy.compute_dtype, model.dtype_policy.variable_dtype,
                 "on (LossScaleOptimizer)" if loss_scaled else "off")

    state = TrainingState(model, output / "checkpoints", worker)
    if cfg.train.init_from and state.latest() is None:  # a resumed run continues from its own checkpoint
        from ipg_keras.training.init_from import load_matching_weights

        load_matching_weights(model, cfg.train.init_from)
    resumed_from = state.restore()
    if worker.multi_worker:
        chief_steps = int(round(chief_value(strategy, resumed_from)))
        if chief_steps != resumed_from:
            raise RuntimeError(
                f"Worker {worker.task_type}:{worker.task_id} restored step {resumed_from} but the chief restored "
                f"step {chief_steps}: {output / 'checkpoints'} must be one folder shared by all workers."
            )
    if resumed_from:
        log.info("resuming from %s: %d of %d steps done", state.last_path, resumed_from, total_steps)

    predict_fn = make_predict_fn(model)
    callbacks: list[keras.callbacks.Callback] = [
        # First: the training state is saved before evaluation, which may take long.
        StepCheckpoint(state, steps, total_steps, cfg.train.checkpoint_every_steps, output / "progress.json"),
    ]
    if cfg.train.ema:  # evaluations and model files of the epoch see the averaged weights; training does not
        callbacks.append(SwapAverageWeights())
    if cfg.eval.every_n_epochs:
        evaluate_fn = None
        if cfg.data.tile_size and worker.is_chief:
            # Large images: each whole validation image by sliced inference, as at the end.
            evaluate_fn = make_sliced_evaluate_fn(cfg, val_elements, predict_fn, num_classes, class_names)
        callbacks.append(ChiefCOCOMetrics(val_ds, cfg.eval.every_n_epochs, predict_fn, worker,
                                          num_classes=num_classes, class_names=class_names,
                                          evaluate_fn=evaluate_fn))
    if worker.is_chief:
        if cfg.eval.every_n_epochs:  # after ChiefCOCOMetrics: it reads val_AP from the logs
            callbacks.append(BestCheckpoint(output / "best.keras", monitor="val_AP", mode="max"))
        callbacks += [
            LastCheckpoint(output / "last.keras"),
            HistoryLogger(output / "history.jsonl", state),
            keras.callbacks.TensorBoard(str(output / "tensorboard"), update_freq="epoch", write_graph=False,
                                        profile_batch=0),
        ]
    if cfg.train.ema:
        callbacks.append(SwapAverageWeights())  # back to the raw weights before the next step
    if cfg.train.max_minutes:
        callbacks.append(TimeLimit(cfg.train.max_minutes, strategy, worker))

    verbose = cfg.train.verbose if worker.is_chief else 0
    epoch, offset = divmod(resumed_from, steps)
    if resumed_from >= total_steps:
        log.info("training already complete (%d steps); evaluating and exporting", resumed_from)
    else:
        model.stop_training = False
        # Each fit() gets a pipeline built afresh from the step it starts at: the data stream
        # continues where the previous run (or fit) stopped.
        if offset:  # finish the interrupted epoch with the steps it still lacks
            log.info("continuing the training data at step %d", state.steps_done)
            model.fit(batch_train(cfg, train_elements, worker.multi_worker, start_step=state.steps_done),
                      epochs=epoch + 1, initial_epoch=epoch, steps_per_epoch=steps - offset,
                      callbacks=callbacks, verbose=verbose)
            epoch += 1
        if epoch < epochs and not model.stop_training:
            if state.steps_done:
                log.info("continuing the training data at step %d", state.steps_done)
            model.fit(batch_train(cfg, train_elements, worker.multi_worker, start_step=state.steps_done),
                      epochs=epochs, initial_epoch=epoch, steps_per_epoch=steps,
                      callbacks=callbacks, verbose=verbose)
    if cfg.train.ema:
        apply_average_weights(model.optimizer)
        log.info("weights set to their moving average (train.ema=%s)", cfg.train.ema)
    train_seconds = time.time() - start

    summary = {
        "steps_completed": state.steps_done,
        "total_steps": total_steps,
        "optimizer_iterations": int(model.optimizer.iterations.numpy()),
        "epochs_completed": state.steps_done // steps,
        "resumed_from_step": resumed_from,
        "strategy": cfg.train.strategy,
        "num_replicas": strategy.num_replicas_in_sync,
        "global_batch_size": cfg.train.batch_size,
        "per_replica_batch_size": per_replica,
        "mixed_precision": cfg.train.mixed_precision,
        "compute_dtype": model.dtype_policy.compute_dtype,
        "variable_dtype": model.dtype_policy.variable_dtype,
        "loss_scale_optimizer": loss_scaled,
        "jit_compile": cfg.train.jit_compile,
        "weights_sha256": weights_digest(model),
        "trainable_weights_sha256": weights_digest(model, trainable_only=True),
        "worker": f"{worker.task_type}:{worker.task_id}" if worker.multi_worker else None,
        "chief": worker.is_chief,
    }
    if not worker.is_chief:
        shutil.rmtree(worker.temp_dir(output), ignore_errors=True)
        try:
            worker.temp_dir(output).parent.rmdir()  # .worker_tmp, once no worker uses it
        except OSError:
            pass
        return summary

    records = read_history(output / "history.jsonl")
    if records:
        write_history_csv(records, output / "history.csv")
        series = history_series(records)
        shown = {k: v for k, v in series.items() if "loss" in k or k in PLOTTED_METRICS}
        plot_history(shown, output / "training_curves.png", title=cfg.name, x_values=history_steps(records),
                     x_label="training step")

    metrics = {}
    if cfg.eval.at_end and cfg.data.tile_size:
        # Large images: evaluate each whole validation image by sliced inference.
        metrics = make_sliced_evaluate_fn(cfg, val_elements, predict_fn, num_classes, class_names,
                                          verbose=True)()
    elif cfg.eval.at_end:
        metrics = evaluate_model(model, val_ds, num_classes=num_classes, class_names=class_names, verbose=True,
                                 predict_fn=predict_fn)
    result = {
        # The twelve COCO metrics (AP..APl, AR1..ARl; ARs = small-object recall).
        **{k: metrics[k] for k in METRIC_NAMES if k in metrics},
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": None,
        **summary,
        "final_loss": records[-1].get("loss") if records else None,
        "model": cfg.model.type,
        "backbone": cfg.model.backbone,
        "ipg": cfg.model.ipg,
    }
    if cfg.eval.at_end:
        result["num_val_images"] = int(sum(int(tf.shape(b[0])[0]) for b in val_ds))
        images, targets = next(iter(val_ds))
        save_detection_grid(
            images.numpy(), predict_fn(images), output / "detections.png", class_names=class_names,
            ground_truths={k: v.numpy() for k, v in targets.items()}, max_images=cfg.eval.num_visualized,
        )
    save_model_file(model, output / "model.keras")
    if cfg.export.saved_model:
        from ipg_keras.export import export_saved_model

        export_dir = Path(cfg.export.directory) / cfg.name
        export_saved_model(model, export_dir, image_size=cfg.data.image_size)
        result["saved_model"] = str(export_dir)
    if cfg.export.tflite:
        result["tflite"] = export_tflite_files(cfg, model, train_elements)
    result["wall_seconds"] = round(time.time() - start, 1)
    write_json_atomic(output / "metrics.json", result)
    log.info("metrics: %s", json.dumps(result))
    return result
