"""Smoke tests of the benchmark scripts: each runs with tiny settings, prints its table and writes JSON.

No timing assertions: the CPU is shared, and these only check that the scripts work.
"""

from __future__ import annotations

import json
import math

import pytest

from .bench_loader import load_benchmark as _load
from fake_detectors import BrightBoxDetector


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


def _run_record(dataset, variant, seed, **metrics):
    return {"dataset": dataset, "variant": variant, "seed": seed, "metrics": metrics}


def test_study_statistics_paired_intervals_selection_and_plots(tmp_path):
    report = _load("study_report")
    fmt_pair = lambda stat: report.fmt_ci(stat, signed=True)  # noqa: E731
    runs = []
    for seed, (base, ipg, gated) in enumerate([(0.20, 0.30, 0.19), (0.30, 0.50, 0.29), (0.40, 0.70, 0.38)]):
        for variant, aps in (("baseline", base), ("ipg", ipg), ("fusion_gated", gated)):
            runs.append(_run_record("synthetic", variant, seed, AP=aps, AP50=aps, APs=aps, ARs=aps))
    summary = report.summarize(runs)
    pair = next(p for p in summary["paired"] if p["variant"] == "ipg")
    # Paired differences 0.1, 0.2, 0.3: mean 0.2, std 0.1, 95 % t interval 0.2 +- 4.303 * 0.1 / sqrt(3).
    assert math.isclose(pair["APs"]["mean"], 0.2) and math.isclose(pair["APs"]["std"], 0.1)
    half = 4.303 * 0.1 / math.sqrt(3)
    assert all(math.isclose(a, b, abs_tol=1e-12) for a, b in zip(pair["APs"]["ci"], (0.2 - half, 0.2 + half)))
    assert report.t_quantile_975(4) == 2.776 and report.t_quantile_975(100) == 1.96
    with pytest.raises(ValueError, match="2 pairs"):
        report.t_quantile_975(0)
    base = next(a for a in summary["arms"] if a["variant"] == "baseline")
    assert math.isclose(base["AP"]["mean"], 0.3) and base["seeds"] == [0, 1, 2]
    selection = report.select_variant(summary, ["ipg", "fusion_gated"])
    assert selection["variant"] == "ipg" and [r[0] for r in selection["ranking"]] == ["ipg", "fusion_gated"]
    assert report.select_variant(summary, ["ipg"], min_seeds=4)["variant"] is None
    # Confirmation on another dataset: holds only when the whole interval lies above 0.
    trees = [_run_record("trees", v, s, AP=a, AP50=a, APs=a, ARs=a)
             for s, (b, i) in enumerate([(0.1, 0.12), (0.2, 0.19), (0.3, 0.33)])
             for v, a in (("baseline", b), ("ipg", i))]
    decision = report.confirmation(report.summarize(runs + trees), "ipg")
    assert decision["holds"] is False and decision["n"] == 3 and "includes" in decision["reason"]
    assert report.confirmation(summary, "ipg")["holds"] is None  # no trees runs yet
    table = report.paired_table(summary)
    assert "ΔAPs [95 % CI]" in table and f"+0.200 [{0.2 - half:+.3f}, {0.2 + half:+.3f}]" in table
    abl = report.ablation_table(summary, {"ipg": {"gflops": 1.06, "params": 1185085}})
    assert "| ipg | 1.060 | 1,185,085 | 3 |" in abl and "| fusion_gated | n/a |" in abl
    report.plot_paired(summary, tmp_path / "p.png", variants=["ipg"])
    report.plot_ablation(summary, tmp_path / "a.png")
    assert (tmp_path / "p.png").stat().st_size > 1000 and (tmp_path / "a.png").stat().st_size > 1000
    # The size breakdown also draws trees runs, whose sliced analysis has no true positives per FPN level.
    buckets = [{"bucket": "0-12", "num_gt": 0, "AP": -1.0, "recall50": 0.0},
               {"bucket": "12-16", "num_gt": 5, "AP": 0.1, "recall50": 0.4}]
    for run in trees:
        run["analysis"] = {"size_buckets": buckets}
    for run, ap in zip(trees, (0.1, 0.2, 0.3, 0.5, 0.2, 0.2)):  # baseline / ipg per seed: differences +0.1, +0.2, 0
        run["analysis"] = {"size_buckets": [buckets[0], {**buckets[1], "AP": ap}]}
    sizes = report.size_table(trees, "trees")
    assert "0-12" not in sizes and "| 12-16 | 5 | 0.200 | 0.300 |" in sizes  # empty bucket left out; means
    assert fmt_pair(report.mean_ci([0.1, 0.2, 0.0])) in sizes and "0.400 / 0.400" in sizes
    assert "no paired synthetic units" in report.size_table(trees, "synthetic")
    report.plot_breakdown(trees, tmp_path / "b.png", dataset="trees")
    assert (tmp_path / "b.png").stat().st_size > 1000


