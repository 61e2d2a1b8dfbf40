"""Helpers for the training tests: the tiny config, ipg-train in subprocesses, and the scenarios.

A scenario is one end-to-end training situation (mirrored vs one device,
two workers, kill and resume, mixed precision / XLA) run in subprocesses,
because TensorFlow must be configured before it initialises (logical CPU
devices, TF_CONFIG) and a kill needs a process of its own. Scenario functions
only run things and collect what the tests assert on.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 600  # seconds for one subprocess (a loaded 2-core machine is slow)

# On top of training/configs/tiny_distributed_cpu.yaml (resnet18 x0.25, ipg_width 8,
# FPN/head 16 wide, 128 px, 16 synthetic images): short runs, no export.
TINY = [
    "data.num_val_images=4",
    "export.saved_model=false",
    "train.verbose=0",
]


class ScenarioError(RuntimeError):
    """A scenario's subprocess failed; the message has its stderr tail."""


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1", "PYTHONPATH": str(REPO)})
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def ipg_train_command(output: Path, overrides: list[str], config: str = "tiny_distributed_cpu") -> list[str]:
    """The ipg-train command line (the console script next to this Python, else `python -m ipg_keras.cli.train`)."""
    script = Path(sys.executable).with_name("ipg-train")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "ipg_keras.cli.train"]
    args = head + [config, "--output", str(output)]
    for item in TINY + overrides:
        args += ["--set", item]
    return args


def last_json(stdout: str) -> dict:
    """The JSON object a command printed last on stdout (ipg-train prints its result so)."""
    start = stdout.rfind("\n{")
    return json.loads(stdout[start + 1 if start >= 0 else stdout.find("{"):])


def run_checked(args: list[str], timeout: float = TIMEOUT, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO, **kwargs)
    if proc.returncode != 0:
        raise ScenarioError(f"{' '.join(args[:4])} ... exited with {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


def free_ports(count: int) -> list[int]:
    """Ports free right now on 127.0.0.1 (held open until all are picked, so they differ)."""
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file, skipping a last line cut by a kill."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


# ------------------------------------------------------------------ scenarios
# A clipped, fast-moving SGD: per-replica clipping or per-replica loss
# normalisation (both wrong) would change the 2nd and 3rd losses by far more
# than the tests' tolerance. BatchNorm uses global-batch statistics.
EQUIVALENCE = [
    "train.epochs=3", "train.steps_per_epoch=1", "train.batch_size=4", "train.learning_rate=0.5",
    "train.warmup_steps=0", "train.momentum=0.9", "train.global_clipnorm=0.1", "train.decay_epochs=[]",
    "model.batchnorm=sync", "eval.every_n_epochs=0", "eval.at_end=false", "train.checkpoint_every_steps=null",
]

_RUN_CONFIGS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras
    from ipg_keras.training.config import load_config
    from ipg_keras.training.train import run
    out, runs = sys.argv[1], json.loads(sys.argv[2])
    results = {}
    for name, overrides in runs.items():
        try:
            results[name] = run(load_config("tiny_distributed_cpu", overrides), f"{out}/{name}")
        except Exception as error:  # reported to the test, which names the failing op
            results[name] = {"error": f"{type(error).__name__}: {error}"[:3000]}
    if "default" in results and "mirrored" in results:
        a = keras.saving.load_model(f"{out}/default/model.keras").get_weights()
        b = keras.saving.load_model(f"{out}/mirrored/model.keras").get_weights()
        results["max_weight_diff"] = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
    print(json.dumps(results))
""")


def run_configs_in_one_process(output: Path, runs: dict[str, list[str]], env: dict | None = None) -> dict:
    """`ipg_keras.training.train.run` on several override lists in one Python process (one TF start-up)."""
    proc = run_checked([sys.executable, "-c", _RUN_CONFIGS, str(output), json.dumps(runs)],
                       env=env or subprocess_env())
    return json.loads(proc.stdout.strip().splitlines()[-1])


def scenario_mirrored(output: Path) -> dict:
    """The same global batch and seed on one device and on MirroredStrategy over 2 logical CPUs."""
    runs = {
        # cpu_devices=2 in both: the default strategy then uses one of the two devices.
        strategy: TINY + EQUIVALENCE + [f"train.strategy={strategy}", "train.cpu_devices=2"]
        for strategy in ("default", "mirrored")
    }
    results = run_configs_in_one_process(output, runs)
    results["losses"] = {
        name: [r["loss"] for r in read_jsonl(output / name / "history.jsonl")] for name in runs
    }
    return results


def scenario_multi_worker(output: Path) -> dict:
    """Two ipg-train processes on 127.0.0.1 under MultiWorkerMirroredStrategy, sharing `output`."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    overrides = ["train.strategy=multi_worker", "train.epochs=2", "train.steps_per_epoch=2",
                 "eval.every_n_epochs=1", "model.batchnorm=sync"]
    procs = []
    try:
        for index in range(2):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            procs.append(subprocess.Popen(
                ipg_train_command(output, overrides), cwd=REPO, env=subprocess_env(TF_CONFIG=tf_config),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))
        results = []
        for index, proc in enumerate(procs):
            stdout, stderr = proc.communicate(timeout=TIMEOUT)
            if proc.returncode != 0:
                raise ScenarioError(f"worker {index} exited with {proc.returncode}:\n{stderr[-4000:]}")
            results.append(last_json(stdout))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {"workers": results, "output": output}


