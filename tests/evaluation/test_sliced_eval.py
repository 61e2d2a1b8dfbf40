"""COCO evaluation of full-size images through sliced inference."""

import numpy as np

from ipg_keras.evaluation import evaluate_sliced


def square_finder(tiles):
    """A perfect 'detector' of bright squares that ignores squares cut by the tile border."""
    tiles = np.asarray(tiles)
    b, h, w, _ = tiles.shape
    boxes = np.zeros((b, 50, 4), "float32")
    scores = np.zeros((b, 50), "float32")
    classes = np.full((b, 50), -1, "int32")
    num = np.zeros(b, "int32")
    for i in range(b):
        bright = tiles[i, ..., 0] > 128
        for y, x in zip(*np.nonzero(bright)):
            if (y and bright[y - 1, x]) or (x and bright[y, x - 1]):
                continue  # not a top-left corner
            x2 = x
            while x2 < w and bright[y, x2]:
                x2 += 1
            y2 = y
            while y2 < h and bright[y2, x]:
                y2 += 1
            if x == 0 or y == 0 or x2 == w or y2 == h:
                continue
            boxes[i, num[i]] = [x, y, x2, y2]
            scores[i, num[i]] = 0.9
            classes[i, num[i]] = 0
            num[i] += 1
    return {"boxes": boxes, "scores": scores, "classes": classes, "num_detections": num}


def squares_element(image_id: int) -> dict:
    """A 420 x 300 image with 7 bright squares of 12-24 px, as an element with its boxes."""
    image = np.zeros((300, 420, 3), "float32")
    boxes = []
    for k, (x, y) in enumerate([(10, 10), (95, 40), (150, 150), (260, 90), (380, 250), (200, 270), (60, 220)]):
        s = 12 + 2 * k
        image[y : y + s, x : x + s] = 255
        boxes.append([x, y, min(x + s, 420), min(y + s, 300)])
    return {"images": image, "image_id": image_id,
            "bounding_boxes": {"boxes": np.array(boxes, "float32"), "classes": np.zeros(len(boxes), "int32")}}


def test_sliced_evaluation_recovers_every_object_in_original_pixels():
    element = squares_element(7)
    metrics = evaluate_sliced(square_finder, [element], tile_size=128, overlap=40, batch_size=4, verbose=False)
    assert metrics["AP50"] == 1.0 and metrics["AP"] == 1.0
    # Without enough overlap, objects cut by every tile border are missed: the metric notices.
    worse = evaluate_sliced(square_finder, [element], tile_size=64, overlap=0, verbose=False)
    assert worse["AP50"] < 1.0


def test_sliced_evaluation_resizes_tiles_to_the_input_size_and_scores_in_image_pixels():
    """`input_size` != `tile_size` (a model trained on zoomed-in windows): tiles are resized, boxes scaled back."""
    element = squares_element(3)
    seen = set()

    def zoomed_finder(tiles):
        seen.add(np.asarray(tiles).shape[1:3])
        return square_finder(tiles)

    metrics = evaluate_sliced(zoomed_finder, [element], tile_size=128, overlap=40, input_size=256, verbose=False)
    assert seen == {(256, 256)}
    assert metrics["AP50"] == 1.0 and metrics["AP"] > 0.85  # the 2x resize blurs each edge by about a pixel


def test_sliced_evaluation_with_test_time_augmentation_still_scores_every_object():
    element = squares_element(5)
    metrics = evaluate_sliced(square_finder, [element], tile_size=128, overlap=40, tta=4, verbose=False)
    assert metrics["AP50"] == 1.0 and metrics["AP"] == 1.0


def test_max_detections_above_100_matches_cocoeval_when_fewer_boxes():
    from ipg_keras.evaluation import coco_metrics

    rng = np.random.default_rng(0)
    gts, dets = [], []
    for i in range(4):
        xy = rng.uniform(0, 200, (6, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(8, 60, (6, 2))], 1)
        gts.append({"image_id": i, "boxes": boxes, "classes": rng.integers(0, 2, 6)})
        noisy = boxes + rng.normal(0, 3, boxes.shape)
        dets.append({"image_id": i, "boxes": noisy, "scores": rng.uniform(0.1, 1, 6), "classes": gts[-1]["classes"]})
    a = coco_metrics(gts, dets)
    b = coco_metrics(gts, dets, max_detections=300)
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert abs(a[key] - b[key]) < 1e-9, key
