"""TFLite export checked with the LiteRT interpreter: builtin ops only, outputs and COCO AP vs Keras."""

from __future__ import annotations

import re

import numpy as np
import pytest
from export_helpers import coco_ap, valid

pytest.importorskip("ai_edge_litert", reason="LiteRT (ai-edge-litert) is needed to run TFLite models")

# Every check runs for both detectors (the tiny trained models of conftest.py).
pytestmark = pytest.mark.parametrize("detector", ["retinanet", "faster_rcnn"], indirect=True, scope="session")

# COCO AP tolerance vs Keras, per precision (issue: 0.01 float, 0.03 int8).
AP_TOLERANCE = {"float32": 0.01, "float16": 0.01, "dynamic_int8": 0.03, "int8": 0.03}


def _ops(path) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter.allocate_tensors()
    return [op["op_name"] for op in interpreter._get_ops_details()]


def test_float32_outputs_match_keras(trained_model, tflite_path, val_batches):
    from ipg_keras.export.runtime import TFLiteDetector

    detector = TFLiteDetector(tflite_path("float32"))
    assert detector.input_size == (64, 64) and detector.input_dtype == np.uint8
    images = val_batches[0][0]  # integer-valued floats: the uint8 input loses nothing
    got = detector(images)
    want = trained_model.predict_on_batch(images)
    assert sorted(got) == ["boxes", "classes", "num_detections", "scores"]
    assert got["boxes"].shape == (len(images), 100, 4) and got["classes"].dtype == np.int32
    np.testing.assert_array_equal(got["num_detections"], np.asarray(want["num_detections"]))
    for b in range(len(images)):
        g, w = valid(got, b), valid(want, b)
        np.testing.assert_array_equal(g["classes"], w["classes"])
        np.testing.assert_allclose(g["scores"], w["scores"], atol=1e-4)
        np.testing.assert_allclose(g["boxes"], w["boxes"], atol=0.5)  # issue: within 0.5 px


def test_signature_and_builtin_ops_only(tflite_path):
    from ai_edge_litert.interpreter import Interpreter

    path = tflite_path("float32")
    signatures = Interpreter(model_path=str(path)).get_signature_list()
    assert signatures == {
        "serving_default": {"inputs": ["images"], "outputs": ["boxes", "classes", "num_detections", "scores"]}
    }
    ops = _ops(path)
    assert "NON_MAX_SUPPRESSION_V5" in ops and "TOPK_V2" in ops  # decoding and NMS are inside
    assert not [op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "WHILE")], sorted(set(ops))


def test_wrong_input_size_has_a_clear_error(tflite_path, val_batches):
    from ipg_keras.export.runtime import TFLiteDetector

    detector = TFLiteDetector(tflite_path("float32"))
    with pytest.raises(ValueError, match=r"takes 64x64 images .* got 32x48"):
        detector(val_batches[0][0][:1, :32, :48])


def test_int8_needs_representative_dataset(trained_model, tmp_path):
    from ipg_keras.export import export_tflite

    with pytest.raises(ValueError, match="representative_dataset"):
        export_tflite(trained_model, tmp_path / "m.tflite", precision="int8", image_size=64)
    with pytest.raises(ValueError, match="precision must be one of"):
        export_tflite(trained_model, tmp_path / "m.tflite", precision="int4", image_size=64)


def test_float32_coco_ap_matches_keras(tflite_path, val_batches, keras_val_ap, trained_model):
    from ipg_keras.export.runtime import TFLiteDetector

    ap = coco_ap(TFLiteDetector(tflite_path("float32")), val_batches, trained_model.num_classes)
    assert abs(ap - keras_val_ap) <= AP_TOLERANCE["float32"], (ap, keras_val_ap)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float16", "dynamic_int8", "int8"])
