"""Runs the selected training scenarios (subprocesses) two at a time, from the start of the session.

Tests marked `@pytest.mark.scenario("name")` take the `scenarios` fixture and
wait for their scenario's result. Starting every selected scenario up front
keeps both CPU cores busy (one TensorFlow process mostly traces on one core),
which roughly halves the wall time of tests/training.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from training_helpers import SCENARIOS


def pytest_configure(config):
    config.addinivalue_line("markers", "scenario(name): test that asserts on a training scenario of conftest.py")


@pytest.fixture(scope="session", autouse=True)
def scenarios(request, tmp_path_factory) -> dict[str, Future]:
    wanted = []
    for item in request.session.items:
        for marker in item.iter_markers("scenario"):
            if marker.args[0] not in wanted:
                wanted.append(marker.args[0])
    unknown = [name for name in wanted if name not in SCENARIOS]
    if unknown:
        raise ValueError(f"Unknown scenario(s) {unknown}; known: {sorted(SCENARIOS)}")
    order = [name for name in SCENARIOS if name in wanted]
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scenario")
    futures = {name: pool.submit(SCENARIOS[name], tmp_path_factory.mktemp(name)) for name in order}
    yield futures
    for future in futures.values():
        future.cancel()
    pool.shutdown(wait=True)


@pytest.fixture
def scenario(request, scenarios):
    """The result of this test's scenario (raises the scenario's error, if it failed)."""
    marker = request.node.get_closest_marker("scenario")
    if marker is None:
        raise ValueError("the `scenario` fixture needs @pytest.mark.scenario(name)")
    return scenarios[marker.args[0]].result()
