"""`train.ema`: the moving average of the weights is evaluated and saved; training steps the raw weights."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from training_helpers import TINY

from ipg_keras.training.callbacks import (
    SwapAverageWeights,
    TrainingState,
    apply_average_weights,
    average_weight_pairs,
    swap_average_weights,
)
from ipg_keras.training.config import ConfigError, load_config
from ipg_keras.training.train import Adam, build_optimizer


def _model(ema: float | None = 0.5) -> keras.Model:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    kwargs = dict(use_ema=True, ema_momentum=ema) if ema else {}
    model.compile(Adam(0.05, **kwargs), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def _fit(model, steps=4, callbacks=()):
    rng = np.random.default_rng(0)
    x, y = rng.random((4 * steps, 3), dtype="float32"), rng.random((4 * steps, 2), dtype="float32")
    model.fit(x, y, batch_size=4, epochs=1, steps_per_epoch=steps, callbacks=list(callbacks), verbose=0)


def _values(variables):
    return [np.array(v) for v in variables]


def _assert_equal(a, b, **tolerance):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, **(tolerance or dict(rtol=0, atol=0)))


def test_fit_keeps_the_raw_weights_and_swap_and_apply_use_the_average():
    model = _model()
    _fit(model)
    pairs = average_weight_pairs(model.optimizer)
    assert len(pairs) == 2  # kernel and bias
    raw, average = _values(v for v, _ in pairs), _values(a for _, a in pairs)
    assert not any(np.allclose(r, a) for r, a in zip(raw, average))  # fit() did not overwrite the weights
    assert swap_average_weights(model.optimizer) == 2
    _assert_equal(_values(model.trainable_variables), average)
    swap_average_weights(model.optimizer)  # and back
    _assert_equal(_values(model.trainable_variables), raw)
    assert apply_average_weights(model.optimizer) == 2
    _assert_equal(_values(model.trainable_variables), average)


def test_swap_callback_pair_shows_the_average_between_them_and_trains_on_raw_weights():
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(_values(self.model.trainable_variables))

    model, reference = _model(), _model()
    reference.set_weights(model.get_weights())
    _fit(model, callbacks=[SwapAverageWeights(), Record(), SwapAverageWeights()])
    _fit(reference)
    _assert_equal(_values(model.trainable_variables), _values(reference.trainable_variables), rtol=1e-6)
    _assert_equal(seen[0], _values(a for _, a in average_weight_pairs(model.optimizer)))


def test_without_ema_nothing_is_swapped():
    model = _model(ema=None)
    _fit(model, steps=1)
    assert average_weight_pairs(model.optimizer) == [] and swap_average_weights(model.optimizer) == 0


def test_checkpoints_keep_the_average(tmp_path):
    model = _model()
    _fit(model)
    state = TrainingState(model, tmp_path / "checkpoints")
    state.steps_done = 4
    state.save()
    average = _values(a for _, a in average_weight_pairs(model.optimizer))
    _fit(model)  # moves weights and averages on
    assert state.restore() == 4
    _assert_equal(_values(a for _, a in average_weight_pairs(model.optimizer)), average)


def test_config_key_builds_keras_ema_and_is_checked():
    cfg = load_config("tiny_distributed_cpu", ["train.ema=0.99"])
    optimizer = build_optimizer(cfg, 10)
    assert optimizer.use_ema and optimizer.ema_momentum == 0.99
    assert not build_optimizer(load_config("tiny_distributed_cpu"), 10).use_ema
    with pytest.raises(ConfigError, match="train.ema"):
        load_config("tiny_distributed_cpu", ["train.ema=1.0"])


def test_ipg_train_saves_and_scores_the_averaged_weights(tmp_path):
    from ipg_keras.training import train as train_module

    cfg = load_config("tiny_distributed_cpu", TINY + ["train.ema=0.8", "train.epochs=2", "train.steps_per_epoch=2",
                                                      "eval.every_n_epochs=1"])
    result = train_module.run(cfg, tmp_path / "run")
    assert result["steps_completed"] == 4 and "AP" in result
    saved = keras.models.load_model(tmp_path / "run" / "model.keras")
    # The resumable checkpoint holds the raw weights and the optimizer's averages.
    model = train_module.build_model(cfg, saved.num_classes)
    model(np.zeros((1, cfg.data.image_size, cfg.data.image_size, 3), "float32"), training=False)
    model.compile(optimizer=build_optimizer(cfg, 2))
    model.optimizer.build(model.trainable_variables)
    state = TrainingState(model, tmp_path / "run" / "checkpoints")
    assert state.restore() == 4
    pairs = average_weight_pairs(model.optimizer)
    moved = [i for i, (v, a) in enumerate(pairs) if not np.allclose(np.array(v), np.array(a))]
    assert moved  # the average differs from the raw weights ...
    # The same config builds the same variables in the same order (names carry an instance counter).
    assert [v.shape for v in saved.trainable_variables] == [v.shape for v, _ in pairs]
    for i in moved:  # ... and model.keras holds the average
        np.testing.assert_allclose(np.array(saved.trainable_variables[i]), np.array(pairs[i][1]), rtol=1e-6,
                                   atol=1e-7)
