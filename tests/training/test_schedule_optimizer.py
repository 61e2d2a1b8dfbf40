"""Learning-rate schedules and the optimizers of ipg-train, value by value."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ipg_keras.training.config import load_config
from ipg_keras.training.train import SGD, AdamW, WarmupSchedule, build_optimizer, build_schedule


def lr(schedule, step: int) -> float:
    return float(schedule(step))


def test_step_schedule_warms_up_linearly_then_divides_by_ten():
    # The paper's 1x: lr 0.01, 500 warm-up iterations from 0.001 * lr, /10 at epochs 8 and 11.
    spe = 1000
    s = WarmupSchedule(0.01, 500, 12 * spe, "step", [8 * spe, 11 * spe], 0.1, warmup_factor=0.001)
    expected = {
        0: 0.01 * 0.001,
        250: 0.01 * (0.001 * 0.5 + 0.5),
        499: 0.01 * (0.001 / 500 + 499 / 500),
        500: 0.01,
        7999: 0.01,
        8000: 0.001,
        10999: 0.001,
        11000: 0.0001,
        11999: 0.0001,
    }
    for step, value in expected.items():
        assert lr(s, step) == pytest.approx(value, rel=1e-5), step


def test_cosine_schedule_with_warmup_and_floor():
    s = WarmupSchedule(0.1, 10, 110, "cosine", warmup_factor=0.5, min_lr_factor=0.1)
    assert lr(s, 0) == pytest.approx(0.1 * 0.5)
    assert lr(s, 5) == pytest.approx(0.1 * 0.75)
    assert lr(s, 10) == pytest.approx(0.1)
    assert lr(s, 60) == pytest.approx(0.1 * (0.1 + 0.9 * 0.5))  # half way: mean of peak and floor
    assert lr(s, 110) == pytest.approx(0.01)
    assert lr(s, 500) == pytest.approx(0.01)  # stays at the floor past the end
    plain = WarmupSchedule(1.0, 0, 100, "cosine")
    assert [lr(plain, t) for t in (0, 50, 100)] == pytest.approx([1.0, 0.5, 0.0], abs=1e-6)


def test_constant_schedule_only_warms_up():
    s = WarmupSchedule(0.2, 4, 100, "constant", warmup_factor=0.25)
    assert [lr(s, t) for t in (0, 2, 4, 50)] == pytest.approx([0.05, 0.125, 0.2, 0.2])


def test_schedule_from_config_counts_epochs_in_steps_and_round_trips():
    cfg = load_config("coco_retinanet_r50")
    s = build_schedule(cfg, steps_per_epoch=7392)
    assert s.boundaries == [8 * 7392, 11 * 7392] and s.total_steps == 12 * 7392 and s.warmup_steps == 500
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
    assert isinstance(again, WarmupSchedule) and again.get_config() == s.get_config()
    with pytest.raises(ValueError, match="step\\|cosine\\|constant"):
        WarmupSchedule(0.1, 0, 10, "linear")


def test_build_optimizer_follows_the_config():
    cfg = load_config("coco_retinanet_r50")
    opt = build_optimizer(cfg, steps_per_epoch=100)
    assert isinstance(opt, SGD) and isinstance(opt, keras.optimizers.SGD)
    assert opt.momentum == pytest.approx(0.9) and opt.l2 == pytest.approx(1e-4)
    assert opt.global_clipnorm == pytest.approx(35.0) and opt.weight_decay is None  # no decoupled decay on top
    cfg.train.optimizer, cfg.train.global_clipnorm, cfg.train.clipnorm = "adamw", None, 1.0
    opt = build_optimizer(cfg, steps_per_epoch=100)
    assert isinstance(opt, AdamW) and opt.clipnorm == 1.0 and opt.weight_decay == pytest.approx(1e-4)


def _apply(optimizer, w0, grads, steps):
    var = keras.Variable(np.array(w0, "float32"))
    for _ in range(steps):
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(np.array(grads, "float32")), var)])
    return var.numpy()


def test_sgd_weight_decay_is_coupled_l2_through_momentum():
    lr_, m, wd, w0 = 0.1, 0.9, 0.01, np.array([1.0, -2.0])
    got = _apply(SGD(lr_, momentum=m, weight_decay=wd), w0, [0.0, 0.0], steps=2)
    # torch.optim.SGD-style L2: the decay term goes through the momentum buffer
    # (Keras' momentum form: v = m * v - lr * (g + wd * w); w += v).
    v1 = -lr_ * wd * w0
    w1 = w0 + v1
    v2 = m * v1 - lr_ * wd * w1
    np.testing.assert_allclose(got, w1 + v2, rtol=1e-6)
    decoupled = _apply(keras.optimizers.SGD(lr_, momentum=m, weight_decay=wd), w0, [0.0, 0.0], steps=2)
    assert not np.allclose(got, decoupled)


def test_global_clipnorm_on_one_replica():
    got = _apply(SGD(1.0, global_clipnorm=1.0), [0.0, 0.0], [3.0, 4.0], steps=1)
    np.testing.assert_allclose(got, [-0.6, -0.8], rtol=1e-6)


def test_optimizer_serialization_round_trip():
    opt = SGD(WarmupSchedule(0.01, 5, 50), momentum=0.9, weight_decay=1e-4, global_clipnorm=2.0)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(again, SGD) and again.l2 == pytest.approx(1e-4) and again.global_clipnorm == 2.0
    assert isinstance(again._learning_rate, WarmupSchedule) and again._learning_rate.warmup_steps == 5
