"""Mixed precision and XLA as config switches: each trains a few steps on the CPU.

Runs in the "precision" scenario (one subprocess, see training_helpers.py).
"""

from __future__ import annotations

import math

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.scenario("precision")]


def _trained(result: dict) -> None:
    assert "error" not in result, result.get("error")
    assert result["steps_completed"] == 2
    assert result["history"] and all(math.isfinite(r["loss"]) for r in result["history"])


def test_mixed_float16_trains_with_loss_scaling(scenario):
    result = scenario["mixed_float16"]
    _trained(result)
    assert result["compute_dtype"] == "float16" and result["variable_dtype"] == "float32"
    # compile() wrapped the optimizer in a LossScaleOptimizer (dynamic loss scaling).
    assert result["loss_scale_optimizer"] is True


def test_mixed_bfloat16_trains_without_loss_scaling(scenario):
    result = scenario["mixed_bfloat16"]
    _trained(result)
    assert result["compute_dtype"] == "bfloat16" and result["variable_dtype"] == "float32"
    assert result["loss_scale_optimizer"] is False


def test_xla_jit_compile_trains(scenario):
    result = scenario["xla"]
    _trained(result)
    assert result["jit_compile"] is True
    assert result["optimizer_iterations"] == 2