@pytest.mark.slow  # trains two tiny units through ipg-train subprocesses: minutes on a busy 2-core CPU
def test_study_quick_units_resume_and_are_skipped(tmp_path, capsys):
    study = _load("ipg_study")
    argv = ["--quick", "--phases", "headline-synthetic", "--seeds", "0", "--out", str(tmp_path)]
    assert study.main(argv) == 0
    root = tmp_path / "quick"
    for variant, ipg in (("ipg", True), ("baseline", False)):
        folder = root / "runs" / "synthetic" / variant / "seed0"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["ipg"] is ipg and metrics["steps_completed"] == metrics["total_steps"] == 4
        assert -1.0 <= metrics["ARs"] <= 1.0  # the twelve COCO metrics reach metrics.json
        analysis = json.loads((folder / "analysis.json").read_text())
        assert [b["bucket"] for b in analysis["size_buckets"]][:2] == ["0-12", "12-16"]
        assert set(analysis["tp_levels"]) >= {"all", "0-12"}
        history = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
        assert [r["steps_done"] for r in history if "val_AP" in r] == [2, 4]  # a val-AP curve, every epoch
        # Without --max-minutes a unit gets a day, not the main job's 13-minute guard (a loaded machine
        # would otherwise cut units short and stop the queue).
        assert "--set train.max_minutes=1440.00" in (folder / "train.log").read_text()
    summary = json.loads((root / "summary.json").read_text())
    assert len(summary["runs"]) == 2 and summary["summary"]["paired"][0]["variant"] == "ipg"
    assert summary["costs"]["ipg"]["gflops"] > summary["costs"]["baseline"]["gflops"] > 0
    for name in ("report.md", "paired.png", "curves_synthetic.png", "breakdown.png"):
        assert (root / name).is_file()
    capsys.readouterr()
    assert study.main(argv) == 0  # finished units are skipped
    assert capsys.readouterr().out.count("skip synthetic/") == 2
    # A unit interrupted after its last checkpoint resumes from it instead of training again.
    folder = root / "runs" / "synthetic" / "ipg" / "seed0"
    (folder / "metrics.json").unlink()
    (folder / "analysis.json").unlink()
    assert study.main(argv + ["--variants", "ipg"]) == 0
    assert json.loads((folder / "metrics.json").read_text())["resumed_from_step"] == 4
    # A folder made with other settings stops the study with its name.
    unit = json.loads((folder / "unit.json").read_text())
    (folder / "unit.json").write_text(json.dumps({**unit, "overrides": unit["overrides"] + ["model.ipg_width=8"]}))
    with pytest.raises(SystemExit, match="seed0 holds a run with other settings"):
        study.main(argv)


