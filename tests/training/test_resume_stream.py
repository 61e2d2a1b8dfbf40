"""A resumed run continues its training data stream; negative-only batches do not stop ipg-train.

Before, every start of `ipg-train` (and every `fit` of a resumed run) read the
training data from the beginning, so a resumed run trained on the first
batches again, and a batch that crashed the run crashed every resume.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import tensorflow as tf
from training_helpers import TINY, ipg_train_command, last_json, run_checked, subprocess_env

from ipg_keras.data import AugmentConfig, make_batches

# A stream of 3 epochs x 3 steps of batch 2 on tiny_distributed_cpu (16 images: passes wrap around).
RESUME = TINY + [
    "train.epochs=3", "train.steps_per_epoch=3", "train.batch_size=2", "train.checkpoint_every_steps=1",
    "eval.every_n_epochs=0", "eval.at_end=false", "data.max_boxes=null",
]
CRASH_STEP = 4  # the 5th batch fails: 4 steps done, one into epoch 2


def _digest(images, boxes) -> str:
    h = hashlib.sha1(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(boxes).tobytes())
    return h.hexdigest()[:16]


def _digests(ds, count: int) -> list[str]:
    return [_digest(x, y["boxes"]) for x, y in ds.take(count).as_numpy_iterator()]


def _elements(n=7):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (n, 40, 48, 3)).astype("float32")
    boxes = np.tile(np.array([[[4.0, 5.0, 20.0, 30.0]]], "float32"), (n, 1, 1)) + np.arange(n)[:, None, None]
    return tf.data.Dataset.from_tensor_slices({
        "images": images,
        "bounding_boxes": {"boxes": boxes, "classes": np.zeros((n, 1), "int32")},
        "image_id": np.arange(n, dtype="int64"),
    })


@pytest.mark.parametrize("augment", [False, True])
def test_make_batches_skip_continues_the_seeded_stream(augment):
    kwargs = dict(augment=AugmentConfig(scale_range=(0.5, 1.5)) if augment else False, shuffle=16, seed=3,
                  repeat=True, drop_remainder=True)
    full = _digests(make_batches(_elements(), 2, 32, **kwargs), 10)
    assert len(set(full)) == 10  # 7 images, batches of 2 over reshuffled passes: all differ
    for skip in (1, 3, 6):  # 6 batches = 12 images: into the second pass over the data
        assert _digests(make_batches(_elements(), 2, 32, skip=skip, **kwargs), 4) == full[skip : skip + 4]
    with pytest.raises(ValueError, match="skip"):
        make_batches(_elements(), 2, 32, skip=-1)


def test_resumed_run_trains_on_the_batches_an_uninterrupted_run_would_see(tmp_path, monkeypatch):
    import keras

    from ipg_keras.training import train as train_module
    from ipg_keras.training.config import load_config

    cfg = load_config("tiny_distributed_cpu", RESUME)
    total = cfg.train.epochs * cfg.train.steps_per_epoch
    # The uninterrupted stream: what one fit() over all steps reads.
    keras.utils.set_random_seed(cfg.train.seed)
    elements = train_module.build_datasets(cfg)[0]
    stream = _digests(train_module.batch_train(cfg, elements), total)

    original = train_module.batch_train
    fits: list[tuple[int, list[str]]] = []  # (start step, batches read) per pipeline built by run()
    crash_at = {"step": CRASH_STEP}

    def recording_batch_train(cfg, elements, multi_worker=False, start_step=0):
        ds = original(cfg, elements, multi_worker, start_step=start_step)
        seen: list[str] = []
        fits.append((start_step, seen))

        def record(images, boxes):
            step = start_step + len(seen)
            seen.append(_digest(images.numpy(), boxes.numpy()))
            if step == crash_at["step"]:
                raise RuntimeError(f"simulated crash at step {step}")
            return np.int64(step)

        def tap(images, targets):
            step = tf.py_function(record, [images, targets["boxes"]], tf.int64)
            with tf.control_dependencies([step]):
                return tf.identity(images), targets

        return ds.map(tap)

    monkeypatch.setattr(train_module, "batch_train", recording_batch_train)
    with pytest.raises(Exception, match="simulated crash at step 4"):
        train_module.run(cfg, tmp_path / "run")
    assert [start for start, _ in fits] == [0]
    assert fits[0][1][:CRASH_STEP] == stream[:CRASH_STEP]

    fits.clear()
    crash_at["step"] = None
    result = train_module.run(load_config("tiny_distributed_cpu", RESUME), tmp_path / "run")
    assert result["resumed_from_step"] == CRASH_STEP and result["steps_completed"] == total
    # Finish epoch 2 (steps 4-5), then epoch 3 (steps 6-8), each fit() from the step it starts at.
    assert [start for start, _ in fits] == [4, 6]
    resumed = fits[0][1][:2] + fits[1][1][:3]
    assert resumed == stream[CRASH_STEP:total]


def test_ipg_train_finishes_with_negative_only_batches(tmp_path):
    """The case of ../shared/cases/README.md: batch 1, targets padded per batch (data.max_boxes null)."""
    from ipg_keras.training import train as train_module
    from ipg_keras.training.config import load_config

    overrides = ["train.batch_size=1", "data.max_boxes=null", "train.epochs=2", "train.steps_per_epoch=8",
                 "eval.every_n_epochs=0"]
    # The run's 16 batches are one pass over the 16 training images, some without objects.
    cfg = load_config("tiny_distributed_cpu", TINY + overrides)
    batches = train_module.batch_train(cfg, train_module.build_datasets(cfg)[0]).take(16)
    shapes = [y["boxes"].shape for _, y in batches.as_numpy_iterator()]
    assert shapes.count((1, 0, 4)) >= 1, shapes

    proc = run_checked(ipg_train_command(tmp_path / "neg", overrides), env=subprocess_env())
    result = last_json(proc.stdout)
    assert result["steps_completed"] == 16 and np.isfinite(result["final_loss"])
    assert 0.0 <= result["AP"] <= 1.0  # evaluated at the end
