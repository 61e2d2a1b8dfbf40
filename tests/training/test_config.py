"""Experiment configs: YAML loading, overrides and validation errors that name the key."""

import pytest

from training.config import CONFIG_DIR, ConfigError, ExperimentConfig, load_config, parse_override


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
