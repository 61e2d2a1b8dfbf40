"""ipg-train on tf.distribute and its fault tolerance (tiny model, 2 CPU cores).

The runs themselves are the scenarios of conftest.py / training_helpers.py
(subprocesses started at the beginning of the session, two at a time).
"""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

pytestmark = pytest.mark.slow

# The sums of the all-reduces (gradients, positives, BN moments) add float32 values in
# another order than one device does; agreement to ~1e-6 is expected.
LOSS_RTOL = 1e-4
WEIGHT_ATOL = 1e-4


@pytest.mark.scenario("mirrored")
def test_mirrored_two_cpu_replicas_match_single_device(scenario):
    single, mirrored = scenario["default"], scenario["mirrored"]
    assert "error" not in single and "error" not in mirrored, scenario
    assert (single["num_replicas"], single["per_replica_batch_size"]) == (1, 4)
    assert (mirrored["num_replicas"], mirrored["per_replica_batch_size"]) == (2, 2)
    assert single["steps_completed"] == mirrored["steps_completed"] == 3
    losses = scenario["losses"]
    assert len(losses["default"]) == 3
    # Same global batch, same seed: the per-step losses of the 3 steps agree.
    np.testing.assert_allclose(losses["mirrored"], losses["default"], rtol=LOSS_RTOL)
    # ... and the steps really changed the model, so agreement after them means something.
    assert abs(losses["default"][2] - losses["default"][0]) > 100 * LOSS_RTOL * losses["default"][0]
    assert scenario["max_weight_diff"] < WEIGHT_ATOL


@pytest.mark.scenario("multi_worker")
def test_multi_worker_two_processes_end_with_identical_weights(scenario):
    chief, other = scenario["workers"]
    output = scenario["output"]
    assert chief["chief"] is True and other["chief"] is False
    assert chief["num_replicas"] == other["num_replicas"] == 2 and chief["per_replica_batch_size"] == 2
    assert chief["steps_completed"] == other["steps_completed"] == 4
    assert chief["optimizer_iterations"] == other["optimizer_iterations"] == 4
    # Same all-reduced gradients and global-batch BN statistics on both workers: bit-identical weights.
    assert chief["weights_sha256"] == other["weights_sha256"]
    # Only the chief evaluated (each epoch) and wrote files; the other worker removed its temporary folder.
    history = [json.loads(line) for line in (output / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2] and all("val_AP" in r for r in history)
    assert (output / "best.keras").exists() and (output / "best.keras.json").exists()
    assert "AP" in json.loads((output / "metrics.json").read_text())
    assert not (output / ".worker_tmp").exists()


@pytest.mark.scenario("kill_resume")
def test_killed_run_resumes_to_the_configured_step_count(scenario):
    total, epochs, killed_at = scenario["total"], scenario["epochs"], scenario["killed_at"]
    result, history, first = scenario["result"], scenario["history"], scenario["first_history"]
    assert scenario["returncode"] == -signal.SIGKILL
    assert killed_at < total, "killed too late to test resuming"
    # The restart continued from the last checkpoint (at or after the kill point) ...
    assert killed_at <= result["resumed_from_step"] < total
    # ... and ended at the configured step count, not one step more or less.
    assert result["steps_completed"] == result["optimizer_iterations"] == total
    assert result["epochs_completed"] == epochs
    assert sorted({r["epoch"] for r in history}) == list(range(1, epochs + 1))
    # Epoch 1 was completed before the kill and was not trained again.
    assert first and first[0]["epoch"] == 1
    assert [r for r in history if r["epoch"] == 1] == [first[0]]
    assert history[-1]["steps_done"] == total
    output = scenario["output"]
    assert (output / "model.keras").exists() and (output / "training_curves.png").exists()
