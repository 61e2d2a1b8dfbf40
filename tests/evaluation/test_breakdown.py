"""Size-bucket metrics and true positives per FPN level: exact values on a hand-made case."""

import numpy as np

from ipg_keras.evaluation.breakdown import bucket_name, size_bucket_metrics, true_positives_by_level


def _case():
    # One 128x128 image, three objects of sqrt(area) 10, 20 and 40 px.
    gt = [{"image_id": 1, "height": 128, "width": 128, "classes": np.array([0, 0, 0]),
           "boxes": np.array([[5, 5, 15, 15], [40, 40, 60, 60], [70, 70, 110, 110]], np.float32)}]
    # The 10 px and the 40 px objects are found exactly (from P3 and P5); the 20 px one is
    # missed: the only box near it overlaps it by IoU 0.25 (a false positive from P4).
    det = [{"image_id": 1, "classes": np.array([0, 0, 0, -1]), "scores": np.array([0.9, 0.8, 0.7, 0.0]),
            "levels": np.array([3, 5, 4, -1]),
            "boxes": np.array([[5, 5, 15, 15], [70, 70, 110, 110], [50, 40, 70, 60], [0, 0, 0, 0]], np.float32)}]
    return gt, det


def test_size_bucket_metrics_score_each_bucket_on_its_own():
    gt, det = _case()
    rows = {r["bucket"]: r for r in size_bucket_metrics(gt, det, num_classes=1)}
    assert list(rows) == ["0-12", "12-16", "16-24", "24-32", "32-48", "48-96", ">=96"]
    assert [rows[b]["num_gt"] for b in rows] == [1, 0, 1, 0, 1, 0, 0]
    for found in ("0-12", "32-48"):
        assert np.isclose(rows[found]["AP"], 1.0) and np.isclose(rows[found]["AP50"], 1.0)
        assert np.isclose(rows[found]["recall50"], 1.0) and np.isclose(rows[found]["AR"], 1.0)
    assert rows["16-24"]["recall50"] == 0.0 and rows["16-24"]["AP50"] == 0.0
    assert rows["12-16"]["AP"] == -1.0 and rows["12-16"]["recall50"] == -1.0  # no objects: undefined


def test_true_positives_are_counted_by_the_level_that_found_them():
    gt, det = _case()
    counts = true_positives_by_level(gt, det, num_classes=1)
    assert counts["all"] == {"P3": 1, "P5": 1}  # the P4 box is a false positive
    assert counts["0-12"] == {"P3": 1} and counts["32-48"] == {"P5": 1} and counts["16-24"] == {}


def test_bucket_names():
    assert bucket_name(12, 16) == "12-16" and bucket_name(96, 1e5) == ">=96"
