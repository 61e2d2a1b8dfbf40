"""Smoke tests of the benchmark scripts: each runs with tiny settings, prints its table and writes JSON.

No timing assertions: the CPU is shared, and these only check that the scripts work.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_format_table_and_flops_counter():
    common = _load("common")
    import tensorflow as tf

    table = common.format_table(["a", "b"], [["x", 1.23456], ["y", None]])
    assert table.splitlines()[0] == "| a | b |" and "1.23" in table and "n/a" in table
    # A 1x1 conv of 4 -> 8 channels on 5x5: 2 * 25 * 4 * 8 FLOPs (+ bias adds), counted from the graph.
    kernel = tf.ones([1, 1, 4, 8])
    flops = common.count_flops(lambda x: tf.nn.conv2d(x, kernel, 1, "SAME"), tf.TensorSpec([1, 5, 5, 4]))
    assert flops == 2 * 25 * 4 * 8


@pytest.mark.slow  # builds and traces several detectors: minutes on a busy 2-core CPU
def test_speed_script_tiny(tmp_path, capsys):
    speed = _load("speed")
    out = tmp_path / "speed.json"
    assert speed.main(["--preset", "tiny", "--detectors", "retinanet", "--batch-sizes", "1", "--no-train",
                       "--warmup1", "1", "--iters1", "1", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "forward img/s" in printed and "IPG cost" in printed
    result = json.loads(out.read_text())
    ipg = result["models"]["IPG-RetinaNet-resnet18"]
    base = result["models"]["RetinaNet-resnet18 (ipg=False)"]
    assert ipg["gflops"] > base["gflops"] > 0 and ipg["params"] > base["params"]
    assert ipg["batch1"]["forward_images_per_s"] > 0 and ipg["batch1"]["post_over_forward"] > 0
    cost = [c for c in result["ipg_cost"] if c["family"] == "retinanet"][0]
    assert isinstance(cost["pass"], bool) and cost["target_fraction"] == 0.15
    # keras-cv's RetinaNet is either measured or its failure is recorded, never silently absent.
    assert "keras-cv RetinaNet-resnet18" in result["models"] or "keras_cv RetinaNet" in result["errors"]


def test_study_summary_from_run_jsons(tmp_path):
    study = _load("ipg_study")
    runs = tmp_path / "runs"
    runs.mkdir()
    for arm, base in (("ipg", 0.3), ("baseline", 0.2)):
        for seed in (0, 1):
            record = {"settings": {"dataset": "synthetic", "arm": arm, "seed": seed},
                      "metrics": {"AP": base + 0.01 * seed, "AP50": base + 0.1, "APs": base - 0.1}}
            (runs / f"synthetic_{arm}_seed{seed}.json").write_text(json.dumps(record))
    summary = study.summarize(runs)
    ipg = [g for g in summary["groups"] if g["arm"] == "ipg"][0]
    assert ipg["n"] == 2 and math.isclose(ipg["AP"]["mean"], 0.305)
    assert math.isclose(summary["paired"][0]["AP"]["mean"], 0.1) and math.isclose(summary["paired"][0]["AP"]["std"], 0)
    table = study.summary_table(summary)
    assert "ΔAPs" in table and "0.305 ± 0.007" in table
    study.plot_summary(summary, tmp_path / "s.png", "test")
    assert (tmp_path / "s.png").stat().st_size > 1000


@pytest.mark.slow  # builds and traces several detectors: minutes on a busy 2-core CPU
def test_study_quick_runs_and_resumes(tmp_path, capsys):
    study = _load("ipg_study")
    argv = ["--quick", "--datasets", "synthetic", "--seeds", "0", "--out", str(tmp_path), "--verbose", "0"]
    assert study.main(argv) == 0
    run_files = sorted(p.name for p in (tmp_path / "quick" / "runs").glob("*.json"))
    assert run_files == ["synthetic_baseline_seed0.json", "synthetic_ipg_seed0.json"]
    record = json.loads((tmp_path / "quick" / "runs" / "synthetic_ipg_seed0.json").read_text())
    assert record["settings"]["ipg"] is True and -1.0 <= record["metrics"]["APs"] <= 1.0
    assert (tmp_path / "quick" / "summary.png").exists()
    capsys.readouterr()
    assert study.main(argv) == 0  # resumable: both runs exist, nothing is trained again
    printed = capsys.readouterr().out
    assert printed.count("skip ") == 2 and "ran 0 new run(s)" in printed


@pytest.mark.slow  # builds and traces several detectors: minutes on a busy 2-core CPU
def test_study_quick_trees_sliced(tmp_path):
    from ipg_keras.utils.paths import trees_dir

    if not (Path(trees_dir()) / "train").is_dir():
        pytest.skip(f"trees data not found at {trees_dir()} (set IPG_KERAS_TREES_DIR)")
    study = _load("ipg_study")
    assert study.main(["--quick", "--datasets", "trees", "--seeds", "0", "--arms", "ipg", "--out", str(tmp_path),
                       "--verbose", "0"]) == 0
    record = json.loads((tmp_path / "quick" / "runs" / "trees_ipg_seed0.json").read_text())
    assert record["metrics"]["train_images_or_tiles"] > 50  # the big train image was tiled
