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
    for item in ("train.epochs=1", "train.steps_per_epoch=2", "train.verbose=2",
                 f"data.train_annotations={trees_dir() / 'train'}", f"data.val_annotations={trees_dir() / 'val'}"):
        args += ["--set", item]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["num_val_images"] == 1  # the whole 1249 x 1035 image, not its tiles
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert -1.0 <= metrics[key] <= 1.0
    assert metrics["APs"] != -1.0  # the val image has small crowns, so APs is defined
