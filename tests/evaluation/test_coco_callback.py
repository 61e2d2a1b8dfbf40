"""evaluate_model and COCOMetricsCallback with a tiny fake detector inside keras fit()."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ipg_keras.evaluation import COCOMetricsCallback, evaluate_model

SIZE = 32


class BrightBoxDetector(keras.Model):
    """'Detects' the one bright rectangle of each image exactly: its box is the extent of
    the non-zero pixels, class 0, score 1. A perfect detector for the dataset below."""

    def __init__(self, shift: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.shift = shift
        self.dense = keras.layers.Dense(1)

    def call(self, images, training=False):
        return self.dense(tf.reduce_mean(images, axis=[1, 2]))

    def train_step(self, data):
        images, _ = data
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self(images, training=True)))
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return {"loss": loss}

    def predict_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        mask = tf.reduce_max(images, axis=-1) > 0  # [B, H, W]
        rows = tf.cast(tf.reduce_any(mask, axis=2), tf.float32)  # [B, H]
        cols = tf.cast(tf.reduce_any(mask, axis=1), tf.float32)  # [B, W]
        idx = tf.range(SIZE, dtype=tf.float32)
        big = float(SIZE + 1)
        y1 = tf.reduce_min(idx + (1 - rows) * big, axis=1)
        y2 = tf.reduce_max(idx * rows, axis=1) + 1
        x1 = tf.reduce_min(idx + (1 - cols) * big, axis=1)
        x2 = tf.reduce_max(idx * cols, axis=1) + 1
        boxes = tf.stack([x1, y1, x2, y2], axis=-1)[:, None, :] + self.shift
        batch = tf.shape(images)[0]
        return {"boxes": boxes, "scores": tf.ones([batch, 1]),
                "classes": tf.zeros([batch, 1], tf.int32), "num_detections": tf.ones([batch], tf.int32)}


def _dataset(n=6, batch=3):
    rng = np.random.default_rng(0)
    images = np.zeros((n, SIZE, SIZE, 3), np.float32)
    boxes = np.full((n, 2, 4), -1, np.float32)
    classes = np.full((n, 2), -1, np.int32)
    for i in range(n):
        x1, y1 = rng.integers(0, 16, size=2)
        w, h = rng.integers(4, 16, size=2)
        images[i, y1:y1 + h, x1:x1 + w] = 200.0
        boxes[i, 0] = [x1, y1, x1 + w, y1 + h]
        classes[i, 0] = 0
    return tf.data.Dataset.from_tensor_slices((images, {"boxes": boxes, "classes": classes})).batch(batch)


def test_evaluate_model_perfect_and_shifted():
    ds = _dataset()
    assert evaluate_model(BrightBoxDetector(), ds, verbose=False)["AP"] == pytest.approx(1.0)
    # Boxes off by 3 px: matches only at low IoU thresholds, so AP drops below 1.
    shifted = evaluate_model(BrightBoxDetector(shift=3.0), ds, verbose=False)
    assert 0.0 <= shifted["AP"] < 0.9
    assert evaluate_model(BrightBoxDetector(), ds, max_batches=1, verbose=False)["AP"] == pytest.approx(1.0)


def test_callback_adds_metrics_to_logs_history_and_checkpoint(tmp_path):
    ds = _dataset()
    model = BrightBoxDetector()
    model.compile(optimizer="sgd")
    callback = COCOMetricsCallback(ds, every_n_epochs=1)
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "best.weights.h5"), monitor="val_AP", mode="max",
        save_best_only=True, save_weights_only=True)
    history = model.fit(ds, epochs=2, callbacks=[callback, checkpoint], verbose=0,
                        shuffle=False)
    assert history.history["val_AP"] == [pytest.approx(1.0)] * 2
    assert "val_AP50" in history.history and "val_APs" in history.history
    assert (tmp_path / "best.weights.h5").exists()
    assert [epoch for epoch, _ in callback.history] == [0, 1]


def test_callback_every_n_epochs_and_prefix():
    callback = COCOMetricsCallback(_dataset(), every_n_epochs=2, prefix="test_")
    callback.set_model(BrightBoxDetector())
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs == {}
    callback.on_epoch_end(1, logs)
    assert logs["test_AP"] == pytest.approx(1.0)


def test_evaluate_model_on_ragged_synthetic_batches():
    """Element-format dict batches (ragged boxes) with image ids from the dataset."""
    from ipg_keras.data.synthetic import synthetic_dataset

    ds = synthetic_dataset("val", num_images=4, image_size=96, max_size=40.0).ragged_batch(2)

    def oracle(batch_iter=iter(ds)):
        # predict_fn receives only images; replay the same batches to return their GT.
        def predict(images):
            gt = next(batch_iter)["bounding_boxes"]
            boxes = gt["boxes"].to_tensor(default_value=0.0)
            classes = gt["classes"].to_tensor(default_value=-1)
            return {"boxes": boxes, "classes": classes, "scores": tf.cast(classes >= 0, tf.float32),
                    "num_detections": tf.cast(gt["classes"].row_lengths(), tf.int32)}
        return predict

    m = evaluate_model(None, ds, verbose=False, num_classes=5, predict_fn=oracle())
    assert m["AP"] == pytest.approx(1.0)