def test_trees_recipe_table_lists_finished_and_missing_variants(tmp_path):
    recipe = _load("trees_recipe")
    run = tmp_path / "recipe"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"steps_completed": 3000, "total_steps": 3000, "AP": 0.127,
                                                  "AP50": 0.401, "AP75": 0.044, "APs": 0.074, "train_seconds": 2081}))
    (run / "history.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"steps_done": 200, "val_AP": 0.02, "val_AP50": 0.08}, {"steps_done": 300},
        {"steps_done": 400, "val_AP": 0.11, "val_AP50": 0.36}, {"steps_done": 600, "val_AP": 0.10, "val_AP50": 0.35}]))
    partial = tmp_path / "P2_min2"
    partial.mkdir()
    (partial / "metrics.json").write_text(json.dumps({"steps_completed": 100, "total_steps": 3000}))
    rows = recipe.table(tmp_path).splitlines()
    assert rows[2] == ("| recipe | (the config) | 3000 | 0.110 / 0.360 (400) | 0.127 / 0.401 / 0.044 / 0.074 "
                       "| 2081 |")
    assert rows[3].startswith("| P2_min2 | model.min_level=2 train.max_minutes=150 | not run |")  # stopped early: not finished
    assert "| faster_rcnn | (trees_faster_rcnn) | not run | - | - | - |" in rows  # a variant of another config
    assert len(rows) == 2 + len(recipe.VARIANTS)


