"""Training state checkpoints, history files, best-model checkpoint and BatchNorm modes (in process)."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from ipg_keras.training.callbacks import (
    BestCheckpoint,
    StepCheckpoint,
    TrainingState,
    WorkerContext,
    history_series,
    read_history,
    save_model_file,
)
from ipg_keras.training.config import load_config
from ipg_keras.training.train import SGD, build_model, configure_batchnorm


def _tiny_model(units: int = 2) -> keras.Model:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(units), keras.layers.BatchNormalization()])
    model.compile(SGD(0.1, momentum=0.9, weight_decay=1e-4), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def _fit(model, steps, callbacks=()):
    x, y = np.random.rand(8, 3).astype("float32"), np.random.rand(8, 2).astype("float32")
    model.fit(x, y, batch_size=4, epochs=1, steps_per_epoch=steps, callbacks=list(callbacks), verbose=0)


def test_training_state_restores_weights_optimizer_and_steps(tmp_path):
    model = _tiny_model()
    state = TrainingState(model, tmp_path / "checkpoints")
    assert state.restore() == 0  # nothing saved yet
    _fit(model, 2, [StepCheckpoint(state, steps_per_epoch=2, total_steps=2, every_steps=1,
                                   progress_path=tmp_path / "progress.json")])
    assert state.steps_done == 2
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["steps_done"] == 2 and progress["epochs_completed"] == 1
    assert progress["checkpoint"].endswith("ckpt-2")

    fresh = _tiny_model()
    restored = TrainingState(fresh, tmp_path / "checkpoints")
    assert restored.restore() == 2
    assert int(fresh.optimizer.iterations.numpy()) == 2
    for a, b in zip(model.weights + model.optimizer.variables, fresh.weights + fresh.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def _tiny_ipg_detector():
    from model_helpers import tiny_retinanet

    keras.utils.set_random_seed(0)
    model = tiny_retinanet(num_classes=2)  # IPG on: IPGTransforms with a residual block each
    model(tf.zeros([1, 128, 128, 3]), training=False)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.optimizer.build(model.trainable_variables)
    return model


def test_training_state_restores_every_weight_of_an_ipg_detector(tmp_path):
    """BatchNorm moving statistics inside IPGTransform's residual blocks survive a resume.

    They were lost before: the checkpoint's object graph does not reach those blocks (kept
    as tuples in a list), so a resumed run evaluated with reset statistics."""
    model = _tiny_ipg_detector()
    images = np.random.default_rng(0).uniform(0, 255, (2, 128, 128, 3)).astype("float32")
    y = {"boxes": np.array([[[10, 10, 50, 50]], [[60, 60, 100, 100]]], "float32"), "classes": np.array([[0], [1]])}
    model.fit(images, y, batch_size=2, epochs=1, verbose=0)
    blocks = [v for v in model.weights if "ipg_transform" in v.path and "block0_bn1/moving_mean" in v.path]
    assert blocks and all(np.abs(v.numpy()).sum() > 0 for v in blocks)  # statistics moved away from 0
    state = TrainingState(model, tmp_path / "checkpoints")
    state.steps_done = 1
    state.save()
    fresh = _tiny_ipg_detector()
    assert TrainingState(fresh, tmp_path / "checkpoints").restore() == 1
    assert len(model.weights) == len(fresh.weights)
    for a, b in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_checkpoints_of_older_versions_still_resume(tmp_path, caplog):
    model = _tiny_model()
    _fit(model, 1)
    legacy = tf.train.Checkpoint(model=model, optimizer=model.optimizer, train_steps=tf.Variable(3, dtype=tf.int64))
    legacy.save(str(tmp_path / "checkpoints" / "ckpt"))
    fresh = _tiny_model()
    with caplog.at_level("WARNING", logger="ipg_keras.train"):
        assert TrainingState(fresh, tmp_path / "checkpoints").restore() == 3
    assert "predates full-weight checkpoints" in caplog.text
    np.testing.assert_array_equal(model.weights[0].numpy(), fresh.weights[0].numpy())


def test_restoring_into_another_model_names_the_fix(tmp_path):
    model = _tiny_model(units=2)
    state = TrainingState(model, tmp_path / "checkpoints")
    state.steps_done = 1
    state.save()
    other = TrainingState(_tiny_model(units=5), tmp_path / "checkpoints")
    with pytest.raises(ValueError, match="does not match this model.*new --output folder"):
        other.restore()


def test_history_merges_repeated_epochs_and_skips_cut_lines(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text(
        json.dumps({"epoch": 1, "steps_done": 2, "loss": 3.0}) + "\n"
        + json.dumps({"epoch": 2, "steps_done": 4, "loss": 2.5}) + "\n"
        + json.dumps({"epoch": 2, "steps_done": 4, "loss": 2.0, "val_AP": 0.1}) + "\n"
        + '{"epoch": 3, "lo'  # a write cut by a kill
    )
    records = read_history(path)
    assert [r["epoch"] for r in records] == [1, 2] and records[1]["loss"] == 2.0
    assert history_series(records) == {"loss": [3.0, 2.0], "val_AP": [0.1]}
    assert read_history(tmp_path / "missing.jsonl") == []


def test_best_checkpoint_keeps_the_best_val_ap_across_restarts(tmp_path):
    model = _tiny_model()
    path = tmp_path / "best.keras"
    best = BestCheckpoint(path)
    best.set_model(model)
    best.on_epoch_end(0, {"loss": 1.0})  # no evaluation this epoch: nothing happens
    assert not path.exists()
    best.on_epoch_end(1, {"val_AP": 0.3})
    assert path.exists() and json.loads((tmp_path / "best.keras.json").read_text())["val_AP"] == 0.3
    first = os.stat(path).st_mtime_ns

    resumed = BestCheckpoint(path)  # a restarted run remembers the best value
    resumed.set_model(model)
    assert resumed.best == pytest.approx(0.3)
    resumed.on_epoch_end(2, {"val_AP": 0.2})
    assert os.stat(path).st_mtime_ns == first
    resumed.on_epoch_end(3, {"val_AP": 0.5})
    assert json.loads((tmp_path / "best.keras.json").read_text()) == {"val_AP": 0.5, "epoch": 4}


def test_saved_model_files_have_no_compile_config(tmp_path):
    model = _tiny_model()
    save_model_file(model, tmp_path / "m.keras")
    assert model.compiled  # unchanged for the training run
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert not loaded.compiled
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_single_process_is_the_chief():
    worker = WorkerContext.from_strategy(tf.distribute.get_strategy())
    assert worker.is_chief and not worker.multi_worker


def test_batchnorm_modes():
    cfg = load_config("tiny_distributed_cpu", ["model.batchnorm=train"])
    model = build_model(cfg, num_classes=3)
    all_bn = [l for l in model._flatten_layers(include_self=False) if isinstance(l, keras.layers.BatchNormalization)]
    backbone_bn = [l for l in model.backbone.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert all_bn and backbone_bn and len(backbone_bn) < len(all_bn)  # the IPG layers have their own BN
    assert not any(l.synchronized for l in all_bn) and all(l.trainable for l in all_bn)
    assert configure_batchnorm(model, "sync") == len(all_bn) and all(l.synchronized for l in all_bn)
    trainable_before = len(model.trainable_weights)
    assert configure_batchnorm(model, "frozen") == len(backbone_bn)
    assert not any(l.trainable for l in backbone_bn)
    ipg_bn = [l for l in all_bn if all(l is not b for b in backbone_bn)]
    assert all(l.trainable for l in ipg_bn)
    assert len(model.trainable_weights) == trainable_before - 2 * len(backbone_bn)  # gamma, beta


def test_cpu_devices_need_a_fresh_process():
    from ipg_keras.training.config import ConfigError
    from ipg_keras.training.train import configure_cpu_devices

    count = len(tf.config.list_logical_devices("CPU"))  # TensorFlow is initialised from here on
    configure_cpu_devices(count)  # what is already there is fine
    with pytest.raises(ConfigError, match="train.cpu_devices=.*run ipg-train in a new process"):
        configure_cpu_devices(count + 1)
