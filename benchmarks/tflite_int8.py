"""TFLite int8 against float32 under LiteRT: interleaved latency and a per-op profile.

For each architecture the detector is exported with `ipg_keras.export.export_tflite`
in `float32` and in `int8` (network int8, box decoding / score ranking / NMS float),
then:

* **latency**: both files run by the LiteRT interpreter (`ai_edge_litert`, default
  op resolver, i.e. with the XNNPACK delegate, `--threads` threads, batch 1, one
  fixed image), interleaved: every round calls float32 then int8 (the order flips
  each round), so that load changes on a shared CPU hit both alike; p50, p90, min.
* **op profile** (`--profile`): every operator of each file is cut out into a
  one-op model (its constant inputs kept, its other inputs fed with the values the
  op sees in the full model on the same image) and timed alone in the same
  interpreter settings (XNNPACK takes the op when it supports it). Per-op times
  minus the interpreter's fixed cost of one invoke (timed on a one-element ADD)
  are summed per region, `network` (backbone, FPN, heads), `postprocess`
  (`ipg_keras.ops.POSTPROCESS_SCOPE` ops: decoding, ranking, NMS) and
  `quantize` (QUANTIZE / DEQUANTIZE), and per op type. Isolated ops miss the
  fusion and cache reuse of the full graph, so the sum is an estimate of where
  the time goes, not the latency; the table prints both.

    # main-job architecture at 256x256 (trained model from README command 1, or untrained from the config)
    python benchmarks/tflite_int8.py --arch main --main-model runs/main/model.keras --profile
    # IPG-RetinaNet-R50 at 512x512 (untrained, 5 classes)
    python benchmarks/tflite_int8.py --arch r50 --profile
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable as a plain script from anywhere
    sys.path.insert(0, str(REPO))

ARCHS = {
    # The main job's network (training/configs/synthetic_retinanet_cpu.yaml) at its 256x256.
    "main": dict(config="synthetic_retinanet_cpu", image_size=256, label="IPG-RetinaNet main job (R18 x0.25)"),
    # IPG-RetinaNet-R50 with the paper's FPN and heads, at 512x512, 5 classes.
    "r50": dict(config="synthetic_retinanet_cpu", image_size=512, label="IPG-RetinaNet-R50"),
}


# ----------------------------------------------------------------------------- models
def build_detector(arch: str, main_model: str | None):
    """(model, description) of one architecture."""
    if arch == "main" and main_model:
        from ipg_keras.export.runtime import load_keras_model

        return load_keras_model(Path(main_model)), f"{ARCHS[arch]['label']}, trained ({main_model})"
    if arch == "main":
        from ipg_keras.data import SYNTHETIC_CLASS_NAMES
        from ipg_keras.training.config import load_config
        from ipg_keras.training.train import build_model

        cfg = load_config(ARCHS[arch]["config"], [])
        return build_model(cfg, len(SYNTHETIC_CLASS_NAMES)), f"{ARCHS[arch]['label']}, untrained"
    from ipg_keras.models import IPGRetinaNet

    return IPGRetinaNet(5, backbone="resnet50", ipg=True), f"{ARCHS[arch]['label']}, untrained, 5 classes"


def calibration_data(size: int, num_images: int):
    """Training images of the synthetic set (the main job's data) at `size`."""
    from ipg_keras.training.config import load_config
    from ipg_keras.training.train import build_datasets

    cfg = load_config("synthetic_retinanet_cpu", [f"data.image_size={size}", f"data.num_train_images={num_images}",
                                                  "data.num_val_images=1"])
    train, _, _ = build_datasets(cfg)
    return train


def export_pair(arch: str, model, size: int, directory: Path, calibration_images: int,
                reuse: bool = False) -> dict[str, Path]:
    from ipg_keras.export import export_tflite

    paths = {}
    for precision in ("float32", "int8"):
        if reuse and (directory / f"{arch}_{precision}.tflite").exists():
            paths[precision] = directory / f"{arch}_{precision}.tflite"
            print(f"  reusing {paths[precision]}", flush=True)
            continue
        start = time.perf_counter()
        paths[precision] = export_tflite(
            model, directory / f"{arch}_{precision}.tflite", precision=precision, image_size=size,
            representative_dataset=calibration_data(size, calibration_images) if precision == "int8" else None,
            num_calibration_images=calibration_images,
        )
        print(f"  exported {paths[precision].name} in {time.perf_counter() - start:.0f} s "
              f"({paths[precision].stat().st_size / 2**20:.2f} MB)", flush=True)
    return paths


# ---------------------------------------------------------------------------- latency
def _interpreter(model_path=None, model_content=None, threads: int = 2, delegates: bool = True, **kwargs):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return Interpreter(model_path=None if model_path is None else str(model_path), model_content=model_content,
                       num_threads=threads, experimental_op_resolver_type=resolver, **kwargs)


def test_image(size: int) -> np.ndarray:
    """One validation image of the synthetic set, uint8 `[1, size, size, 3]`."""
    from ipg_keras.data import synthetic_dataset

    element = next(iter(synthetic_dataset("val", num_images=1, image_size=size)))
    return np.clip(np.round(element["images"].numpy()), 0, 255).astype(np.uint8)[None]


def interleaved_latency(paths: dict[str, Path], image: np.ndarray, runs: int, warmup: int, threads: int,
                        delegates: bool = True) -> dict[str, dict[str, float]]:
    interpreters = {}
    for name, path in paths.items():
        it = _interpreter(path, threads=threads, delegates=delegates)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], image)
        interpreters[name] = it
    names = list(interpreters)
    for _ in range(warmup):
        for name in names:
            interpreters[name].invoke()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(runs):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            interpreters[name].invoke()
            times[name].append((time.perf_counter() - start) * 1000.0)
    out = {}
    for name, t in times.items():
        a = np.asarray(t)
        out[name] = {"p50_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)), "min_ms": float(a.min())}
    return out


# --------------------------------------------------------------------------- op profile
def _load_model_object(path: Path):
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.convert_bytearray_to_object(bytearray(path.read_bytes()))


def _one_op_model(model, op_index: int) -> tuple[bytes, list[int], list[int]]:
    """A model holding only operator `op_index` of subgraph 0: (flatbuffer, fed tensor ids, output ids)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    subgraph = model.subgraphs[0]
    op = subgraph.operators[op_index]
    used = []
    for t in list(op.inputs) + list(op.outputs):
        if t >= 0 and t not in used:
            used.append(t)
    remap = {t: i for i, t in enumerate(used)}
    buffers = [schema.BufferT()]
    tensors, fed = [], []
    for t in used:
        tensor = copy.copy(subgraph.tensors[t])
        data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
        if data is not None and len(data):
            buffers.append(model.buffers[tensor.buffer])
            tensor.buffer = len(buffers) - 1
        else:
            tensor.buffer = 0
            if t in op.inputs:
                fed.append(t)
        tensors.append(tensor)
    new_op = copy.copy(op)
    new_op.inputs = [remap[t] if t >= 0 else -1 for t in op.inputs]
    new_op.outputs = [remap[t] for t in op.outputs if t >= 0]
    new_op.intermediates = None
    graph = schema.SubGraphT()
    graph.tensors, graph.operators = tensors, [new_op]
    graph.inputs = [remap[t] for t in fed]
    graph.outputs = [remap[t] for t in op.outputs if t >= 0]
    one = schema.ModelT()
    one.version, one.operatorCodes, one.description = model.version, model.operatorCodes, model.description
    one.subgraphs, one.buffers = [graph], buffers
    return bytes(flatbuffer_utils.convert_object_to_bytearray(one)), fed, [t for t in op.outputs if t >= 0]


def _time_invoke(it, repeats: int) -> float:
    it.invoke()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000.0


def _invoke_overhead_ms(threads: int, repeats: int) -> float:
    """Fixed cost of one `invoke()` from Python: a one-op model adding two 1-element tensors."""
    import tensorflow as tf

    fn = tf.function(lambda a, b: a + b, input_signature=[tf.TensorSpec([1], tf.float32)] * 2)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    it = _interpreter(model_content=converter.convert(), threads=threads)
    it.allocate_tensors()
    return min(_time_invoke(it, repeats) for _ in range(3))


def _region(op_name: str, output_name: str) -> str:
    from ipg_keras.ops import POSTPROCESS_SCOPE

    if op_name in ("QUANTIZE", "DEQUANTIZE"):
        return "quantize"
    if re.search(rf"(^|[/;]){POSTPROCESS_SCOPE}(_\d+)?/", output_name) or output_name in (
            "boxes", "scores", "classes", "num_detections") or output_name.startswith("StatefulPartitionedCall"):
        return "postprocess"
    return "network"


def op_profile(path: Path, image: np.ndarray, threads: int, repeats: int, overhead_ms: float) -> list[dict[str, Any]]:
    """Per-operator time of `path` (see the module docstring), in execution order."""
    from tensorflow.lite.python import schema_py_generated as schema

    full = _interpreter(path, threads=threads, delegates=False, experimental_preserve_all_tensors=True)
    full.allocate_tensors()
    full.set_tensor(full.get_input_details()[0]["index"], image)
    full.invoke()
    model = _load_model_object(path)
    subgraph = model.subgraphs[0]
    names = {v: k for k, v in schema.BuiltinOperator.__dict__.items() if not k.startswith("_")}
    type_names = {v: k for k, v in schema.TensorType.__dict__.items() if not k.startswith("_")}
    rows = []
    for index, op in enumerate(subgraph.operators):
        code = model.operatorCodes[op.opcodeIndex]
        op_name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), str(code.builtinCode))
        out = subgraph.tensors[op.outputs[0]]
        out_name = out.name.decode() if isinstance(out.name, bytes) else str(out.name)
        content, fed, _ = _one_op_model(model, index)
        it = _interpreter(model_content=content, threads=threads)
        it.allocate_tensors()
        for i, t in enumerate(fed):
            value = full.get_tensor(t)
            detail = it.get_input_details()[i]
            if tuple(detail["shape"]) != tuple(value.shape):
                it.resize_tensor_input(detail["index"], value.shape)
                it.allocate_tensors()
            it.set_tensor(it.get_input_details()[i]["index"], value)
        delegated = any(d["op_name"] == "DELEGATE" for d in it._get_ops_details())  # noqa: SLF001
        ms = _time_invoke(it, repeats)
        rows.append({
            "index": index, "op": op_name, "dtype": type_names.get(out.type, str(out.type)).lower(),
            "region": _region(op_name, out_name), "xnnpack": delegated, "ms": max(ms - overhead_ms, 0.0),
            "output": out_name[:240], "shape": [int(s) for s in out.shape] if out.shape is not None else [],
        })
    return rows


def summarize_profile(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_region: dict[str, float] = defaultdict(float)
    by_type: dict[str, dict[str, Any]] = {}
    for r in rows:
        r["region"] = _region(r["op"], r["output"])
        by_region[r["region"]] += r["ms"]
        key = f"{r['op']} {r['dtype']} ({r['region']})"
        entry = by_type.setdefault(key, {"ms": 0.0, "count": 0, "xnnpack": 0})
        entry["ms"] += r["ms"]
        entry["count"] += 1
        entry["xnnpack"] += int(r["xnnpack"])
    return {"total_ms": sum(by_region.values()), "by_region": dict(by_region), "by_type": by_type,
            "ops": len(rows), "xnnpack_ops": sum(r["xnnpack"] for r in rows)}


# -------------------------------------------------------------------------------- run
def run_arch(arch: str, args, directory: Path) -> dict[str, Any]:
    size = args.image_size or ARCHS[arch]["image_size"]
    model, description = build_detector(arch, args.main_model)
    print(f"{arch}: {description} at {size}x{size}", flush=True)
    paths = export_pair(arch, model, size, directory, args.calibration_images, reuse=args.reuse)
    image = test_image(size)
    result: dict[str, Any] = {"arch": arch, "model": description, "image_size": size,
                              "size_mb": {k: round(p.stat().st_size / 2**20, 3) for k, p in paths.items()}}
    load = os.getloadavg()
    result["latency"] = interleaved_latency(paths, image, args.runs, args.warmup, args.threads)
    result["latency_no_xnnpack"] = (
        interleaved_latency(paths, image, max(args.runs // 3, 5), 1, args.threads, delegates=False)
        if args.no_xnnpack else None)
    result["load_average"] = [round(load[0], 2), round(os.getloadavg()[0], 2)]
    lat = result["latency"]
    print(f"  p50 float32 {lat['float32']['p50_ms']:.2f} ms, int8 {lat['int8']['p50_ms']:.2f} ms "
          f"(int8/float32 {lat['int8']['p50_ms'] / lat['float32']['p50_ms']:.2f}), load {result['load_average']}",
          flush=True)
    if args.profile:
        overhead = _invoke_overhead_ms(args.threads, args.profile_repeats)
        result["invoke_overhead_ms"] = overhead
        result["profile"] = {}
        for precision, path in paths.items():
            rows = op_profile(path, image, args.threads, args.profile_repeats, overhead)
            result["profile"][precision] = {"summary": summarize_profile(rows), "ops": rows}
            print(f"  profiled {precision}: {len(rows)} ops", flush=True)
    if args.keep:
        result["files"] = {k: str(p) for k, p in paths.items()}
    return result


def report(results: list[dict[str, Any]], threads: int) -> str:
    lines = [f"LiteRT ({threads} threads, XNNPACK on), batch 1, interleaved float32/int8:", "",
             "| model | input | float32 p50 ms | int8 p50 ms | int8 / float32 | float32 min | int8 min | "
             "no XNNPACK: float32 / int8 p50 ms | MB float32 / int8 | load |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lat, nx = r["latency"], r.get("latency_no_xnnpack")
        lines.append(
            f"| {r['model']} | {r['image_size']} | {lat['float32']['p50_ms']:.2f} | {lat['int8']['p50_ms']:.2f} | "
            f"**{lat['int8']['p50_ms'] / lat['float32']['p50_ms']:.2f}** | {lat['float32']['min_ms']:.2f} | "
            f"{lat['int8']['min_ms']:.2f} | "
            + (f"{nx['float32']['p50_ms']:.1f} / {nx['int8']['p50_ms']:.1f}" if nx else "-")
            + f" | {r['size_mb']['float32']} / {r['size_mb']['int8']} | {r['load_average'][0]}-{r['load_average'][1]} |")
    for r in results:
        if "profile" not in r:
            continue
        lines += ["", f"Op profile, {r['model']} at {r['image_size']}x{r['image_size']} (isolated ops, ms, "
                  f"invoke overhead {r['invoke_overhead_ms']:.3f} ms subtracted per op):", "",
                  "| region | float32 ms | int8 ms |", "| --- | --- | --- |"]
        f32, i8 = (summarize_profile(r["profile"][p]["ops"]) for p in ("float32", "int8"))
        for region in ("network", "quantize", "postprocess"):
            lines.append(f"| {region} | {f32['by_region'].get(region, 0.0):.2f} | {i8['by_region'].get(region, 0.0):.2f} |")
        lines.append(f"| sum of ops | {f32['total_ms']:.2f} | {i8['total_ms']:.2f} |")
        lines.append(f"| ops (taken by XNNPACK) | {f32['ops']} ({f32['xnnpack_ops']}) | {i8['ops']} ({i8['xnnpack_ops']}) |")
        lines += ["", "| op type (region) | float32 ms (count, XNNPACK) | int8 ms (count, XNNPACK) |",
                  "| --- | --- | --- |"]
        keys = sorted(set(f32["by_type"]) | set(i8["by_type"]),
                      key=lambda k: -max(f32["by_type"].get(k, {}).get("ms", 0), i8["by_type"].get(k, {}).get("ms", 0)))

        def cell(summary, key):
            e = summary["by_type"].get(key)
            return f"{e['ms']:.2f} ({e['count']}, {e['xnnpack']})" if e else "-"

        for key in keys[:14]:
            lines.append(f"| {key} | {cell(f32, key)} | {cell(i8, key)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="main,r50", help="comma-separated: main (256x256), r50 (512x512)")
    parser.add_argument("--main-model", default=None, help="trained main-job .keras (default: untrained from config)")
    parser.add_argument("--image-size", type=int, default=None, help="override every architecture's input size")
    parser.add_argument("--calibration-images", type=int, default=20)
    parser.add_argument("--runs", type=int, default=40, help="timed rounds (one call of each file per round)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-xnnpack", action="store_true", help="also time both files without the XNNPACK delegate")
    parser.add_argument("--profile", action="store_true", help="per-op profile of both files")
    parser.add_argument("--profile-repeats", type=int, default=10, help="timed invokes per isolated op")
    parser.add_argument("--keep", default=None, help="folder to keep the .tflite files in (default: a temp folder)")
    parser.add_argument("--reuse", action="store_true", help="use the files already in --keep instead of exporting")
    parser.add_argument("--output", default="benchmarks/results/tflite_int8.json")
    parser.add_argument("--report", default=None, metavar="JSON",
                        help="only print the tables of an earlier run's JSON (and refresh its table)")
    args = parser.parse_args(argv)
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        saved["table"] = report(saved["results"], args.threads)
        Path(args.report).write_text(json.dumps(saved, indent=1))
        print(saved["table"])
        return saved
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    if set(archs) - set(ARCHS):
        parser.error(f"unknown --arch {sorted(set(archs) - set(ARCHS))}; use {sorted(ARCHS)}")
    from benchmarks.common import quiet_tf

    quiet_tf()
    results = []
    with tempfile.TemporaryDirectory(prefix="tflite_int8_") as tmp:
        directory = Path(args.keep or tmp)
        directory.mkdir(parents=True, exist_ok=True)
        for arch in archs:
            results.append(run_arch(arch, args, directory))
    text = report(results, args.threads)
    print("\n" + text)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"argv": sys.argv[1:] if argv is None else argv, "results": results, "table": text},
                              indent=1))
    print(f"wrote {out}")
    return {"results": results, "table": text}


if __name__ == "__main__":
    main()
