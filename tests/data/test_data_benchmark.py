"""benchmarks/data_pipeline.py runs without a model and with an injected training step."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from data_helpers import trees  # noqa: F401 (pytest fixture)

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "data_pipeline.py"


def _module():
    spec = importlib.util.spec_from_file_location("data_pipeline_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_runs_with_no_model_and_with_injected_step(trees, capsys):
    bench = _module()
    small = ["--split", "val", "--steps", "2", "--warmup", "1", "--batch-size", "4", "--image-size", "128",
             "--tile-size", "400", "--overlap", "128", "--shuffle-buffer", "4"]
    rows = bench.main(small + ["--no-model"])
    assert [r[0] for r in rows] == ["decode full image", "decode + tile", "tile + augment + batch",
                                    "same, tiles cached"]
    assert all(r[1] > 0 for r in rows)
    out = capsys.readouterr().out
    assert "images/s" in out and "20 tiles of 400 px" in out

    seen = []

    def step(images, targets):
        seen.append((tuple(images.shape), tuple(targets["boxes"].shape[:1])))

    rows = bench.main(small, train_step=step)
    assert [r[0] for r in rows][-2:] == ["training step alone", "pipeline + training step"]
    assert seen and all(s[0] == (4, 128, 128, 3) and s[1] == (4,) for s in seen)


def test_benchmark_train_step_flag_needs_module_and_factory():
    bench = _module()
    with pytest.raises(SystemExit, match="module:factory"):
        bench._load_step("just_a_module", 128, 4)
