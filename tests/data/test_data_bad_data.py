"""Bad data: every problem is logged with its file, counted in the report, or raised with strict=True."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from data_helpers import write_image, write_voc_xml
from ipg_keras.data import DataError, LoadReport, from_coco_json, from_pascal_voc, load_pascal_voc


def _good(folder):
    write_image(folder / "good.jpg", 40, 30)
    write_voc_xml(folder / "good.xml", "good.jpg", (40, 30), [("a", (1, 1, 10, 10), False)])


def _corrupt(folder):
    (folder / "bad.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    write_voc_xml(folder / "bad.xml", "bad.jpg", (40, 30), [("a", (1, 1, 10, 10), False)])
    return folder / "bad.jpg"


def _truncated_png(folder):
    write_image(folder / "trunc.png", 64, 64, fill=(5, 6, 7))
    data = (folder / "trunc.png").read_bytes()
    (folder / "trunc.png").write_bytes(data[: len(data) // 2])
    write_voc_xml(folder / "trunc.xml", "trunc.png", (64, 64), [("a", (1, 1, 10, 10), False)])
    return folder / "trunc.png"


def _missing(folder):
    write_voc_xml(folder / "lost.xml", "lost.jpg", (40, 30), [("a", (1, 1, 10, 10), False)])
    return folder / "lost.xml"


def _empty_xml(folder):
    write_image(folder / "empty.jpg", 40, 30)
    (folder / "empty.xml").write_text("")
    return folder / "empty.xml"


def _broken_xml(folder):
    write_image(folder / "broken.jpg", 40, 30)
    (folder / "broken.xml").write_text("<annotation><object>")
    return folder / "broken.xml"


def _outside(folder):
    write_image(folder / "out.jpg", 40, 30)
    write_voc_xml(folder / "out.xml", "out.jpg", (40, 30), [("a", (-5, 2, 50, 20), False)])
    return folder / "out.xml"


def _degenerate(folder):
    write_image(folder / "deg.jpg", 40, 30)
    write_voc_xml(folder / "deg.xml", "deg.jpg", (40, 30),
                  [("a", (10, 10, 10, 20), False), ("a", (20, 5, 15, 9), False), ("a", (2, 2, 8, 8), False),
                   ("a", (50, 40, 60, 45), False)])  # zero width, negative width, good, wholly outside
    return folder / "deg.xml"


def _unknown(folder):
    write_image(folder / "unk.jpg", 40, 30)
    write_voc_xml(folder / "unk.xml", "unk.jpg", (40, 30), [("zebra", (1, 1, 9, 9), False), ("a", (2, 2, 8, 8), False)])
    return folder / "unk.xml"


CASES = {
    "corrupt_image": (_corrupt, 1),
    "truncated_png": (_truncated_png, 1),
    "missing_image": (_missing, 1),
    "empty_annotation": (_empty_xml, 1),
    "bad_annotation": (_broken_xml, 1),
    "box_clipped": (_outside, 1),
    "degenerate_box": (_degenerate, 3),
    "unknown_class": (_unknown, 1),
}
REASON = {"truncated_png": "corrupt_image"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_voc_bad_data_is_reported_with_file_and_counted(tmp_path, caplog, case):
    make, expected = CASES[case]
    reason = REASON.get(case, case)
    _good(tmp_path)
    bad_file = make(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ipg_keras.data"):
        ds = from_pascal_voc(tmp_path, class_names=["a"])
    report = ds.report
    assert report.counts == {reason: expected}
    assert str(bad_file) in report.files[reason]
    # The warning names the file, and the end-of-loading summary names the reason.
    messages = [r.getMessage() for r in caplog.records]
    assert any(str(bad_file) in m for m in messages)
    assert any(reason in m and "Loaded" in m for m in messages)
    image_skipped = reason in {"corrupt_image", "missing_image", "empty_annotation", "bad_annotation"}
    assert report.images_loaded == (1 if image_skipped else 2)
    assert report.images_skipped == (1 if image_skipped else 0)
    # Whatever was skipped, the dataset itself iterates cleanly.
    assert len(list(ds)) == report.images_loaded


@pytest.mark.parametrize("case", sorted(CASES))
def test_voc_strict_raises_naming_the_file(tmp_path, case):
    make, _ = CASES[case]
    _good(tmp_path)
    bad_file = make(tmp_path)
    with pytest.raises(DataError, match=str(bad_file.name)):
        from_pascal_voc(tmp_path, class_names=["a"], strict=True)


def test_clipped_and_dropped_boxes_values(tmp_path):
    _outside(tmp_path)
    _degenerate(tmp_path)
    parsed = load_pascal_voc(tmp_path)
    by_name = {r.annotation_path.rsplit("/", 1)[-1]: r for r in parsed.records}
    np.testing.assert_array_equal(by_name["out.xml"].boxes, [[0, 2, 40, 20]])
    np.testing.assert_array_equal(by_name["deg.xml"].boxes, [[2, 2, 8, 8]])
    assert parsed.report.counts == {"box_clipped": 1, "degenerate_box": 3}
    text = parsed.report.summary()
    assert "box_clipped: 1 boxes" in text and "degenerate_box: 3 boxes" in text


def test_size_mismatch_is_reported(tmp_path):
    write_image(tmp_path / "s.jpg", 40, 30)
    write_voc_xml(tmp_path / "s.xml", "s.jpg", (80, 60), [("a", (1, 1, 70, 50), False)])
    parsed = load_pascal_voc(tmp_path)
    assert parsed.report.counts == {"size_mismatch": 1, "box_clipped": 1}
    np.testing.assert_array_equal(parsed.records[0].boxes, [[1, 1, 40, 30]])


def _coco(tmp_path, images, annotations, files=("x.jpg",)):
    img_dir = tmp_path / "img"
    for f in files:
        write_image(img_dir / f, 40, 30)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": [{"id": 1, "name": "a"}]}))
    return ann, img_dir


def test_coco_image_id_without_file(tmp_path, caplog):
    ann, img_dir = _coco(
        tmp_path,
        [{"id": 1, "file_name": "x.jpg", "width": 40, "height": 30},
         {"id": 2, "file_name": "gone.jpg", "width": 40, "height": 30}],
        [{"id": 9, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0}],
    )
    with caplog.at_level(logging.WARNING, logger="ipg_keras.data"):
        ds = from_coco_json(ann, img_dir)
    assert ds.report.counts == {"image_id_without_file": 1}
    assert any("gone.jpg" in r.getMessage() and "image id 2" in r.getMessage() for r in caplog.records)
    assert [int(e["image_id"]) for e in ds] == [1]
    with pytest.raises(DataError, match="gone.jpg"):
        from_coco_json(ann, img_dir, strict=True)


def test_coco_unknown_category_degenerate_outside_and_orphan(tmp_path):
    ann, img_dir = _coco(
        tmp_path,
        [{"id": 1, "file_name": "x.jpg", "width": 40, "height": 30}],
        [
            {"id": 1, "image_id": 1, "category_id": 99, "bbox": [1, 1, 5, 5]},   # unknown category
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 5]},    # zero width
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [30, 20, 15, 15]},  # 44 % inside: clipped
            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [30, 20, 20, 20]},  # 25 % inside: dropped
            {"id": 4, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5]},    # no such image
        ],
    )
    ds = from_coco_json(ann, img_dir)
    assert ds.report.counts == {"unknown_class": 1, "degenerate_box": 1, "box_clipped": 1, "box_outside": 1,
                                "annotation_without_image": 1}
    (el,) = list(ds)
    np.testing.assert_array_equal(el["bounding_boxes"]["boxes"].numpy(), [[30, 20, 40, 30]])


def test_coco_empty_or_invalid_annotation_file_raises(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(DataError, match="empty.json.*empty"):
        from_coco_json(tmp_path / "empty.json", tmp_path / "img")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json.*not valid JSON"):
        from_coco_json(tmp_path / "bad.json", tmp_path / "img")
    (tmp_path / "wrong.json").write_text(json.dumps({"foo": []}))
    with pytest.raises(DataError, match="needs top-level 'images'"):
        from_coco_json(tmp_path / "wrong.json", tmp_path / "img")


def test_coco_corrupt_image(tmp_path):
    ann, img_dir = _coco(tmp_path, [{"id": 1, "file_name": "x.jpg"}, {"id": 2, "file_name": "c.jpg"}], [])
    (img_dir / "c.jpg").write_bytes(b"\x00" * 100)
    ds = from_coco_json(ann, img_dir)
    assert ds.report.counts == {"corrupt_image": 1}
    assert ds.report.files["corrupt_image"] == [str(img_dir / "c.jpg")]


def test_report_object_api():
    report = LoadReport("src")
    assert not report and report.counts == {}
    report.add("degenerate_box", "f.xml", "2 dropped", 2)
    report.add("degenerate_box", "g.xml", "1 dropped", 1)
    report.add("missing_image", "h.jpg", "gone")
    assert report.counts == {"degenerate_box": 3, "missing_image": 1}
    assert report.files["degenerate_box"] == ["f.xml", "g.xml"]
    assert report.images_skipped == 1
    assert "degenerate_box: 3 boxes in 2 file(s)" in report.summary()
    with pytest.raises(KeyError):
        report.add("no_such_reason", "f", "x")
    with pytest.raises(DataError, match="f.xml: bad"):
        LoadReport("src", strict=True).add("degenerate_box", "f.xml", "bad")


def test_nothing_loadable_raises_with_the_summary(tmp_path):
    _corrupt(tmp_path)
    _missing(tmp_path)
    with pytest.raises(DataError, match=r"no usable image(.|\n)*missing_image: 1 images(.|\n)*corrupt_image: 1 images"):
        from_pascal_voc(tmp_path)
