"""Shared test settings: quiet TensorFlow, deterministic ops and seeds.

Tests that train a model for a few steps must give one answer on one machine:
op determinism is on for this process (`tf.config.experimental.enable_op_determinism`)
and, through TF_DETERMINISTIC_OPS, for the `ipg-train` subprocesses that tests start.
Different CPUs may still pick different oneDNN kernels, so every quality threshold
is set with headroom (checked with TF_ENABLE_ONEDNN_OPTS=0 as well).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.experimental.enable_op_determinism()


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield


def pytest_report_header(config):
    """Versions, CPU flags and the oneDNN ISA, before the first test (see tests/machine_report.py)."""
    from machine_report import report_lines

    return report_lines()
