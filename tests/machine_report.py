"""What a failing CI log needs to be diagnosed elsewhere: versions, CPU and the oneDNN kernels' ISA.

Printed in pytest's header (tests/conftest.py), so `.ci/run` and the README's test
command show it before the first test. `python tests/machine_report.py` prints it alone.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

_ISA_PROBE = (
    "import tensorflow as tf\n"
    "tf.nn.conv2d(tf.ones([1, 8, 8, 3]), tf.ones([3, 3, 3, 4]), 1, 'SAME')\n"
)
_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile",
          "amx_bf16", "amx_int8", "avx_vnni")


def cpu_summary() -> tuple[str, list[str]]:
    """CPU model name and the vector-ISA flags (of `_FLAGS`) that /proc/cpuinfo lists."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return model, [f for f in _FLAGS if f in flags]


def onednn_isa(timeout: float = 60.0) -> str:
    """The ISA line oneDNN prints for its first kernel (ONEDNN_VERBOSE=1 in a fresh process)."""
    env = dict(os.environ, ONEDNN_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="2")
    try:
        out = subprocess.run([sys.executable, "-c", _ISA_PROBE], env=env, capture_output=True, text=True,
                             timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({error})"
    for line in (out.stdout + out.stderr).splitlines():
        if ",isa:" in line:
            return line.split(",isa:", 1)[1].strip()
    return "not reported (oneDNN off, or TF_ENABLE_ONEDNN_OPTS=0)"


def report_lines() -> list[str]:
    import keras
    import tensorflow as tf

    model, flags = cpu_summary()
    return [
        f"tensorflow {tf.__version__}, keras {keras.__version__}, python {platform.python_version()}, "
        f"numpy {__import__('numpy').__version__}",
        f"cpu: {model}; {os.cpu_count()} logical cores; flags: {' '.join(flags) or 'none of ' + ' '.join(_FLAGS)}",
        f"oneDNN: TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset (on)')}; "
        f"isa: {onednn_isa()}",
        f"op determinism: TF_DETERMINISTIC_OPS={os.environ.get('TF_DETERMINISTIC_OPS', 'unset')}",
    ]


if __name__ == "__main__":
    print("\n".join(report_lines()))