def test_tflite_op_profile_cuts_each_op_out_exactly(tmp_path):
    """Each one-op model of the profiler computes exactly what that op computes inside the full int8 model."""
    bench = _load("tflite_int8")
    import numpy as np
    import tensorflow as tf

    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    rng = np.random.default_rng(0)
    kernel = tf.constant(rng.normal(0, 0.3, (3, 3, 3, 4)), tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
    def net(x):
        y = tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME"))
        y = tf.nn.avg_pool2d(y, 2, 2, "VALID") + 0.5
        with tf.name_scope("postprocess"):
            return tf.math.top_k(tf.reshape(y, [1, -1]), k=5).values

    converter = tf.lite.TFLiteConverter.from_concrete_functions([net.get_concrete_function()], net)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([rng.uniform(0, 1, (1, 8, 8, 3)).astype("float32")] for _ in range(4))
    path = tmp_path / "net.tflite"
    path.write_bytes(converter.convert())
    image = rng.uniform(0, 1, (1, 8, 8, 3)).astype("float32")

    full = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                       experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    full.allocate_tensors()
    full.set_tensor(full.get_input_details()[0]["index"], image)
    full.invoke()
    model = bench._load_model_object(path)
    ops = model.subgraphs[0].operators
    assert len(ops) >= 4  # quantize, conv, pool, add, ..., top-k
    for index in range(len(ops)):
        content, fed, outputs = bench._one_op_model(model, index)
        one = Interpreter(model_content=content,
                          experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        one.allocate_tensors()
        for detail, tensor in zip(one.get_input_details(), fed):
            one.set_tensor(detail["index"], full.get_tensor(tensor))
        one.invoke()
        for detail, tensor in zip(one.get_output_details(), outputs):
            np.testing.assert_array_equal(one.get_tensor(detail["index"]), full.get_tensor(tensor))

    rows = bench.op_profile(path, image, threads=1, repeats=1, overhead_ms=0.0)
    assert len(rows) == len(ops) and all(r["ms"] >= 0 for r in rows)
    regions = {r["op"]: r["region"] for r in rows}
    assert regions["QUANTIZE"] == "quantize" and regions["CONV_2D"] == "network"
    assert regions["TOPK_V2"] == "postprocess", [(r["op"], r["output"]) for r in rows]
    summary = bench.summarize_profile(rows)
    assert summary["ops"] == len(ops) and abs(summary["total_ms"] - sum(r["ms"] for r in rows)) < 1e-9


def test_ipg_train_runs_the_cli_with_overrides_and_lets_the_run_see_the_gpu(tmp_path, monkeypatch):
    """`common.ipg_train` (the studies' unit runner) builds the ipg-train command and appends its log."""
    import subprocess

    common = _load("common")
    calls = []

    def fake_run(command, cwd, env, stdout=None, stderr=None):
        calls.append((command, env))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(common.subprocess, "run", fake_run)
    monkeypatch.setattr(common, "_HID_GPU", True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    log = tmp_path / "train.log"
    assert common.ipg_train("trees_retinanet", tmp_path / "run", ["train.epochs=2", "model.ipg=false"], log=log) == 0
    command, env = calls[0]
    assert command[1:] == ["-m", "ipg_keras.cli.train", "trees_retinanet", "--output", str(tmp_path / "run"),
                           "--set", "train.epochs=2", "--set", "model.ipg=false"]
    assert "CUDA_VISIBLE_DEVICES" not in env and str(common.REPO) in env["PYTHONPATH"]
    assert "ipg_keras.cli.train trees_retinanet" in log.read_text()


def test_fused_batchnorm_script_tiny(tmp_path, capsys):
    """Both arms train the same model from the same weights on the same batches; the losses agree."""
    bench = _load("fused_batchnorm")
    out = tmp_path / "fbn.json"
    assert bench.main(["--configs", "tiny", "--rounds", "2", "--output", str(out)]) == 0
    assert "speed-up" in capsys.readouterr().out
    (result,) = json.loads(out.read_text())["results"]
    assert result["bn_layers"] > 0 and result["train_speedup"] > 0 and result["forward_speedup"] > 0
    assert result["forward_max_abs_diff"] < 1e-3
    assert math.isclose(result["loss_after"]["fused"], result["loss_after"]["keras"], rel_tol=1e-3)


def test_trees_tta_script_predicts_each_view_back_in_image_pixels():
    import numpy as np

    from ipg_keras.inference.tta import VIEWS

    tta = _load("trees_tta")
    image = np.zeros((50, 60, 3), "uint8")
    image[10:18, 30:44] = 255  # a 14 x 8 box, off-centre, in a non-square image
    for view in VIEWS:
        boxes, _ = tta.predict_view(BrightBoxDetector(), image, view, max_detections=10)
        np.testing.assert_allclose(boxes, [[30, 10, 44, 18]], err_msg=view)



def test_bias_deferral_script_tiny(tmp_path, capsys):
    """Both arms (bias in the conv, bias handed to the BN) compute the same outputs; the ratio is written."""
    bench = _load("bias_deferral")
    out = tmp_path / "bd.json"
    assert bench.main(["--preset", "tiny", "--batch-sizes", "1", "--rounds", "2", "--output", str(out)]) == 0
    assert "deferred to BN" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [r["ipg"] for r in rows] == [True, False]
    for row in rows:
        assert row["speed_up"] > 0 and 0 < row["max_abs_output_diff"] < 1e-4  # non-zero biases: a real comparison


def test_trees_sharpness_script_measures_crowns_and_the_blur_that_matches(tmp_path, capsys):
    """A sharp (noise) plot and a flat one: energy inside the boxes only, and blurring lowers it."""
    import numpy as np
    from PIL import Image

    bench = _load("trees_sharpness")
    rng = np.random.default_rng(0)
    for name, image in (("train", rng.integers(0, 256, (40, 50, 3))), ("val", np.full((40, 50, 3), 90))):
        folder = tmp_path / name
        folder.mkdir()
        Image.fromarray(image.astype("uint8")).save(folder / "plot.png")
        (folder / "plot.xml").write_text(
            "<annotation><filename>plot.png</filename><size><width>50</width><height>40</height><depth>3</depth>"
            "</size><object><name>Tree</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>25</xmax><ymax>30</ymax>"
            "</bndbox></object></annotation>")
    flat = np.full((20, 20, 3), 50.0)
    assert bench.box_sharpness(flat, np.array([[2, 2, 18, 18]])) == 0.0
    out = tmp_path / "s.json"
    assert bench.main(["--train", str(tmp_path / "train"), "--val", str(tmp_path / "val"), "--sigmas", "0.7,1.5",
                       "--output", str(out)]) == 0
    rows = {(r["image"], r["sigma"]): r["sharpness"] for r in json.loads(out.read_text())["rows"]}
    assert rows[("val", 0.0)] == 0.0 and rows[("train", 0.0)] > 100  # uniform noise: |Laplacian| ~ 4 * 74
    assert rows[("train", 0.0)] > rows[("train blurred", 0.7)] > rows[("train blurred", 1.5)] > 0
    assert "Laplacian energy in the crowns" in capsys.readouterr().out


def _two_tree_voc(tmp_path):
    """A Pascal VOC folder with one 100 x 80 image and two trees at (10, 10, 30, 30) and (50, 40, 70, 60)."""
    from PIL import Image

    folder = tmp_path / "val"
    folder.mkdir()
    Image.new("RGB", (100, 80)).save(folder / "plot.png")
    objects = "".join(f"<object><name>Tree</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
                      f"<ymax>{d}</ymax></bndbox></object>" for a, b, c, d in ((10, 10, 30, 30), (50, 40, 70, 60)))
    (folder / "plot.xml").write_text("<annotation><filename>plot.png</filename><size><width>100</width>"
                                     f"<height>80</height><depth>3</depth></size>{objects}</annotation>")
    return folder


def test_trees_errors_script_separates_recall_ranking_and_localisation(tmp_path, capsys):
    """Two objects; a confident false positive outranks a perfect box, and a loose box (IoU 0.6) finds the other.
    Ranking by IoU removes the false positive's lead; moving boxes onto their objects fixes AP75."""
    bench = _load("trees_errors")
    folder = _two_tree_voc(tmp_path)
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "images.json").write_text(json.dumps({"plot.png": 0}))
    # [x, y, w, h]: exact on object 0 (score 0.5), nowhere (0.9), object 1 shifted by 5 px in x (IoU 15*20/(25*20)=0.6)
    dets = [([10, 10, 20, 20], 0.5), ([80, 0, 15, 15], 0.9), ([55, 40, 20, 20], 0.8)]
    (pred / "detections.json").write_text(json.dumps(
        [{"image_id": 0, "category_id": 1, "bbox": b, "score": s} for b, s in dets]))
    out = tmp_path / "errors.json"
    assert bench.main([str(pred), "--annotations", str(folder), "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["objects"] == 2 and result["detections"] == 3
    assert result["recall_any_score"]["0.5"] == 1.0 and result["recall_any_score"]["0.7"] == 0.5
    assert result["best_iou_per_object_quantiles"]["0.5"] == pytest.approx(0.8, abs=1e-3)  # median of 0.6 and 1.0
    assert result["as_predicted"]["AP50"] < 0.9  # the false positive ranks first
    assert result["fixed_scores_equal_iou"]["AP50"] == pytest.approx(1.0)
    assert result["score_iou_correlation"] == pytest.approx(-1.0)  # (0.5, IoU 1.0) and (0.8, IoU 0.6): inverted
    assert result["fixed_boxes_equal_truth"]["AP75"] > result["as_predicted"]["AP75"]
    assert "scores = IoU (ranking fixed)" in capsys.readouterr().out


def test_trees_ensemble_script_fuses_models_that_err_differently(tmp_path, capsys):
    """Model a finds object 0 only, model b object 1 only: each alone has recall 0.5, fused they find both,
    and a box both models put on object 0 is averaged into one (no duplicate false positive)."""
    bench = _load("trees_ensemble")
    folder = _two_tree_voc(tmp_path)
    preds = {"a": [([10, 10, 20, 20], 0.9)], "b": [([50, 40, 20, 20], 0.8), ([11, 10, 20, 20], 0.7)]}
    for name, dets in preds.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "images.json").write_text(json.dumps({"plot.png": 0}))
        (tmp_path / name / "detections.json").write_text(json.dumps(
            [{"image_id": 0, "category_id": 1, "bbox": b, "score": s} for b, s in dets]))
    out = tmp_path / "ens.json"
    assert bench.main([str(tmp_path / "a"), str(tmp_path / "b"), "--annotations", str(folder),
                       "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    by_members = {"+".join(r["members"]): r for r in result["rows"]}
    assert by_members["a"]["AP50"] == pytest.approx(0.5, abs=0.01)  # one of two objects
    assert by_members["a+b"]["AP50"] == pytest.approx(1.0)  # both, and no duplicate on object 0
    assert result["all_fused_AP"] == by_members["a+b"]["AP"] > result["best_single_AP"]
    assert "2 fused" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # one folder is not an ensemble
        bench.main([str(tmp_path / "a")])
    (tmp_path / "other").mkdir()
    (tmp_path / "a").rename(tmp_path / "other" / "b")
    with pytest.raises(SystemExit):  # two folders named b: the rows could not tell them apart
        bench.main([str(tmp_path / "other" / "b"), str(tmp_path / "b")])


def test_trees_inference_checks_script_adapts_batchnorm_and_predicts_whole_images(tmp_path, capsys):
    """AdaBN moves the moving statistics by alpha and restores the momentum; every setting scores 1 and 4 views."""
    import keras
    import numpy as np
    from PIL import Image

    from model_helpers import tiny_retinanet

    bench = _load("trees_inference_checks")
    keras.utils.set_random_seed(0)
    model = tiny_retinanet(num_classes=1, score_threshold=0.0)
    model(np.zeros((1, 128, 128, 3), "float32"))
    tiles = np.random.default_rng(0).uniform(0, 255, (4, 128, 128, 3)).astype("float32")
    bns = [l for l in model._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]
    before = [l.moving_mean.numpy().copy() for l in bns]
    assert bench.adapt_batchnorm(model, tiles, alpha=0.0) == len(bns) > 0
    assert all(np.allclose(b, l.moving_mean.numpy()) for b, l in zip(before, bns))  # alpha 0: unchanged
    bench.adapt_batchnorm(model, tiles, alpha=0.5)
    half = [l.moving_mean.numpy().copy() for l in bns]
    assert not np.allclose(before[0], half[0])
    momentum = bns[0].momentum
    bench.adapt_batchnorm(model, tiles, alpha=1.0)
    full = bns[0].moving_mean.numpy()
    np.testing.assert_allclose(half[0], (before[0] + full) / 2, rtol=1e-4, atol=1e-5)  # the mix of old and new
    assert bns[0].momentum == momentum
    # The whole-image predictor pads a 200 x 160 image to 256 x 256 and returns boxes inside the image.
    image = np.zeros((160, 200, 3), "float32")
    image[20:60, 30:70] = 250.0
    out = bench.whole_image_predictor(model)(image)
    assert out["boxes"].shape[1] == 4 and len(out["boxes"]) == len(out["scores"]) > 0
    assert out["boxes"][:, 2].max() <= 200 and out["boxes"][:, 3].max() <= 160
    # The script end to end on a VOC folder with one tree.
    folder = tmp_path / "val"
    folder.mkdir()
    Image.fromarray(image.astype("uint8")).save(folder / "plot.png")
    (folder / "plot.xml").write_text("<annotation><filename>plot.png</filename><size><width>200</width><height>160"
                                     "</height><depth>3</depth></size><object><name>Tree</name><bndbox><xmin>30</xmin>"
                                     "<ymin>20</ymin><xmax>70</xmax><ymax>60</ymax></bndbox></object></annotation>")
    model.save(tmp_path / "tiny.keras")
    out_json = tmp_path / "checks.json"
    assert bench.main([str(tmp_path / "tiny.keras"), "--annotations", str(folder), "--image-size", "128",
                       "--max-detections", "50", "--settings", "config,model_nms=0.7,whole_image,adabn=1.0",
                       "--scales", "1", "--output", str(out_json)]) == 0
    rows = json.loads(out_json.read_text())["rows"]
    assert [(r["setting"], r["views"]) for r in rows] == [(s, v) for s in ("config", "model_nms=0.7", "whole_image",
                                                                              "adabn=1.0") for v in (1, 4)]
    assert all(-1.0 <= r["AP"] <= 1.0 for r in rows)
    assert "| whole_image | 4 |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown setting"):
        bench.run(str(tmp_path / "tiny.keras"), str(folder), 128, 50, ["softnms"])


def test_trees_data_scaling_crops_the_voc_image_and_trains_on_the_part(tmp_path, capsys):
    """A window of a VOC-annotated image becomes its own VOC folder; boxes follow the min_visible rule."""
    import numpy as np
    from PIL import Image

    from ipg_keras.data import load_pascal_voc

    scaling = _load("trees_data_scaling")
    source = tmp_path / "train"
    source.mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (80, 100, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(source / "plot.png")
    boxes = [(10, 5, 30, 25),   # inside the top half (rows 0-40)
             (40, 30, 60, 44),  # 10 of 14 rows inside: kept, clipped at y 40
             (70, 36, 90, 56),  # 4 of 20 rows inside: cut off
             (5, 50, 25, 70)]   # in the bottom half
    objects = "".join(f"<object><name>Tree</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                      f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for b in boxes)
    (source / "plot.xml").write_text(f"<annotation><filename>plot.png</filename><size><width>100</width>"
                                     f"<height>80</height><depth>3</depth></size>{objects}</annotation>")
    part = scaling.crop_voc(source / "plot.xml", scaling.PARTS["top"], tmp_path / "top")
    assert part == {"window": [0, 0, 100, 40], "boxes": 2, "dropped": 2}
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "top" / "plot.png")), pixels[:40])
    parsed = load_pascal_voc(tmp_path / "top", class_names=["Tree"])  # the package's loader reads the new folder
    (record,) = parsed.records
    assert (record.width, record.height) == (100, 40)
    np.testing.assert_array_equal(record.boxes, [[10, 5, 30, 25], [40, 30, 60, 40]])
    # The bottom half shifts boxes up by the window's 40 rows.
    assert scaling.crop_voc(source / "plot.xml", scaling.PARTS["bottom"], tmp_path / "bottom")["boxes"] == 2
    bottom = load_pascal_voc(tmp_path / "bottom", class_names=["Tree"]).records[0].boxes
    np.testing.assert_array_equal(bottom, [[70, 0, 90, 16], [5, 10, 25, 30]])

    calls = []

    def fake_train(config, output, overrides):  # the run itself is ipg-train, tested elsewhere
        calls.append((config, list(overrides)))
        output.mkdir(parents=True, exist_ok=True)
        (output / "metrics.json").write_text(json.dumps({"steps_completed": 4, "total_steps": 4, "AP": 0.1}))
        return 0

    scaling.ipg_train = fake_train
    argv = ["--part", "top", "--train", str(source), "--out", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results"), "--set", "train.epochs=1"]
    assert scaling.main(argv) == 0
    data = tmp_path / "runs" / "data_top" / "train_data"
    assert calls == [("trees_retinanet", [f"data.train_annotations={data}", "train.epochs=1"])]
    assert json.loads((tmp_path / "results" / "data_top" / "metrics.json").read_text())["AP"] == 0.1
    assert json.loads((tmp_path / "results" / "data_top" / "part.json").read_text())["boxes"] == 2
    assert scaling.main(argv) == 0 and len(calls) == 1  # finished: skipped
    assert "skip data_top (finished)" in capsys.readouterr().out
    # Bad input is refused with the file and the fix.
    with pytest.raises(SystemExit):
        scaling.main(["--part", "top", "--train", str(tmp_path / "results"), "--prepare-only"])
    assert "expected the folder of one VOC-annotated image (one .xml), found 0" in capsys.readouterr().err
    (source / "plot.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"plot\.xml: its image .*plot\.png is missing; put it next to the XML"):
        scaling.crop_voc(source / "plot.xml", scaling.PARTS["top"], tmp_path / "again")
