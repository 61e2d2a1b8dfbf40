"""Experiment configs: one dataclass tree per experiment, loaded from YAML.

In the style of TF Model Garden's vision configs: every experiment is one
YAML file under `training/configs/`, any value can be overridden on the
command line with `--set section.key=value`, and an unknown or ill-typed key
is an error that names the key and lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def _config_dir() -> Path:
    """The experiment YAMLs: package data in an installed wheel, else the repository's `training/configs/`."""
    packaged = Path(__file__).resolve().parent / "configs"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "training" / "configs"


CONFIG_DIR = _config_dir()


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


@dataclass
class ModelConfig:
    type: str = "retinanet"  # retinanet | faster_rcnn
    num_classes: int | None = None  # None: taken from the dataset
    backbone: str = "resnet50"
    ipg: bool = True
    backbone_weights: str | None = None  # None | imagenet | path
    width_multiplier: float = 1.0
    ipg_width: int = 64
    ipg_depth: int = 1
    ipg_out_ratio: float = 0.25
    ipg_levels: list[int] = field(default_factory=lambda: [2, 3, 4, 5])
    fusion: str = "concat"
    fusion_init: str = "zero"  # zero: BN gamma 0 (starts as the plain backbone) | one (concat/sum only)
    pyramid_method: str = "area"
    # RetinaNet's FPN levels. Faster R-CNN's are fixed (RPN on P2-P6, RoIs from
    # P2-P5): leave these out or set 2 and 6.
    min_level: int = 3
    max_level: int = 7
    fpn_channels: int = 256
    # RetinaNet only: class/box head (and box_loss, box_loss_weight below).
    head_width: int = 256
    head_depth: int = 4
    head_norm: str | None = None
    # BatchNorm during training: "train" (per-replica batch statistics, Keras'
    # default), "sync" (statistics over the global batch, all replicas: makes a
    # multi-replica step equal a single-device step), "frozen" (the backbone's
    # ResNet BN layers in inference mode with fixed scale/offset, Detectron2's
    # FrozenBN for ImageNet-pretrained backbones with few images per device).
    batchnorm: str = "train"
    anchor_size: float | None = None  # x the level's stride; None: the detector's (RetinaNet 4, Faster R-CNN 8)
    # RetinaNet anchors and matching (see `ipg-train CONFIG --check-anchors` for how they fit the boxes)
    anchor_scales: list[float] = field(default_factory=lambda: [1.0, 2 ** (1 / 3), 2 ** (2 / 3)])
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])  # height / width
    # iou: fixed thresholds positive_iou / negative_iou (RetinaNet); atss: adaptive per object (ATSS, atss_topk)
    matcher: str = "iou"
    positive_iou: float = 0.5
    negative_iou: float = 0.4
    atss_topk: int = 9
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    # focal | quality_focal (GFL: the class score is trained toward the predicted box's IoU)
    cls_loss: str = "focal"
    box_loss: str = "smooth_l1"
    box_loss_weight: float = 1.0
    score_threshold: float = 0.05
    nms_iou_threshold: float = 0.5
    max_detections: int = 100
    # IPG-Faster R-CNN only; None keeps IPGFasterRCNN's paper default.
    rpn_head_width: int | None = None
    roi_head_width: int | None = None
    num_rois: int | None = None
    pre_nms_topk_train: int | None = None
    post_nms_topk_train: int | None = None
    pre_nms_topk_test: int | None = None
    post_nms_topk_test: int | None = None


