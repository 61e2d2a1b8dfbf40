"""Pieces of the real-data training recipe: train.init_from, the anchor fit report (--check-anchors),
and the data keys that turn on overhead-imagery augmentation."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tensorflow as tf

from ipg_keras.models.anchor_fit import anchor_fit_report, kmeans_shapes, propose_anchors
from ipg_keras.training.config import ConfigError, load_config
from model_helpers import tiny_retinanet


# ------------------------------------------------------------------ init_from
def _built(model):
    model(np.zeros((1, 128, 128, 3), np.float32))
    return model


def test_init_from_loads_every_matching_weight_and_lists_the_rest(tmp_path, caplog):
    from ipg_keras.training.init_from import load_matching_weights

    donor = _built(tiny_retinanet(num_classes=3))
    run = tmp_path / "run"
    run.mkdir()
    donor.save(str(run / "last.keras"))  # a run folder interrupted before model.keras
    model = _built(tiny_retinanet(num_classes=5))  # other class count: the class head's output differs
    with caplog.at_level(logging.INFO, logger="ipg_keras.train"):
        loaded, not_loaded = load_matching_weights(model, run)
    donor_weights = {v.path.split("/", 1)[-1] if v.path.startswith(donor.name + "/") else v.path: v
                     for v in donor.weights}
    assert len(loaded) + len(not_loaded) == len(model.weights)
    assert [n.split(" ")[0] for n in not_loaded] == ["cls_head/output/kernel", "cls_head/output/bias"]
    for v in model.weights:
        name = v.path.split("/", 1)[-1] if v.path.startswith(model.name + "/") else v.path
        if name in loaded:
            np.testing.assert_array_equal(v.numpy(), donor_weights[name].numpy())
    assert "box_head/output/kernel" in loaded and "conv1_conv/kernel" in loaded
    assert "cls_head/output/kernel (shape (3, 3, 16, 27) in last.keras, (3, 3, 16, 45) here)" in not_loaded
    assert f"loaded {len(loaded)} of {len(model.weights)} weights" in caplog.text


def test_init_from_refuses_a_model_with_no_matching_weight(tmp_path):
    from ipg_keras.training.init_from import load_matching_weights

    import keras

    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense_x")])
    plain.save(str(tmp_path / "plain.keras"))
    model = _built(tiny_retinanet(num_classes=3))
    with pytest.raises(ConfigError, match=r"no weight of .*plain.keras matches this model"):
        load_matching_weights(model, tmp_path / "plain.keras")
    with pytest.raises(ConfigError, match="does not exist"):
        load_matching_weights(model, tmp_path / "missing.keras")
    with pytest.raises(ConfigError, match="folder without any of"):
        load_matching_weights(model, tmp_path)


# -------------------------------------------------------------- anchor report
def test_anchor_fit_report_places_anchors_on_the_grid():
    # anchor_size 4 on P3 (stride 8): a 32 x 32 square anchor at every grid centre 4 + 8 i.
    boxes = np.array([[4, 4, 36, 36],        # a P3 anchor exactly: IoU 1
                      [12, 20, 44, 52],      # also centred on a grid point: IoU 1
                      [8, 8, 40, 40],        # 4 px off every centre: best is the 32 * 2**(1/3) anchor around it
                      [48, 48, 56, 56]],     # 8 x 8: best is a 32 x 32 anchor, IoU 64 / 1024
                     np.float32)
    fit = anchor_fit_report(boxes, anchor_size=4.0, min_level=3, max_level=5)
    np.testing.assert_allclose(fit.best_iou, [1.0, 1.0, 2 ** (-2 / 3), 64 / 1024], rtol=1e-6)
    assert fit.uncovered == pytest.approx(0.25)  # only the 8 x 8 box has no anchor at 0.5
    fitted = propose_anchors(boxes[3:], min_level=3, max_level=5)
    assert fitted.anchor_size == 1.0 and fitted.aspect_ratios == (1.0,) and fitted.uncovered == 0.0


def test_kmeans_shapes_finds_the_box_shapes():
    rng = np.random.default_rng(0)
    wh = np.concatenate([np.tile([10.0, 20.0], (30, 1)), np.tile([40.0, 20.0], (20, 1))])
    wh = wh * rng.uniform(0.97, 1.03, wh.shape)
    centres = kmeans_shapes(wh, 2)
    np.testing.assert_allclose(centres, [[10, 20], [40, 20]], rtol=0.03)


def test_check_anchors_reports_the_coverage_of_a_tiny_voc_folder(tmp_path, capsys):
    from PIL import Image

    from ipg_keras.cli.train import main

    (tmp_path / "voc").mkdir()
    Image.new("RGB", (128, 128), (10, 20, 30)).save(tmp_path / "voc" / "a.png")
    objects = "".join(f"<object><name>tree</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                      f"<ymax>{b[3]}</ymax></bndbox></object>"
                      for b in ((4, 4, 36, 36), (12, 20, 44, 52), (48, 48, 56, 56)))
    (tmp_path / "voc" / "a.xml").write_text(
        "<annotation><filename>a.png</filename><size><width>128</width><height>128</height><depth>3</depth>"
        f"</size>{objects}</annotation>")
    config = tmp_path / "c.yaml"
    config.write_text(f"name: tiny_voc\nmodel: {{anchor_size: 4.0}}\ndata: {{source: pascal_voc, image_size: 128, "
                      f"train_annotations: {tmp_path / 'voc'}}}\n")
    assert main([str(config), "--check-anchors"]) == 0
    out = capsys.readouterr().out
    assert "3 training boxes of tiny_voc" in out
    assert "configured: anchor_size 4 (x stride, P3-P7), aspect_ratios [0.5, 1, 2]" in out
    assert "33.3% of 3 boxes have no anchor at IoU >= 0.5" in out  # the 8 x 8 box
    assert "apply with: --set model.anchor_size=" in out
    # tile_size scales the boxes by image_size / tile_size: 2x here, so the 8 px box becomes 16 px.
    assert main([str(config), "--check-anchors", "--set", "data.tile_size=64"]) == 0
    out = capsys.readouterr().out
    assert "sqrt(w*h) p1 17.0, p10 25.6, median 64.0" in out  # boxes of 64, 64 and 16 px
    proposed = out.split("proposed:")[1]
    assert "0.0% of 3 boxes have no anchor" in proposed and "apply with: --set model.anchor_size=1 " in out
    assert "model.matcher=atss" not in out
    assert main([str(config), "--check-anchors", "--set", "model.matcher=atss"]) == 0
    assert "model.matcher=atss: each box's positives are the anchors among its 9 nearest" in capsys.readouterr().out


# ------------------------------------------------------------ data config keys
def test_data_keys_reach_the_training_batches(tmp_path):
    """sampling=random + flips/turns from the data section: batches of random windows whose boxes are
    consistent with the windows (pixel masks of the synthetic set stay inside their boxes)."""
    from ipg_keras.training.train import augment_config, batch_train, build_datasets

    cfg = load_config(None, ["data.source=synthetic", "data.num_train_images=2", "data.num_val_images=1",
                             "data.image_size=128", "data.tile_size=128", "data.sampling=random",
                             "data.rotate90=0.75", "data.vertical_flip=0.5", "data.scale_range=[0.5,1.0]",
                             "data.hue=0.0", "train.batch_size=4", "data.cache=true"])
    aug = augment_config(cfg.data)
    assert (aug.rotate90, aug.vertical_flip, aug.scale_range, aug.hue) == (0.75, 0.5, (0.5, 1.0), 0.0)
    train, _, _ = build_datasets(cfg)
    images, targets = next(iter(batch_train(cfg, train)))
    assert images.shape == (4, 128, 128, 3)
    boxes = targets["boxes"].numpy()
    valid = targets["classes"].numpy() >= 0
    assert valid.any()
    assert (boxes[valid] >= 0).all() and (boxes[valid] <= 128).all()
    with pytest.raises(ConfigError, match="data.sampling"):
        load_config(None, ["data.sampling=random"])  # needs data.tile_size
    with pytest.raises(ConfigError, match="data.rotate90"):
        load_config(None, ["data.rotate90=2"])
