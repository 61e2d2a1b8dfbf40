"""The main job end to end, shrunk: ipg-train on the synthetic default -> metrics, PNGs, .keras, SavedModel."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "train.epochs=1", "train.steps_per_epoch=6", "train.batch_size=4", "train.warmup_steps=2",
    "data.num_train_images=24", "data.num_val_images=8", "data.image_size=128",
    "model.fpn_channels=16", "model.head_width=16", "model.head_depth=1", "model.ipg_width=8",
    "train.max_minutes=null", "train.verbose=2",
]


def run_train(tmp_path, *extra):
    args = [sys.executable, "-m", "ipg_keras.cli.train", "synthetic_retinanet_cpu", "--output", str(tmp_path / "run")]
    for item in (*TINY, f"export.directory={tmp_path / 'exports'}", *extra):
        args += ["--set", item]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_ipg_train_writes_metrics_pictures_model_and_saved_model(tmp_path):
    proc = run_train(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert -1.0 <= metrics[key] <= 1.0
    assert metrics["wall_seconds"] > 0 and metrics["num_val_images"] == 8
    for name in ("detections.png", "training_curves.png", "model.keras", "config.yaml", "history.csv"):
        assert (run / name).stat().st_size > 0, name
    saved = Path(metrics["saved_model"])
    assert (saved / "saved_model.pb").exists()


def test_ipg_train_rejects_an_unknown_key_before_doing_anything(tmp_path):
    proc = run_train(tmp_path, "train.learning_rat=0.1")
    assert proc.returncode == 2
    assert "Unknown config key 'train.learning_rat'" in proc.stderr and "learning_rate" in proc.stderr
    assert not (tmp_path / "run").exists()
