"""One detection limit per image for every scoring path (coco_metrics, COCOEvaluator,
evaluate_model, COCOMetricsCallback, evaluate_sliced, evaluate_detections = ipg-predict's
scoring), at least what the model keeps, and said.

Case dense-image-maxdets (`../shared/cases`, read-only; skipped when absent): a 300x300
image with 144 small objects; perfect detections must score AP 1.000 on every path
(pycocotools' default of 100 detections per image gives 0.693).
"""

from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
import pytest

from ipg_keras.evaluation import (
    COCOEvaluator,
    COCOMetricsCallback,
    coco_metrics,
    detection_limit,
    evaluate_detections,
    evaluate_model,
    evaluate_sliced,
)
from shared_cases import case

@pytest.fixture(scope="module")
def dense():
    """(image float32 [300, 300, 3], GroundTruth of orchard.png)."""
    folder = case("dense-image-maxdets")
    from PIL import Image

    from ipg_keras.data import load_ground_truth

    image = folder / "orchard.png"
    gt = load_ground_truth(folder / "ann.json", [image])
    assert len(gt.gts[image]["boxes"]) == 144
    return np.asarray(Image.open(image).convert("RGB"), np.float32), gt


def find_squares(images: np.ndarray, capacity: int = 300) -> dict:
    """A perfect detector of the white squares of each image (those cut by the border are
    skipped), scores decreasing with position; padded prediction format."""
    images = np.asarray(images)
    b, h, w, _ = images.shape
    out = {"boxes": np.zeros((b, capacity, 4), "float32"), "scores": np.zeros((b, capacity), "float32"),
           "classes": np.full((b, capacity), -1, "int32"), "num_detections": np.zeros(b, "int32")}
    for i in range(b):
        bright = images[i, ..., 0] > 128
        top_left = bright & ~np.roll(bright, 1, 0) & ~np.roll(bright, 1, 1)
        top_left[0, :] &= False
        top_left[:, 0] &= False
        n = 0
        for y, x in zip(*np.nonzero(top_left)):
            x2 = x + np.argmin(np.append(bright[y, x:], False))
            y2 = y + np.argmin(np.append(bright[y:, x], False))
            if x2 >= w or y2 >= h:
                continue
            out["boxes"][i, n] = [x, y, x2, y2]
            out["scores"][i, n] = 1.0 - 0.001 * n
            out["classes"][i, n] = 0
            n += 1
        out["num_detections"][i] = n
    return out


def test_detection_limit_rule():
    assert detection_limit(None, 20) == 100  # COCO's default when the model's limit is unknown
    assert detection_limit(None, 144) == 144  # never below what an image has
    assert detection_limit(300, 144) == 300  # the model's own limit
    assert detection_limit(50, 10) == 50
    with pytest.raises(ValueError):
        detection_limit(0, 0)


def test_dense_image_scores_one_on_every_path(dense, capsys, caplog):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    image, gt = dense
    file, = gt.records
    truth = gt.gts[file]
    pred = find_squares(image[None])
    n = int(pred["num_detections"][0])
    assert n == 144
    dets = {"boxes": pred["boxes"][0, :n], "scores": pred["scores"][0, :n], "classes": pred["classes"][0, :n]}

    # What pycocotools' default (100 per image) makes of these perfect detections: the bug.
    coco_gt = COCO(str(case("dense-image-maxdets") / "ann.json"))
    results = [{"image_id": 1, "category_id": 1, "score": float(s),
                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
               for b, s in zip(dets["boxes"], dets["scores"])]
    with contextlib.redirect_stdout(io.StringIO()):
        default = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        default.evaluate(), default.accumulate(), default.summarize()
    assert default.stats[0] == pytest.approx(0.693, abs=0.01)

    # coco_metrics: the default, and a limit below what the image has (raised to 144).
    with caplog.at_level(logging.INFO, logger="ipg_keras.evaluation"):
        m, summary = coco_metrics([{"image_id": 1, **truth}], [{"image_id": 1, **dets}], return_summary=True)
    assert m["AP"] == pytest.approx(1.0) and m["AR100"] == pytest.approx(1.0) and m["max_detections"] == 144
    assert "up to 144 detections per image" in summary and "maxDets=144 ] = 1.000" in summary
    assert any("maxDets=[1, 10, 144]" in r.getMessage() for r in caplog.records)
    assert coco_metrics([{"image_id": 1, **truth}], [{"image_id": 1, **dets}], max_detections=100)["AP"] == \
        pytest.approx(1.0)

    # ipg-predict's scoring (file -> detections against load_ground_truth).
    m = evaluate_detections(gt, {file: dets})
    assert m["AP"] == pytest.approx(1.0) and m["max_detections"] == 144 and m["num_images"] == 1

    # COCOEvaluator and evaluate_model on a batch; the model's own max_detections (300) is the limit.
    batch = (image[None], {"boxes": truth["boxes"][None], "classes": truth["classes"][None]})
    evaluator = COCOEvaluator()
    evaluator.update(batch[1], pred)
    assert evaluator.result()["AP"] == pytest.approx(1.0)

    class Model:
        max_detections = 300

        def predict_on_batch(self, images):
            return find_squares(images)

    m = evaluate_model(Model(), [batch], verbose=True)
    assert m["AP"] == pytest.approx(1.0) and m["max_detections"] == 300
    assert "up to 300 detections per image" in capsys.readouterr().out

    # The Keras callback (same rule: the model's max_detections).
    callback = COCOMetricsCallback([batch], verbose=1)
    callback.set_model(Model())
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs["val_AP"] == pytest.approx(1.0) and logs["val_max_detections"] == 300
    assert "up to 300 detections per image" in capsys.readouterr().out

    # Sliced evaluation: tiles of 128 px overlapping by 40 px, merged, scored at its max_detections.
    element = {"images": image, "image_id": 1, "bounding_boxes": {"boxes": truth["boxes"], "classes": truth["classes"]}}
    m = evaluate_sliced(find_squares, [element], tile_size=128, overlap=40, verbose=True)
    assert m["AP"] == pytest.approx(1.0) and m["max_detections"] == 300
    assert "up to 300 detections per image" in capsys.readouterr().out


def test_model_max_detections_from_a_detector_config():
    from ipg_keras.evaluation.coco import model_max_detections
    from model_helpers import tiny_retinanet

    assert model_max_detections(tiny_retinanet(max_detections=250)) == 250
    assert model_max_detections(object()) is None
