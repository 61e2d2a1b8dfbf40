"""Callbacks of `ipg-train`: resumable checkpoints, chief-only evaluation and logs.

Fault tolerance follows the Keras multi-worker guide: every worker saves the
training state at the same steps (saving distributed variables may take part in
collectives), the chief into `<output>/checkpoints`, the other workers into a
temporary folder that is deleted right after; every worker restores from the
chief's folder, which must therefore be on a file system all workers see.

Keras' own `BackupAndRestore` is not used because (Keras 3.15) it restores only
the epoch number: a mid-epoch backup re-runs the whole epoch on top of the
mid-epoch weights (the run overshoots its step count), and all workers write the
same files. `TrainingState` keeps the model, the optimizer (slots, iteration,
loss scale) and the number of completed train steps, and `run()` resumes a
partial epoch with exactly the steps it still lacks.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import keras
import tensorflow as tf

from ipg_keras.evaluation import COCOMetricsCallback

log = logging.getLogger("ipg_keras.train")

# COCO summary metrics added to the epoch logs as val_<name>.
SUMMARY_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


# ------------------------------------------------------------------ workers
@dataclass(frozen=True)
class WorkerContext:
    """Which process of a (multi-worker) job this is.

    Attributes:
        task_type: "worker" / "chief" under TF_CONFIG, None for a single process.
        task_id: index of the task within its type (0 for a single process).
        is_chief: the process that evaluates, writes logs, metrics, models and exports.
        multi_worker: several processes train together (MultiWorkerMirroredStrategy).
    """

    task_type: str | None = None
    task_id: int = 0
    is_chief: bool = True
    multi_worker: bool = False

    @classmethod
    def from_strategy(cls, strategy: tf.distribute.Strategy) -> "WorkerContext":
        resolver = getattr(strategy, "cluster_resolver", None)
        multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
            getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)()
        )
        if resolver is None or not multi_worker:
            return cls()
        task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
        cluster = resolver.cluster_spec().as_dict()
        # The chief is the "chief" task, or worker 0 when the cluster has no chief task.
        is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in cluster)
        return cls(task_type, task_id, is_chief, True)

    def temp_dir(self, output: str | Path) -> Path:
        """A folder private to this (non-chief) worker, for writes that are thrown away."""
        return Path(output) / ".worker_tmp" / f"{self.task_type}_{self.task_id}"


_BROADCASTS: dict[int, Any] = {}


def chief_value(strategy: tf.distribute.Strategy, value: float) -> float:
    """The chief's `value` on every worker: an all-reduce to which only global replica 0 contributes.

    Every worker of the strategy must call this at the same point (it is a collective).
    """
    broadcast = _BROADCASTS.get(id(strategy))
    if broadcast is None:

        @tf.function
        def broadcast(x):
            def fn(v):
                context = tf.distribute.get_replica_context()
                mine = tf.where(tf.equal(context.replica_id_in_sync_group, 0), v, tf.zeros_like(v))
                return context.all_reduce(tf.distribute.ReduceOp.SUM, mine)

            return strategy.run(fn, args=(x,))

        _BROADCASTS[id(strategy)] = broadcast
    result = broadcast(tf.constant(float(value), tf.float64))
    return float(strategy.experimental_local_results(result)[0].numpy())


# ------------------------------------------------------------ training state
class TrainingState:
    """Resumable training state: model, optimizer and completed train steps in a CheckpointManager.

    Args:
        model: compiled model whose optimizer is built (its slots must exist to be restored).
        directory: the chief's checkpoint folder (`<output>/checkpoints`).
        worker: this process; non-chief workers write to a temporary folder.
        max_to_keep: checkpoints kept (the newest ones; 2 survives a corrupt last write).
    """

    def __init__(self, model: keras.Model, directory: str | Path, worker: WorkerContext = WorkerContext(),
                 max_to_keep: int = 2):
        self.model = model
        self.directory = Path(directory)
        self.worker = worker
        # Batches run, counted in Python and stored with the checkpoint: optimizer.iterations
        # does not advance on the steps LossScaleOptimizer skips (float16 overflow).
        self.step_variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="train_steps")
        self.steps_done = 0
        # Every weight of the model, also listed by position: tf.train.Checkpoint finds variables
        # through the object graph, and layers that keep sublayers in containers it does not
        # follow (IPGTransform's residual blocks, tuples in a list) would lose their
        # non-trainable state (BatchNorm moving mean/variance; trainable weights are also
        # reached through the optimizer). The list order is the model's, fixed by its config.
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, train_steps=self.step_variable,
                                              model_weights=list(model.weights))
        self._legacy = tf.train.Checkpoint(model=model, optimizer=model.optimizer, train_steps=self.step_variable)
        self.last_saved_step: int | None = None
        self.last_path: str | None = None
        if worker.is_chief:
            self.write_dir = self.directory
        else:
            self.write_dir = worker.temp_dir(self.directory.parent) / "checkpoints"
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.write_dir), max_to_keep=max_to_keep)

    def latest(self) -> str | None:
        return tf.train.latest_checkpoint(str(self.directory))

    def restore(self) -> int:
        """Restores the newest checkpoint of the chief's folder, if any; returns the completed steps."""
        path = self.latest()
        if path is None:
            return 0
        try:
            if "model_weights" in {name.split("/")[0] for name, _ in tf.train.list_variables(path)}:
                status = self.checkpoint.restore(path)
            else:
                # Written before model_weights existed: BatchNorm moving statistics of layers that the
                # object graph misses were not saved; they restart from their initial values.
                log.warning("%s predates full-weight checkpoints: BatchNorm moving statistics of some layers "
                            "(e.g. IPG transforms) restart from their initial values.", path)
                status = self._legacy.restore(path)
            status.assert_existing_objects_matched()
            status.expect_partial()  # e.g. compile metrics, built later by fit()
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            raise ValueError(
                f"Cannot resume from {path}: it does not match this model/optimizer ({error}). It was "
                f"written by a different config; train into a new --output folder or delete "
                f"{self.directory} to start over."
            ) from None
        self.steps_done = int(self.step_variable.numpy())
        self.last_saved_step = self.steps_done
        self.last_path = path
        return self.steps_done

    def save(self) -> str | None:
        """Saves the state at the current step (once per step); returns the chief's checkpoint path."""
        if self.last_saved_step == self.steps_done:
            return self.last_path
        self.step_variable.assign(self.steps_done)
        path = self.manager.save(checkpoint_number=self.steps_done)
        self.last_saved_step = self.steps_done
        if self.worker.is_chief:
            self.last_path = path
        else:
            shutil.rmtree(self.write_dir, ignore_errors=True)
        return self.last_path


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Writes JSON so that a reader (or a crash) never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class StepCheckpoint(keras.callbacks.Callback):
    """Counts train steps and saves the `TrainingState` every `every_steps` steps and at each epoch end.

    The chief also writes `progress_path` (JSON: steps done, epochs completed,
    checkpoint path) after each save, which tools and tests can watch.
    """

    def __init__(self, state: TrainingState, steps_per_epoch: int, total_steps: int,
                 every_steps: int | None = None, progress_path: str | Path | None = None):
        super().__init__()
        self.state = state
        self.steps_per_epoch = int(steps_per_epoch)
        self.total_steps = int(total_steps)
        self.every_steps = every_steps
        self.progress_path = Path(progress_path) if progress_path else None

    def on_train_batch_end(self, batch, logs=None):
        self.state.steps_done += 1
        if self.every_steps and self.state.steps_done % self.every_steps == 0:
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        self._save()

    def _save(self) -> None:
        path = self.state.save()
        if self.progress_path is not None and self.state.worker.is_chief:
            steps = self.state.steps_done
            write_json_atomic(self.progress_path, {
                "steps_done": steps,
                "total_steps": self.total_steps,
                "epochs_completed": steps // self.steps_per_epoch,
                "checkpoint": path,
                "time": time.time(),
            })


