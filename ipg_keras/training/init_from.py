"""`train.init_from`: start a model from the weights of a previous run that fit it."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import keras

from ipg_keras.training.config import ConfigError

log = logging.getLogger("ipg_keras.train")

# Files a run folder has, best first for initialisation: the final model, then the latest epoch's, then the best.
RUN_MODEL_FILES = ("model.keras", "last.keras", "best.keras")


def resolve_init_path(path: str | Path) -> Path:
    """The `.keras` file of `path`: the file itself, or the first of RUN_MODEL_FILES in a run folder."""
    path = Path(path)
    if path.is_dir():
        for name in RUN_MODEL_FILES:
            if (path / name).is_file():
                return path / name
        raise ConfigError(f"train.init_from={str(path)!r} is a folder without any of {list(RUN_MODEL_FILES)}: "
                          "give a .keras file or the output folder of a finished (or interrupted) ipg-train run.")
    if not path.is_file():
        raise ConfigError(f"train.init_from={str(path)!r} does not exist: give a .keras file or an ipg-train run folder.")
    if path.suffix != ".keras":
        raise ConfigError(f"train.init_from={str(path)!r} is not a .keras file: give a .keras file or a run folder.")
    return path


def _keys(model: keras.Model) -> list[tuple[str, int]]:
    """(variable path without the model's own name, occurrence index) for each weight, in order."""
    seen: dict[str, int] = defaultdict(int)
    keys = []
    for v in model.weights:
        parts = v.path.split("/")
        name = "/".join(parts[1:]) if len(parts) > 1 and parts[0] == model.name else v.path
        keys.append((name, seen[name]))
        seen[name] += 1
    return keys


def load_matching_weights(model: keras.Model, source: str | Path) -> tuple[list[str], list[str]]:
    """Copies into the built `model` every weight of `source` with the same name and shape.

    `source` is a `.keras` file or an ipg-train run folder (`resolve_init_path`).
    Names are Keras variable paths without the top-level model's name, so a
    RetinaNet of another width, class count or anchor set shares what still
    fits (e.g. the backbone and FPN, not the class head's output layer).
    Returns `(loaded, not_loaded)` lists of names, each `not_loaded` entry with
    its reason. Raises ConfigError naming the file when nothing matches.
    """
    path = resolve_init_path(source)
    try:
        donor = keras.models.load_model(str(path), compile=False)
    except Exception as error:  # noqa: BLE001 - any failure to read the file is the user's to fix
        raise ConfigError(f"train.init_from: cannot load {path} as a Keras model ({type(error).__name__}: "
                          f"{error}).") from None
    available = {key: v for key, v in zip(_keys(donor), donor.weights)}
    loaded, not_loaded = [], []
    for key, variable in zip(_keys(model), model.weights):
        name = key[0] if key[1] == 0 else f"{key[0]}#{key[1]}"
        other = available.pop(key, None)
        if other is None:
            not_loaded.append(f"{name} (not in {path.name})")
        elif tuple(other.shape) != tuple(variable.shape):
            not_loaded.append(f"{name} (shape {tuple(other.shape)} in {path.name}, {tuple(variable.shape)} here)")
        else:
            variable.assign(other.numpy())
            loaded.append(name)
    if not loaded:
        raise ConfigError(
            f"train.init_from: no weight of {path} matches this model by name and shape "
            f"(it has {len(donor.weights)} weights, this model {len(model.weights)}; e.g. {not_loaded[:2]}). "
            "Start from a run of the same detector type and backbone/FPN widths, or remove train.init_from."
        )
    log.info("train.init_from %s: loaded %d of %d weights; not loaded: %s", path, len(loaded), len(model.weights),
             ", ".join(not_loaded) or "none")
    if available:
        log.info("train.init_from: %d weights of %s have no place in this model: %s", len(available), path.name,
                 ", ".join(k for k, _ in list(available)[:20]))
    return loaded, not_loaded