@dataclass
class DataConfig:
    source: str = "synthetic"  # synthetic | tfds | coco_json | pascal_voc
    image_size: int = 512
    # synthetic
    num_train_images: int | None = None
    num_val_images: int | None = None
    min_object_size: float = 6.0
    max_object_size: float = 64.0
    max_objects: int = 12
    # tfds
    tfds_name: str | None = None
    tfds_data_dir: str | None = None
    train_split: str = "train"
    val_split: str = "validation"
    # coco_json / pascal_voc
    train_annotations: str | None = None
    train_images: str | None = None
    val_annotations: str | None = None
    val_images: str | None = None
    class_names: list[str] | None = None
    # large images
    tile_size: int | None = None
    tile_overlap: float = 0.25
    min_visible: float = 0.5
    # Training windows of large images: "grid" (the fixed tiles of tile_size /
    # tile_overlap, tile_dataset) or "random" (random_tiles: new random windows
    # every pass, scale jitter scale_range applied when cutting them).
    sampling: str = "grid"
    tiles_per_image: int | None = None  # random: windows per image and pass; None: as many as the grid has
    # pipeline
    # Pad (and truncate) targets to exactly this many boxes per image: static
    # shapes, so XLA (train.jit_compile) compiles the step once. None: pad to the
    # largest count in each batch (100 with train.jit_compile or strategy tpu).
    max_boxes: int | None = None
    augment: bool = True
    # Augmentation (data.augment: true), see ipg_keras.data.AugmentConfig: probabilities
    # of each flip and of a 90/180/270 degree turn; scale jitter range (output / input
    # pixels); colour jitter magnitudes (0 turns each off); probability of a Gaussian
    # blur and its sigma range in pixels (imagery softer than the training image);
    # probability that a window gets copies of its own objects pasted onto its
    # background, and the paste attempts per window (`copy_paste`).
    horizontal_flip: float = 0.5
    vertical_flip: float = 0.0
    rotate90: float = 0.0
    scale_range: list[float] = field(default_factory=lambda: [0.8, 1.25])
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.02
    channel_gain: float = 0.0
    blur: float = 0.0
    blur_sigma: list[float] = field(default_factory=lambda: [0.5, 1.5])
    copy_paste: float = 0.0
    copy_paste_count: int = 8
    shuffle_buffer: int = 1024
    cache: bool = False


@dataclass
class TrainConfig:
    epochs: int = 12
    steps_per_epoch: int | None = None  # None: dataset size // batch_size
    batch_size: int = 16  # GLOBAL batch, over all replicas; each replica gets batch_size / replicas
    optimizer: str = "sgd"  # sgd | adam | adamw
    learning_rate: float = 0.01  # peak learning rate for the global batch_size
    momentum: float = 0.9  # sgd
    # L2 weight decay. sgd: coupled (wd * w added to the gradient before momentum,
    # as torch.optim.SGD in Detectron2 / mmdetection); adamw: decoupled; adam: unused.
    weight_decay: float = 1e-4
    schedule: str = "step"  # step | cosine | constant, after the warm-up
    warmup_steps: int = 500  # linear warm-up (optimizer steps) from warmup_factor * lr to lr
    warmup_factor: float = 0.001
    decay_epochs: list[int] = field(default_factory=lambda: [8, 11])  # step: lr *= decay_rate at these epochs
    decay_rate: float = 0.1
    min_lr_factor: float = 0.0  # cosine: final lr = min_lr_factor * lr
    clipnorm: float | None = None  # clip each gradient tensor's norm (of the global-batch gradient)
    global_clipnorm: float | None = None  # clip the norm of all gradients together
    # Exponential moving average of the trainable weights (Keras' optimizer `use_ema`, this its momentum,
    # e.g. 0.998: an average over the last ~500 steps); 0 = off. The evaluations during training, best.keras,
    # last.keras and the final model are the averaged weights; training itself steps the raw ones.
    ema: float = 0.0
    seed: int = 0
    strategy: str = "default"  # default | mirrored | multi_worker | tpu
    # Split the host CPU into this many logical devices before TensorFlow starts,
    # so that strategy=mirrored has several replicas on a CPU-only machine (tests).
    cpu_devices: int | None = None
    mixed_precision: str | None = None  # None | mixed_float16 | mixed_bfloat16
    jit_compile: bool = False  # XLA-compile the train step
    checkpoint_every_steps: int | None = None  # resumable checkpoint every N steps (and at each epoch end)
    max_minutes: float | None = None  # stop training cleanly after this wall time
    verbose: int = 1  # Keras progress bar: 0 silent, 1 bar, 2 one line per epoch
    # A previous run to start from: a .keras file, or a run folder (its model.keras,
    # else last.keras, else best.keras). Every weight whose name and shape match is
    # loaded (backbone, FPN, heads); the log lists what was and what was not.
    init_from: str | None = None


