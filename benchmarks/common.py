"""Shared helpers of the benchmark scripts: machine info, timing, FLOP counting, tables, JSON.

Nothing here is specific to one detector. Timings are wall-clock medians of
repeated calls of a compiled `tf.function`; models compared with each other are
timed interleaved (one call of each model per round), so that a change of
machine load during the run hits all of them alike and their ratios stay fair.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

# The timing benchmarks measure the CPU; training runs started from here (`ipg_train`) must still see a GPU.
_HID_GPU = "CUDA_VISIBLE_DEVICES" not in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/x.py` from the repo root
    sys.path.insert(0, str(REPO))


def ipg_train(config: str, output: str | os.PathLike, overrides: Sequence[str] = (),
              log: str | os.PathLike | None = None) -> int:
    """Runs (or resumes) `ipg-train CONFIG --output OUTPUT --set KEY=VALUE ...` in a subprocess; returns its exit code.

    The benchmarks' training studies (IPG study, trees recipe) are queues of such
    runs: a killed run resumes from its checkpoint when started again. With `log`,
    the command line and the run's output are appended to that file; otherwise
    they go to this process's stdout. The run sees the machine's GPUs even though
    importing this module hid them from the benchmark process itself.
    """
    command = [sys.executable, "-m", "ipg_keras.cli.train", config, "--output", str(output)]
    for key in overrides:
        command += ["--set", key]
    return run_logged(command, log)


def run_logged(command: Sequence[str], log: str | os.PathLike | None = None) -> int:
    """Runs `command` from the repository root in a subprocess that sees this repo's code (as it is on disk
    now) and the machine's GPUs; its output goes to `log` (appended, after the command line) or to stdout."""
    command = [str(c) for c in command]
    env = dict(os.environ)
    if _HID_GPU:
        env.pop("CUDA_VISIBLE_DEVICES", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if log is None:
        print("$", " ".join(command), flush=True)
        return subprocess.run(command, cwd=REPO, env=env).returncode
    with open(log, "a") as stream:
        stream.write(f"\n$ {' '.join(command)}\n")
        stream.flush()
        return subprocess.run(command, cwd=REPO, stdout=stream, stderr=subprocess.STDOUT, env=env).returncode


def machine_info() -> dict[str, Any]:
    """CPU model, core count, memory, load average and library versions (stored with every result)."""
    import keras
    import tensorflow as tf

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo") as f:
            mem_gb = round(int(f.readline().split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "load_average_start": list(os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    try:
        import keras_cv

        info["keras_cv"] = keras_cv.__version__
    except Exception as error:  # noqa: BLE001 - only informational
        info["keras_cv"] = f"not importable: {error}"
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip() or None
    except OSError:
        info["git_commit"] = None
    return info


def block(value: Any) -> Any:
    """Forces TF to finish computing `value` (a nested structure of tensors) by reading one element."""
    import tensorflow as tf

    for leaf in tf.nest.flatten(value):
        if hasattr(leaf, "numpy"):
            leaf.numpy()
    return value


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]], warmup: int, iters: int, label: str = ""
) -> dict[str, dict[str, float]]:
    """Times every zero-argument function `iters` times after `warmup` calls, one call of each per round.

    Returns `{name: {"median_s", "min_s", "mean_s", "times_s": [...]}}`.
    """
    for i in range(warmup):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            block(fn())
            print(f"  [{label}] warm-up {i + 1}/{warmup} {name}: {time.perf_counter() - t0:.2f} s", flush=True)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            block(fn())
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name, ts in times.items():
        out[name] = {
            "median_s": statistics.median(ts),
            "min_s": min(ts),
            "mean_s": statistics.fmean(ts),
            "times_s": [round(t, 5) for t in ts],
        }
        print(f"  [{label}] {name}: median {out[name]['median_s']:.3f} s over {iters}", flush=True)
    return out


def count_flops(fn: Callable, input_spec) -> int:
    """Floating-point operations of one call, counted from the graph (not estimated).

    `fn` is traced into a concrete function for `input_spec` (a `tf.TensorSpec`
    with a fully static shape), its variables are frozen into constants, and
    `tf.compat.v1.profiler` sums the registered FLOP statistics of every node
    (Conv2D / MatMul count 2 per multiply-add; element-wise ops 1 per element).
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = tf.function(fn).get_concrete_function(input_spec)
    frozen = convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        stats = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op",
                                              options=opts)
    return int(stats.total_float_ops)


def measure_peak(repeats: int = 3, matmul_size: int = 2048, conv_shape=(8, 64, 64, 256)) -> dict[str, float]:
    """Measured float32 GFLOP/s of one big matmul and one big 3x3 conv (the machine's practical peak)."""
    import tensorflow as tf

    n = int(matmul_size)
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    matmul = tf.function(lambda: tf.matmul(a, b))
    bsz, h, w, c = conv_shape
    x = tf.random.normal([bsz, h, w, c])
    k = tf.random.normal([3, 3, c, c])
    conv = tf.function(lambda: tf.nn.conv2d(x, k, 1, "SAME"))
    flops = {"matmul": 2.0 * n**3, "conv3x3": 2.0 * bsz * h * w * c * c * 9}
    res = time_interleaved({"matmul": matmul, "conv3x3": conv}, warmup=1, iters=repeats, label="peak")
    return {
        "matmul_size": n,
        "conv_shape": list(conv_shape),
        "matmul_gflops_per_s": flops["matmul"] / res["matmul"]["min_s"] / 1e9,
        "conv3x3_gflops_per_s": flops["conv3x3"] / res["conv3x3"]["min_s"] / 1e9,
    }


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (prints readably in a terminal and pastes into RESULTS.md)."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            if v != v:  # NaN
                return "n/a"
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return "n/a" if v is None else str(v)

    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Writes `data` as indented JSON atomically (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float) + "\n")
    os.replace(tmp, path)


def quiet_tf() -> None:
    """Silences TensorFlow/Keras warnings that would drown the tables."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
