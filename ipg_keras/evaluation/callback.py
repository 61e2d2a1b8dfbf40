"""Keras callback that adds COCO metrics to the epoch logs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import time

import keras

from ipg_keras.evaluation.coco import evaluate_model


class COCOMetricsCallback(keras.callbacks.Callback):
    """Computes COCO metrics on `dataset` every `every_n_epochs` epochs and adds them to logs.

    The metrics appear as ``f"{prefix}{name}"`` (``val_AP``, ``val_AP50``, ...) in the
    epoch logs, hence in ``History`` and in callbacks placed *after* this one in the
    list (ModelCheckpoint / EarlyStopping: ``monitor="val_AP", mode="max"``; Keras
    cannot infer the direction of a custom metric). On epochs without evaluation the
    keys are absent. dataset: batched ``(images, targets)`` as for
    :func:`evaluate_model`. ``self.history`` keeps ``(epoch, metrics)`` pairs.
    max_detections: detections per image that count; default the model's own
    ``max_detections`` (the rule of every scoring path, see ``coco_metrics``); the
    limit used is logged as ``f"{prefix}max_detections"``.

    ``evaluate_fn`` (a callable ``() -> {metric: value}``) replaces the evaluation of
    ``dataset``: e.g. :func:`ipg_keras.evaluation.evaluate_sliced` of whole large images
    (``dataset`` may then be None). The seconds each evaluation took are logged as
    ``f"{prefix}seconds"``, so a run shows what its evaluation costs.
    """

    def __init__(self, dataset: Iterable[Any], every_n_epochs: int = 1, prefix: str = "val_",
                 max_batches: int | None = None, num_classes: int | None = None,
                 class_names: Sequence[str] | None = None, per_class: bool = False,
                 verbose: int = 0, predict_fn: Callable[[Any], Any] | None = None,
                 max_detections: int | None = None,
                 evaluate_fn: Callable[[], dict[str, float]] | None = None) -> None:
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"COCOMetricsCallback: every_n_epochs={every_n_epochs} must be >= 1.")
        self.dataset = dataset
        self.every_n_epochs = every_n_epochs
        self.prefix = prefix
        self.max_batches = max_batches
        self.num_classes = num_classes
        self.class_names = class_names
        self.per_class = per_class
        self.verbose = verbose
        self.predict_fn = predict_fn
        self.max_detections = max_detections
        self.evaluate_fn = evaluate_fn
        if dataset is None and evaluate_fn is None:
            raise ValueError("COCOMetricsCallback: give a dataset or an evaluate_fn.")
        self.history: list[tuple[int, dict[str, float]]] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if (epoch + 1) % self.every_n_epochs != 0:
            return
        start = time.monotonic()
        if self.evaluate_fn is not None:
            metrics = dict(self.evaluate_fn())
        else:
            metrics = evaluate_model(
                self.model, self.dataset, max_batches=self.max_batches, verbose=self.verbose > 1,
                num_classes=self.num_classes, class_names=self.class_names, per_class=self.per_class,
                predict_fn=self.predict_fn, max_detections=self.max_detections,
            )
        metrics["seconds"] = round(time.monotonic() - start, 2)
        self.history.append((epoch, metrics))
        if logs is not None:
            logs.update({f"{self.prefix}{name}": value for name, value in metrics.items()})
        if self.verbose:
            shown = " - ".join(f"{self.prefix}{k}: {metrics[k]:.4f}" for k in ("AP", "AP50", "APs"))
            print(f"\nEpoch {epoch + 1}: {shown} (up to {metrics['max_detections']} detections per image)")