@dataclass
class EvalConfig:
    every_n_epochs: int = 0  # COCO metrics (val_AP, ...) every n epochs on the chief; 0: only at the end
    at_end: bool = True  # COCO metrics and a detection PNG after training (metrics.json has the AP keys)
    max_images: int | None = None
    batch_size: int = 8
    num_visualized: int = 8
    # Test-time augmentation of the sliced evaluation (large images, data.tile_size): 1 (off), 4 (flips) or
    # 8 (flips and transposes) views per image, fused by weighted box fusion (ipg_keras.inference.tta).
    tta: int = 1
    # Test-time scales of the same evaluation: the views are also taken of each image resized by each factor
    # (e.g. [1.0, 0.8, 1.25]) and all fused; [1.0] = the image as it is.
    tta_scales: list[float] = field(default_factory=lambda: [1.0])


@dataclass
class ExportConfig:
    saved_model: bool = True
    # TFLite files written at the end of the run, one per precision, as
    # <directory>/<name>_<precision>.tflite: a list of float32 | float16 |
    # dynamic_int8 | int8 (int8 calibrates on 100 training images);
    # true = [float32], false = [].
    tflite: list[str] | bool = field(default_factory=list)
    directory: str = "saved_models"


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp, key: str) -> Any:
    """Checks `value` against the annotation `tp`, converting ints to floats where a float is expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"Config key {key!r}: {value!r} is not a {_type_name(tp)}.")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"Config key {key!r}: expected a list, got {value!r}.")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"Config key {key!r}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__}).")


def _merge(instance, updates: dict, prefix: str = "") -> None:
    if not isinstance(updates, dict):
        raise ConfigError(f"Config section {prefix.rstrip('.') or '<root>'!r} must be a mapping, got {updates!r}.")
    hints = typing.get_type_hints(type(instance))
    names = [f.name for f in dataclasses.fields(instance)]
    for key, value in updates.items():
        if key not in names:
            raise ConfigError(
                f"Unknown config key {prefix + str(key)!r}. Valid keys here: {', '.join(names)}."
            )
        current = getattr(instance, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, f"{prefix}{key}.")
        else:
            setattr(instance, key, _coerce(value, hints[key], prefix + key))


def parse_override(text: str) -> dict:
    """`"train.epochs=3"` -> `{"train": {"epochs": 3}}`; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"Override {text!r} must look like section.key=value (e.g. train.epochs=3).")
    path, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    out: dict = {}
    node = out
    keys = path.strip().split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return out


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path, or the name of a file in `training/configs/` (with or without `.yaml`)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    for candidate in (CONFIG_DIR / path.name, CONFIG_DIR / f"{path.name}.yaml"):
        if candidate.exists():
            return candidate
    available = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"Config {str(name_or_path)!r} not found. Give a YAML path or one of: {available}.")


