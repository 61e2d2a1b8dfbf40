"""Drawing boxes and plotting histories writes real pixels / files."""

import numpy as np
from PIL import Image

from ipg_keras.visualization import GT_COLOUR, draw_detections, plot_history, save_detection_grid


def test_draw_detections_changes_pixels_on_box_edges_only():
    image = np.full((64, 64, 3), 100.0, np.float32)
    out = draw_detections(image, [[10, 12, 30, 40]], [1], scores=[0.8], class_names=["a", "b"],
                          show_labels=False)
    assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
    changed = np.any(out != 100, axis=-1)
    assert changed[12, 10:30].all() and changed[39, 10:30].all()  # top and bottom edges
    assert changed[12:40, 10].all() and changed[12:40, 29].all()  # left and right edges
    assert not changed[20:30, 15:25].any()  # interior untouched
    assert not changed[50:, 50:].any()


def test_draw_detections_ground_truth_colour_threshold_and_padding():
    image = np.zeros((48, 48, 3), np.uint8)
    out = draw_detections(image, [[5, 5, 20, 20], [25, 25, 40, 40], [0, 0, 0, 0]], [0, 0, -1],
                          scores=[0.9, 0.1, 0.0], ground_truth={"boxes": [[2, 30, 12, 44]], "classes": [0]},
                          score_threshold=0.5, show_labels=False)
    assert tuple(out[30, 6]) == GT_COLOUR
    assert out[5, 10].any()  # kept detection drawn
    assert not out[25, 30:35].any()  # below the score threshold: not drawn


def test_draw_detections_scale_and_label():
    image = np.zeros((20, 20, 3), np.uint8)
    out = draw_detections(image, [[4, 8, 12, 16]], [0], scores=[0.5], class_names=["disc"], scale=3)
    assert out.shape == (60, 60, 3)
    assert out[:24].any()  # label drawn above the box


def test_save_detection_grid_and_plot_history(tmp_path):
    images = np.full((3, 32, 32, 3), 50.0, np.float32)
    preds = {"boxes": np.tile(np.array([[[4, 4, 20, 20], [1, 1, 30, 30]]], np.float32), (3, 1, 1)),
             "scores": np.tile(np.array([[0.9, 0.95]], np.float32), (3, 1)),
             "classes": np.tile(np.array([[1, 0]], np.int32), (3, 1)),
             "num_detections": np.array([1, 1, 0], np.int32)}
    gts = {"boxes": np.tile(np.array([[[6, 6, 22, 22]]], np.float32), (3, 1, 1)),
           "classes": np.ones((3, 1), np.int32)}
    path = save_detection_grid(images, preds, tmp_path / "grid.png", ["x", "y"], ground_truths=gts,
                               max_images=2, columns=2)
    grid = np.asarray(Image.open(path))
    assert grid.shape[0] > 32 and grid.shape[1] > 64  # two tiles side by side
    assert (grid == np.array(GT_COLOUR, np.uint8)).all(axis=-1).any()

    history = {"loss": [3.0, 2.0, 1.5, 1.2], "val_loss": [3.1, 2.2, 1.9, 1.8], "val_AP": [0.1, 0.3]}
    plot = plot_history(history, tmp_path / "sub" / "history.png")
    assert plot.exists()
    pixels = np.asarray(Image.open(plot))
    assert pixels.shape[0] > 100 and pixels.std() > 5  # non-blank figure
