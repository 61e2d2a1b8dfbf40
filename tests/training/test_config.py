"""Experiment configs: YAML loading, overrides and validation errors that name the key."""

import pytest

from ipg_keras.training.config import (
    CONFIG_DIR,
    ConfigError,
    ExperimentConfig,
    load_config,
    parse_override,
    per_replica_batch_size,
)


def test_every_shipped_config_loads():
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert "synthetic_retinanet_cpu" in names
    for name in names:
        assert isinstance(load_config(name), ExperimentConfig)


def test_overrides_are_typed():
    cfg = load_config("synthetic_retinanet_cpu", ["train.epochs=3", "model.ipg=false", "train.learning_rate=1e-4",
                                                  "model.ipg_levels=[3, 4]", "train.max_minutes=null"])
    assert cfg.train.epochs == 3 and cfg.model.ipg is False and cfg.train.learning_rate == pytest.approx(1e-4)
    assert cfg.model.ipg_levels == [3, 4] and cfg.train.max_minutes is None
    assert parse_override("a.b.c=1") == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.epoch=3", "Unknown config key 'train.epoch'. Valid keys here: epochs"),
        ("modle.ipg=true", "Unknown config key 'modle'"),
        ("train.epochs=three", "'train.epochs': expected int"),
        ("model.ipg=3", "'model.ipg': expected bool"),
        ("model.backbone=resnet9", "'model.backbone': 'resnet9' is not one of"),
        ("data.image_size=200", "multiple of 128"),
        ("train.epochs", "section.key=value"),
        ("model.batchnorm=group", "'model.batchnorm': 'group' is not one of ['train', 'sync', 'frozen']"),
        ("train.strategy=horovod", "'train.strategy': 'horovod' is not one of"),
        ("train.mixed_precision=float16", "'train.mixed_precision': 'float16' is not one of"),
        ("train.learning_rate=0", "'train.learning_rate': 0.0 must be > 0"),
        ("train.warmup_factor=0", "'train.warmup_factor': 0.0 must be in (0, 1]"),
        ("train.decay_epochs=[11, 8]", "'train.decay_epochs': [11, 8] must be increasing"),
        ("train.global_clipnorm=-1", "'train.global_clipnorm': -1.0 must be > 0"),
        ("train.checkpoint_every_steps=0", "'train.checkpoint_every_steps': 0 must be >= 1"),
        ("train.cpu_devices=two", "'train.cpu_devices': 'two' is not a int | None"),
        ("data.max_boxes=0", "'data.max_boxes': 0 must be >= 1"),
        ("eval.at_end=maybe", "'eval.at_end': expected bool"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config("synthetic_retinanet_cpu", [override])


def test_bad_yaml_key_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  backbone: resnet18\n  ipg_widht: 8\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: Unknown config key 'model.ipg_widht'"):
        load_config(path)


def test_missing_config_lists_the_available_ones():
    with pytest.raises(FileNotFoundError, match="synthetic_retinanet_cpu"):
        load_config("no_such_experiment")


def test_clipnorm_and_global_clipnorm_exclude_each_other():
    with pytest.raises(ConfigError, match="'train.clipnorm' and 'train.global_clipnorm'"):
        load_config("tiny_distributed_cpu", ["train.clipnorm=1", "train.global_clipnorm=1"])


def test_global_batch_must_split_over_the_replicas():
    assert per_replica_batch_size(16, 8) == 2 and per_replica_batch_size(4, 1) == 4
    with pytest.raises(ConfigError, match=r"'train.batch_size': the global batch 16 is not divisible by the 3 replicas"):
        per_replica_batch_size(16, 3)
    # Known before TensorFlow starts when the replicas are logical CPUs:
    with pytest.raises(ConfigError, match=r"'train.batch_size': 4 \(the global batch\) is not divisible by "
                                          r"train.cpu_devices=3"):
        load_config("tiny_distributed_cpu", ["train.strategy=mirrored", "train.cpu_devices=3"])


@pytest.mark.parametrize("depth", [50, 101])
def test_coco_retinanet_configs_follow_the_paper(depth):
    cfg = load_config(f"coco_retinanet_r{depth}")
    m, d, t = cfg.model, cfg.data, cfg.train
    assert (m.type, m.backbone, m.ipg, m.backbone_weights) == ("retinanet", f"resnet{depth}", True, "imagenet")
    assert (m.min_level, m.max_level, m.fpn_channels, m.head_width, m.head_depth) == (3, 7, 256, 256, 4)
    assert (d.source, d.tfds_name, d.train_split, d.val_split) == ("tfds", "coco/2017", "train", "validation")
    # 1333x800 in the paper; a square multiple of 128 (P7) here, of similar scale.
    assert d.image_size % 128 == 0 and d.image_size in (1024, 1280) and d.augment
    assert (t.epochs, t.batch_size, t.optimizer, t.momentum) == (12, 16, "sgd", 0.9)
    assert t.learning_rate == pytest.approx(0.01) and t.weight_decay == pytest.approx(1e-4)
    assert (t.schedule, t.warmup_steps, t.decay_epochs, t.decay_rate) == ("step", 500, [8, 11], 0.1)
    assert t.strategy in ("mirrored", "multi_worker") and per_replica_batch_size(t.batch_size, 8) == 2
    assert cfg.eval.every_n_epochs >= 1 and cfg.export.saved_model


def test_small_configs_fit_this_machine():
    cfg = load_config("tiny_distributed_cpu")
    assert cfg.data.source == "synthetic" and cfg.data.image_size == 128 and cfg.model.backbone == "resnet18"
    assert cfg.train.batch_size % 2 == 0  # two CPU replicas


def test_tile_overlap_fraction_becomes_pixels():
    """`data.tile_overlap` is a fraction of the tile; tiling takes pixels."""
    from ipg_keras.training.train import tile_overlap_pixels

    cfg = load_config("synthetic_retinanet_cpu", ["data.tile_size=256", "data.tile_overlap=0.25"])
    assert tile_overlap_pixels(cfg.data) == 64