def load_config(name_or_path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Loads a YAML experiment config (or the defaults) and applies `key=value` overrides."""
    config = ExperimentConfig()
    if name_or_path is not None:
        path = resolve_config_path(name_or_path)
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        try:
            _merge(config, data)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
    for text in overrides or []:
        _merge(config, parse_override(text))
    validate(config)
    return config


def validate(config: ExperimentConfig) -> None:
    """Checks values that types alone do not catch, naming the key."""
    m, t = config.model, config.train
    choices = {
        "model.type": (m.type, ("retinanet", "faster_rcnn")),
        "model.backbone": (m.backbone, ("resnet18", "resnet34", "resnet50", "resnet101")),
        "model.batchnorm": (m.batchnorm, ("train", "sync", "frozen")),
        "model.head_norm": (m.head_norm, (None, "group")),
        "model.box_loss": (m.box_loss, ("smooth_l1", "giou")),
        "model.cls_loss": (m.cls_loss, ("focal", "quality_focal")),
        "model.matcher": (m.matcher, ("iou", "atss")),
        "data.source": (config.data.source, ("synthetic", "tfds", "coco_json", "pascal_voc")),
        "data.sampling": (config.data.sampling, ("grid", "random")),
        "train.optimizer": (t.optimizer, ("sgd", "adam", "adamw")),
        "train.schedule": (t.schedule, ("step", "cosine", "constant")),
        "train.strategy": (t.strategy, ("default", "mirrored", "multi_worker", "tpu")),
        "train.mixed_precision": (t.mixed_precision, (None, "mixed_float16", "mixed_bfloat16")),
        "eval.tta": (config.eval.tta, (1, 4, 8)),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"Config key {key!r}: {value!r} is not one of {list(allowed)}.")
    if isinstance(config.export.tflite, bool):
        config.export.tflite = ["float32"] if config.export.tflite else []
    for prec in config.export.tflite:
        if prec not in ("float32", "float16", "dynamic_int8", "int8"):
            raise ConfigError(f"Config key 'export.tflite': {prec!r} is not float32|float16|dynamic_int8|int8.")
    if len(set(config.export.tflite)) != len(config.export.tflite):
        raise ConfigError(f"Config key 'export.tflite': {config.export.tflite} lists a precision twice.")
    if m.type == "faster_rcnn":
        multiple, rule = 32, "(the stride of C5, which IPG-Faster R-CNN needs)"
    else:
        multiple, rule = 2**m.max_level, "(2**model.max_level)"
    if config.data.image_size % multiple:
        raise ConfigError(
            f"Config key 'data.image_size': {config.data.image_size} must be a multiple of {multiple} {rule}."
        )
    if t.batch_size < 1 or t.epochs < 1:
        raise ConfigError("Config keys 'train.batch_size' and 'train.epochs' must be >= 1.")

    def check(ok: bool, key: str, value: Any, rule: str) -> None:
        if not ok:
            raise ConfigError(f"Config key {key!r}: {value!r} {rule}.")

    check(m.atss_topk >= 1, "model.atss_topk", m.atss_topk, "must be >= 1 (candidate anchors per level)")
    check(0 < m.negative_iou <= m.positive_iou <= 1, "model.negative_iou / model.positive_iou",
          (m.negative_iou, m.positive_iou), "must satisfy 0 < negative_iou <= positive_iou <= 1")
    check(len(m.anchor_scales) >= 1 and min(m.anchor_scales) > 0, "model.anchor_scales", m.anchor_scales,
          "must be a non-empty list of positive scales")
    check(len(m.aspect_ratios) >= 1 and min(m.aspect_ratios) > 0, "model.aspect_ratios", m.aspect_ratios,
          "must be a non-empty list of positive height / width ratios")
    check(t.learning_rate > 0, "train.learning_rate", t.learning_rate, "must be > 0")
    check(0 <= t.momentum < 1, "train.momentum", t.momentum, "must be in [0, 1)")
    check(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, "must be >= 0")
    check(0 <= t.ema < 1, "train.ema", t.ema, "must be in [0, 1): the moving average's momentum (0 = off)")
    scales = config.eval.tta_scales
    check(isinstance(scales, list) and len(scales) >= 1 and all(isinstance(x, (int, float)) and x > 0 for x in scales),
          "eval.tta_scales", scales, "must be a non-empty list of positive resize factors, e.g. [1.0, 0.8, 1.25]")
    check(t.warmup_steps >= 0, "train.warmup_steps", t.warmup_steps, "must be >= 0")
    check(0 < t.warmup_factor <= 1, "train.warmup_factor", t.warmup_factor, "must be in (0, 1]")
    check(0 < t.decay_rate <= 1, "train.decay_rate", t.decay_rate, "must be in (0, 1]")
    check(0 <= t.min_lr_factor <= 1, "train.min_lr_factor", t.min_lr_factor, "must be in [0, 1]")
    check(all(e >= 1 for e in t.decay_epochs) and t.decay_epochs == sorted(set(t.decay_epochs)),
          "train.decay_epochs", t.decay_epochs, "must be increasing epoch numbers >= 1")
    for key in ("clipnorm", "global_clipnorm", "max_minutes"):
        value = getattr(t, key)
        check(value is None or value > 0, f"train.{key}", value, "must be > 0 or null")
    if t.clipnorm is not None and t.global_clipnorm is not None:
        raise ConfigError("Config keys 'train.clipnorm' and 'train.global_clipnorm': set at most one of them.")
    for key in ("steps_per_epoch", "checkpoint_every_steps", "cpu_devices"):
        value = getattr(t, key)
        check(value is None or value >= 1, f"train.{key}", value, "must be >= 1 or null")
    check(config.data.max_boxes is None or config.data.max_boxes >= 1, "data.max_boxes", config.data.max_boxes,
          "must be >= 1 or null")
    if t.strategy == "mirrored" and t.cpu_devices:
        check(t.batch_size % t.cpu_devices == 0, "train.batch_size", t.batch_size,
              f"(the global batch) is not divisible by train.cpu_devices={t.cpu_devices} replicas")
    d = config.data
    for key in ("horizontal_flip", "vertical_flip", "rotate90", "blur", "copy_paste"):
        check(0 <= getattr(d, key) <= 1, f"data.{key}", getattr(d, key), "must be a probability in [0, 1]")
    check(len(d.scale_range) == 2 and 0 < d.scale_range[0] <= d.scale_range[1], "data.scale_range",
          d.scale_range, "must be [low, high] with 0 < low <= high")
    check(0 <= d.hue <= 0.5, "data.hue", d.hue, "must be in [0, 0.5]")
    check(len(d.blur_sigma) == 2 and 0 < d.blur_sigma[0] <= d.blur_sigma[1] <= 5, "data.blur_sigma", d.blur_sigma,
          "must be [low, high] pixels with 0 < low <= high <= 5")
    check(1 <= d.copy_paste_count <= 64, "data.copy_paste_count", d.copy_paste_count, "must be in [1, 64]")
    check(d.sampling == "grid" or d.tile_size, "data.sampling", d.sampling, "needs data.tile_size")
    check(d.tiles_per_image is None or d.tiles_per_image >= 1, "data.tiles_per_image", d.tiles_per_image,
          "must be >= 1 or null")
    check(config.eval.every_n_epochs >= 0, "eval.every_n_epochs", config.eval.every_n_epochs, "must be >= 0")
    check(config.eval.batch_size >= 1, "eval.batch_size", config.eval.batch_size, "must be >= 1")
    check_keys_apply(config)


# Keys that only some settings read: (key, applies(config), where it applies, values that say "off").
# A key that does not apply must keep its default (or an "off" value): otherwise the run would
# silently ignore it. See `check_keys_apply`.
FASTER_RCNN_ONLY = ("rpn_head_width", "roi_head_width", "num_rois", "pre_nms_topk_train", "post_nms_topk_train",
                    "pre_nms_topk_test", "post_nms_topk_test")
RETINANET_ONLY = ("head_width", "head_depth", "head_norm", "box_loss", "box_loss_weight", "anchor_scales",
                  "aspect_ratios", "positive_iou", "negative_iou", "focal_alpha", "focal_gamma", "cls_loss",
                  "matcher", "atss_topk")
AUGMENT_KEYS = ("horizontal_flip", "vertical_flip", "rotate90", "scale_range", "brightness", "contrast",
                "saturation", "hue", "channel_gain", "blur", "blur_sigma", "copy_paste", "copy_paste_count")
SYNTHETIC_ONLY = ("num_train_images", "num_val_images", "min_object_size", "max_object_size", "max_objects")
_CONDITIONAL_KEYS: list[tuple[str, Any, str, tuple]] = [
    *[(f"model.{k}", lambda c: c.model.type == "retinanet", "model.type=retinanet", ()) for k in RETINANET_ONLY],
    *[(f"model.{k}", lambda c: c.model.type == "faster_rcnn", "model.type=faster_rcnn", ())
      for k in FASTER_RCNN_ONLY],
    *[(f"data.{k}", lambda c: c.data.source == "synthetic", "data.source=synthetic", ()) for k in SYNTHETIC_ONLY],
    *[(f"data.{k}", lambda c: c.data.source == "tfds", "data.source=tfds", ())
      for k in ("tfds_name", "tfds_data_dir", "train_split", "val_split")],
    *[(f"data.{k}", lambda c: c.data.source in ("coco_json", "pascal_voc"), "data.source=coco_json|pascal_voc", ())
      for k in ("train_annotations", "train_images", "val_annotations", "val_images")],
    ("data.class_names", lambda c: c.data.source == "pascal_voc",
     "data.source=pascal_voc (COCO JSON, TFDS and synthetic data name their own classes)", ()),
    *[(f"data.{k}", lambda c: c.data.tile_size is not None, "data.tile_size set", ())
      for k in ("tile_overlap", "min_visible", "sampling")],
    ("data.tiles_per_image", lambda c: c.data.tile_size is not None and c.data.sampling == "random",
     "data.tile_size set and data.sampling=random", ()),
    *[(f"data.{k}", lambda c: bool(c.data.augment), "data.augment=true", ()) for k in AUGMENT_KEYS],
    ("data.blur_sigma", lambda c: c.data.blur > 0, "data.blur > 0", ()),
    ("data.copy_paste_count", lambda c: c.data.copy_paste > 0, "data.copy_paste > 0", ()),
    *[(f"model.{k}", lambda c: c.model.matcher == "iou", "model.matcher=iou (ATSS sets its own thresholds)", ())
      for k in ("positive_iou", "negative_iou")],
    ("model.atss_topk", lambda c: c.model.matcher == "atss", "model.matcher=atss", ()),
    ("model.focal_alpha", lambda c: c.model.cls_loss == "focal",
     "model.cls_loss=focal (the quality focal loss has no alpha)", ()),
    ("model.fusion_init", lambda c: c.model.ipg and c.model.fusion != "gated",
     "model.ipg=true and model.fusion=concat|sum (the gated fusion has no BN gamma)", ()),
    ("train.momentum", lambda c: c.train.optimizer == "sgd", "train.optimizer=sgd", ()),
    ("train.weight_decay", lambda c: c.train.optimizer in ("sgd", "adamw"), "train.optimizer=sgd|adamw", (0.0,)),
    *[(f"train.{k}", lambda c: c.train.schedule == "step", "train.schedule=step", ())
      for k in ("decay_epochs", "decay_rate")],
    ("train.min_lr_factor", lambda c: c.train.schedule == "cosine", "train.schedule=cosine", ()),
    ("eval.tta", lambda c: c.data.tile_size is not None,
     "data.tile_size set (test-time augmentation is part of the sliced evaluation of large images)", ()),
    ("eval.tta_scales", lambda c: c.data.tile_size is not None,
     "data.tile_size set (test-time augmentation is part of the sliced evaluation of large images)", ()),
]


def check_keys_apply(config: ExperimentConfig) -> None:
    """Rejects a key set to a non-default value where the run would not read it.

    E.g. `model.head_width` with `model.type=faster_rcnn`, `data.tfds_name` with
    `data.source=coco_json`, `train.momentum` with `train.optimizer=adam`:
    without this check they would be accepted and then silently ignored.
    Faster R-CNN's FPN levels are fixed, so `model.min_level`/`max_level`
    must keep RetinaNet's defaults or state Faster R-CNN's levels (2, 6).
    """
    defaults = ExperimentConfig()
    for key, applies, where, neutral in _CONDITIONAL_KEYS:
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        default = getattr(getattr(defaults, section), name)
        if value != default and value not in neutral and not applies(config):
            raise ConfigError(
                f"Config key {key!r}: {value!r} has no effect here; it applies only with {where}. "
                f"Remove it (default {default!r}) or change that setting."
            )
    m = config.model
    if m.type == "faster_rcnn" and (m.min_level, m.max_level) not in ((2, 6), (defaults.model.min_level,
                                                                               defaults.model.max_level)):
        raise ConfigError(
            f"Config keys 'model.min_level'/'model.max_level': {m.min_level}/{m.max_level} have no effect with "
            "model.type=faster_rcnn, whose FPN levels are fixed (RPN on P2-P6, RoIs from P2-P5); "
            "remove them or set 2 and 6."
        )


def per_replica_batch_size(global_batch_size: int, num_replicas: int) -> int:
    """`train.batch_size` is the global batch: each replica gets `global / num_replicas`.

    Raises a ConfigError naming the key when the global batch does not split evenly.
    """
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}.")
    if global_batch_size % num_replicas:
        raise ConfigError(
            f"Config key 'train.batch_size': the global batch {global_batch_size} is not divisible by the "
            f"{num_replicas} replicas of the distribution strategy; use a multiple of {num_replicas} "
            f"(e.g. --set train.batch_size={num_replicas * max(1, global_batch_size // num_replicas)})."
        )
    return global_batch_size // num_replicas


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(config.to_dict(), f, sort_keys=False)