def scenario_kill_resume(output: Path, steps_per_epoch: int = 3, epochs: int = 3) -> dict:
    """ipg-train SIGKILLed once a checkpoint past epoch 1 exists, then started again with the same command."""
    overrides = [f"train.epochs={epochs}", f"train.steps_per_epoch={steps_per_epoch}",
                 "train.checkpoint_every_steps=2", "eval.every_n_epochs=0", "eval.at_end=false"]
    command = ipg_train_command(output, overrides)
    progress = output / "progress.json"
    proc = subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    killed_at = None
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if progress.exists():
                done = json.loads(progress.read_text())["steps_done"]
                if done > steps_per_epoch:
                    os.kill(proc.pid, signal.SIGKILL)  # no clean-up possible, like a lost machine
                    killed_at = done
                    break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        _, stderr = proc.communicate()
    if killed_at is None:
        raise ScenarioError(f"the run ended (rc={proc.returncode}) before it could be killed:\n{stderr[-3000:]}")
    first_history = read_jsonl(output / "history.jsonl") if (output / "history.jsonl").exists() else []
    result = last_json(run_checked(command, env=subprocess_env()).stdout)
    return {
        "killed_at": killed_at, "returncode": proc.returncode, "first_history": first_history,
        "result": result, "history": read_jsonl(output / "history.jsonl"),
        "total": steps_per_epoch * epochs, "epochs": epochs, "output": output,
    }


def scenario_precision(output: Path) -> dict:
    """A few steps with mixed_float16, mixed_bfloat16 and XLA (jit_compile), one process."""
    short = TINY + ["train.epochs=1", "train.steps_per_epoch=2", "eval.every_n_epochs=0", "eval.at_end=false",
                    "train.checkpoint_every_steps=null"]
    runs = {
        "mixed_float16": short + ["train.mixed_precision=mixed_float16"],
        "mixed_bfloat16": short + ["train.mixed_precision=mixed_bfloat16"],
        "xla": short + ["train.jit_compile=true"],
    }
    results = run_configs_in_one_process(output, runs)
    for name in runs:
        path = output / name / "history.jsonl"
        results[name]["history"] = read_jsonl(path) if path.exists() else []
    return results


SCENARIOS = {
    # Longest first: the pool runs two at a time.
    "precision": scenario_precision,
    "mirrored": scenario_mirrored,
    "kill_resume": scenario_kill_resume,
    "multi_worker": scenario_multi_worker,
}