# ---------------------------------------------------------------- evaluation
def make_predict_fn(model: keras.Model) -> Callable[[Any], dict]:
    """`images -> detections` in a plain (not jit-compiled, not distributed) tf.function.

    Evaluation runs on the chief alone: Keras' `predict_on_batch` would go
    through the strategy (collectives the other workers never join) and through
    XLA when `jit_compile` is on (NMS is not XLA-compilable).
    """
    fn = tf.function(model.detect, reduce_retracing=True, jit_compile=False)

    def predict(images):
        return {k: v.numpy() for k, v in fn(tf.convert_to_tensor(images, tf.float32)).items()}

    return predict


def average_weight_pairs(optimizer) -> list[tuple[Any, Any]]:
    """(trainable variable, its moving average) pairs of an optimizer built with `use_ema` (else empty)."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    if not getattr(optimizer, "use_ema", False) or not getattr(optimizer, "built", False):
        return []
    return [(v, a) for v, a in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average)
            if a is not None]


def swap_average_weights(optimizer) -> int:
    """Exchanges the trainable weights and their moving averages (a second call swaps them back).

    Returns the number of variables swapped (0 without `use_ema`).
    """
    pairs = average_weight_pairs(optimizer)
    for variable, average in pairs:
        raw = tf.identity(variable.value)
        variable.assign(average.value)
        average.assign(raw)
    return len(pairs)


def apply_average_weights(optimizer) -> int:
    """Sets the trainable weights to their moving averages for good (what Keras does when `fit()` ends)."""
    pairs = average_weight_pairs(optimizer)
    for variable, average in pairs:
        variable.assign(average.value)
    return len(pairs)


class SwapAverageWeights(keras.callbacks.Callback):
    """Swaps the weights and their moving averages at each epoch end (`train.ema`).

    `ipg-train` places one before the evaluation and the model files of the
    epoch and one after them, so those see the averaged weights and the next
    training step the raw ones. The resumable checkpoint is written before the
    first swap (raw weights and the optimizer, averages included).
    """

    def on_epoch_end(self, epoch, logs=None):
        swap_average_weights(self.model.optimizer)


class ChiefCOCOMetrics(COCOMetricsCallback):
    """COCO metrics on the validation set every `every_n_epochs` epochs, on the chief only.

    Adds `val_AP`, `val_AP50`, ... to the epoch logs (so callbacks after this
    one, such as the best-model checkpoint, see them). Other workers skip it.
    `evaluate_fn` replaces the evaluation of `dataset` (sliced evaluation of
    whole large images, see `COCOMetricsCallback`).
    """

    def __init__(self, dataset, every_n_epochs: int, predict_fn: Callable, worker: WorkerContext,
                 num_classes: int | None = None, class_names=None, prefix: str = "val_",
                 evaluate_fn: Callable[[], dict] | None = None):
        super().__init__(dataset, every_n_epochs=every_n_epochs, prefix=prefix, num_classes=num_classes,
                         class_names=class_names, predict_fn=predict_fn, evaluate_fn=evaluate_fn)
        self.worker = worker

    def on_epoch_end(self, epoch, logs=None):
        if not self.worker.is_chief:
            return
        super().on_epoch_end(epoch, logs)
        if self.history and self.history[-1][0] == epoch:
            metrics = self.history[-1][1]
            log.info("epoch %d: %s", epoch + 1,
                     " ".join(f"{self.prefix}{k}={metrics[k]:.4f}" for k in SUMMARY_METRICS if k in metrics))


def save_model_file(model: keras.Model, path: str | Path) -> None:
    """`model.save(path)` without the compile config (optimizer and schedule classes of ipg-train).

    The file then loads wherever `ipg_keras` is importable, with or without
    `training/`. Training resumes from `checkpoints/` (which has the optimizer),
    never from these files.
    """
    compiled = model.compiled
    model.compiled = False
    try:
        model.save(str(path))
    finally:
        model.compiled = compiled


class _PlainSave:
    """ModelCheckpoint mixin: saves with `save_model_file`."""

    def _save_model(self, epoch, batch, logs):
        compiled = self.model.compiled
        self.model.compiled = False
        try:
            super()._save_model(epoch, batch, logs)
        finally:
            self.model.compiled = compiled


class LastCheckpoint(_PlainSave, keras.callbacks.ModelCheckpoint):
    """The model after the latest epoch as `filepath` (.keras)."""

    def __init__(self, filepath: str | Path):
        super().__init__(str(filepath), save_freq="epoch", verbose=0)


class BestCheckpoint(_PlainSave, keras.callbacks.ModelCheckpoint):
    """Keeps the model with the best `monitor` (default val_AP, higher is better) as `filepath`.

    Must come after the callback that adds `monitor` to the logs. Epochs without
    the metric (no evaluation that epoch) are skipped silently. The best value is
    kept in `<filepath>.json`, so a resumed run does not replace a better model
    saved before the interruption.
    """

    def __init__(self, filepath: str | Path, monitor: str = "val_AP", mode: str = "max"):
        self.record_path = Path(f"{filepath}.json")
        best = None
        if self.record_path.exists():
            best = json.loads(self.record_path.read_text()).get(monitor)
        super().__init__(str(filepath), monitor=monitor, mode=mode, save_best_only=True,
                         initial_value_threshold=best, verbose=0)

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None or (isinstance(current, float) and math.isnan(current)):
            return
        before = self.best
        super().on_epoch_end(epoch, logs)
        if self.best is not None and self.best != before:
            write_json_atomic(self.record_path, {self.monitor: float(self.best), "epoch": epoch + 1})


class HistoryLogger(keras.callbacks.Callback):
    """Appends one JSON line per epoch (`epoch`, `steps_done`, all logs) to `path`.

    Unlike CSVLogger it keeps metrics that only some epochs have (val_AP every
    n epochs) and survives restarts; `read_history` merges repeated epochs.
    """

    def __init__(self, path: str | Path, state: TrainingState):
        super().__init__()
        self.path = Path(path)
        self.state = state

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1, "steps_done": self.state.steps_done, "time": time.time()}
        try:  # the scheduled learning rate at the end of the epoch
            record["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        except (TypeError, ValueError, AttributeError):
            pass
        for key, value in (logs or {}).items():
            try:
                record[key] = float(value)
            except (TypeError, ValueError):
                continue
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_history(path: str | Path) -> list[dict[str, float]]:
    """Epoch records of a `HistoryLogger` file in epoch order, the last record of a repeated epoch winning."""
    path = Path(path)
    if not path.exists():
        return []
    by_epoch: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            by_epoch[int(record["epoch"])] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def history_series(records: list[dict]) -> dict[str, list[float]]:
    """`{metric: [values]}` for `plot_history`: losses, learning rate and val_* metrics."""
    keys: list[str] = []
    for record in records:
        keys += [k for k in record if k not in keys and k not in ("epoch", "steps_done", "time")]
    return {k: [r[k] for r in records if k in r] for k in keys}


def history_steps(records: list[dict]) -> dict[str, list[int]]:
    """`{metric: [steps_done]}`: the training step at which each value of `history_series` was logged."""
    series = history_series(records)
    return {k: [int(r.get("steps_done", r["epoch"])) for r in records if k in r] for k in series}


def write_history_csv(records: list[dict], path: str | Path) -> None:
    import csv

    keys: list[str] = []
    for record in records:
        keys += [k for k in record if k not in keys]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for record in records:
            writer.writerow(record)


class TimeLimit(keras.callbacks.Callback):
    """Stops training cleanly (after the current batch) once `minutes` of wall time have passed.

    With several workers the chief's clock decides, broadcast every batch, so
    that all workers stop after the same batch (a worker that stopped alone
    would leave the others waiting in the next all-reduce).
    """

    def __init__(self, minutes: float, strategy: tf.distribute.Strategy | None = None,
                 worker: WorkerContext = WorkerContext()):
        super().__init__()
        self.seconds = minutes * 60.0
        self.start = time.monotonic()
        self.strategy = strategy
        self.worker = worker

    def on_train_batch_end(self, batch, logs=None):
        expired = time.monotonic() - self.start > self.seconds
        if self.worker.multi_worker:
            expired = chief_value(self.strategy, float(expired)) > 0.5
        if expired:
            log.info("train.max_minutes reached: stopping after this batch.")
            self.model.stop_training = True
