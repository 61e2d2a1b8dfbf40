"""The real-data experiment: trees_retinanet trains on tiles and evaluates whole images by sliced inference."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ipg_keras.utils.paths import trees_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not trees_dir().exists(), reason=f"trees sample data not found at {trees_dir()} "
                    "(set IPG_KERAS_TREES_DIR to the folder with train/ and val/)")
def test_trees_config_trains_on_tiles_and_scores_the_whole_val_image(tmp_path):
    args = [sys.executable, "-m", "ipg_keras.cli.train", "trees_retinanet", "--output", str(tmp_path / "run")]
    for item in ("train.epochs=2", "train.steps_per_epoch=1", "train.verbose=2", "eval.every_n_epochs=1",
                 f"data.train_annotations={trees_dir() / 'train'}", f"data.val_annotations={trees_dir() / 'val'}"):
        args += ["--set", item]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["num_val_images"] == 1  # the whole 1249 x 1035 image, not its tiles
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert -1.0 <= metrics[key] <= 1.0
    assert metrics["APs"] != -1.0  # the val image has small crowns, so APs is defined
    # Validation AP during training: sliced evaluation of the whole val image after every epoch, in the
    # history (with its cost) and drawn next to the losses.
    records = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [r["steps_done"] for r in records] == [1, 2]
    for record in records:
        assert 0.0 <= record["val_AP"] <= record["val_AP50"] <= 1.0 and record["val_seconds"] > 0
        assert record["val_APs"] != -1.0  # scored on the whole image's crowns, not a resized one
    header = (tmp_path / "run" / "history.csv").read_text().splitlines()[0].split(",")
    assert {"loss", "val_AP", "val_AP50"} <= set(header)
    assert (tmp_path / "run" / "training_curves.png").stat().st_size > 10_000