def test_quantized_coco_ap_close_to_keras(precision, tflite_path, val_batches, keras_val_ap, trained_model):
    from ipg_keras.export.runtime import TFLiteDetector

    path = tflite_path(precision)
    assert path.stat().st_size < tflite_path("float32").stat().st_size * 0.6  # weights really shrank
    ap = coco_ap(TFLiteDetector(path), val_batches, trained_model.num_classes)
    assert abs(ap - keras_val_ap) <= AP_TOLERANCE[precision], (precision, ap, keras_val_ap)
    ops = _ops(path)
    assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], sorted(set(ops))
    if precision == "int8":
        _assert_convolutions_run_in_int8(path)
        from ipg_keras.export import read_metadata

        meta = read_metadata(path)
        assert meta["calibration_percentile"] == 99.99 and meta["float_postprocess"] is True
        _assert_postprocess_runs_in_float(path)


def _assert_convolutions_run_in_int8(path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter.allocate_tensors()
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    convs = [op for op in interpreter._get_ops_details() if op["op_name"] == "CONV_2D"]
    assert convs
    for op in convs:  # full integer: activations and weights of every convolution are int8
        assert dtypes[op["inputs"][0]] == np.int8 and dtypes[op["inputs"][1]] == np.int8, op


def _assert_postprocess_runs_in_float(path):
    """Box decoding and NMS stay float in the int8 model; the network's convolutions do not."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # No delegates: XNNPACK would fold ops into DELEGATE nodes that hide their dtypes.
    interpreter = Interpreter(
        model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter.allocate_tensors()
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    exps = [op for op in ops if op["op_name"] == "EXP"]  # box decoding: exp of the size deltas
    assert exps and all(details[op["outputs"][0]]["dtype"] == np.float32 for op in exps)
    nms = [op for op in ops if op["op_name"] == "NON_MAX_SUPPRESSION_V5"]
    assert nms and all(details[op["inputs"][0]]["dtype"] == np.float32 for op in nms)
    # Score ranking (top-k of class scores, RPN objectness) sees float values: int8 ties would reorder.
    topk = [op for op in ops if op["op_name"] == "TOPK_V2"]
    assert all(details[op["inputs"][0]]["dtype"] == np.float32 for op in topk)
    # Boxes and scores never pass through int8 on their way out (boxes on a 256-level grid over the image,
    # scores in 1/256 steps). Among all ops upstream of the two outputs, a float -> int8 QUANTIZE either feeds
    # the network (RoI features into the box head) or re-quantizes with the parameters of the dequantize it
    # undoes (lossless).
    producers = {o: op for op in ops for o in op["outputs"]}
    consumers = {}
    for op in ops:
        for i in op["inputs"]:
            consumers.setdefault(i, []).append(op)
    outputs = interpreter.get_signature_runner().get_output_details()
    seen, stack = set(), [outputs["boxes"]["index"], outputs["scores"]["index"]]
    while stack:
        index = stack.pop()
        if index in seen or index not in producers:
            continue
        seen.add(index)
        op = producers[index]
        stack.extend(i for i in op["inputs"] if i >= 0)
        if op["op_name"] != "QUANTIZE" or _undoes_dequantize(op, producers, details):
            continue
        targets = [details[o]["name"] for c in consumers.get(op["outputs"][0], []) for o in c["outputs"]]
        network = re.compile(r"^ipg_\w+/(?!.*postprocess)")
        assert targets and all(network.match(t) for t in targets), (
            f"{details[op['inputs'][0]]['name']} is rounded to int8 on its way to the outputs (into {targets})"
        )


def _undoes_dequantize(quantize, producers, details):
    """True if `quantize` re-quantizes (through reshapes) a dequantized tensor with the same parameters."""
    index = quantize["inputs"][0]
    while index in producers and producers[index]["op_name"] == "RESHAPE":
        index = producers[index]["inputs"][0]
    earlier = producers.get(index)
    return (
        earlier is not None
        and earlier["op_name"] == "DEQUANTIZE"
        and details[earlier["inputs"][0]]["quantization"] == details[quantize["outputs"][0]]["quantization"]
    )
