"""Training from experiment configs: `load_config`, `run` and the callbacks `ipg-train` uses.

The YAML configs live in the repository's `training/configs/` and ship inside the
wheel as `ipg_keras/training/configs/`; `load_config("synthetic_retinanet_cpu")`
finds them by name either way.
"""

from ipg_keras.training.config import CONFIG_DIR, ConfigError, ExperimentConfig, load_config

__all__ = ["CONFIG_DIR", "ConfigError", "ExperimentConfig", "load_config"]
