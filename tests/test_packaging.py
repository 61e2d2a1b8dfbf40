"""The built wheel installs only `ipg_keras`; its commands and packaged configs work outside the repository."""

import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_package_list_names_every_package_folder():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "ipg_keras").rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, text=True)
    (path,) = out.glob("ipg_keras-*.whl")
    return path


def test_wheel_holds_only_ipg_keras_and_the_configs(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"ipg_keras"}, top
    configs = {Path(n).name for n in names if n.startswith("ipg_keras/training/configs/")}
    assert {p.name for p in (ROOT / "training" / "configs").glob("*.yaml")} <= configs


def test_fresh_venv_from_the_wheel_runs_the_commands(wheel, tmp_path):
    """A new venv gets the wheel; its dependencies come from this environment's site-packages (offline)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing but the wheel provides ipg_keras
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    py = bin_dir / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True, env=env).stdout.strip()
    # A plain path entry: this environment's packages are importable, but its .pth files (our
    # editable install among them) are not run, so `ipg_keras` can only come from the wheel.
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True,
                   env=env, cwd=tmp_path)
    probe = subprocess.run(
        [str(py), "-c", "import importlib.util, ipg_keras, ipg_keras.training as t;"
         "print(ipg_keras.__file__); print(importlib.util.find_spec('training'));"
         "print(t.load_config('synthetic_retinanet_cpu').name)"],
        cwd=tmp_path, env=env, check=True, capture_output=True, text=True).stdout.split("\n")
    assert str(venv) in probe[0] and probe[1] == "None" and probe[2] == "synthetic_retinanet_cpu", probe
    for command in ("ipg-train", "ipg-predict", "ipg-export"):
        done = subprocess.run([str(bin_dir / command), "--help"], cwd=tmp_path, env=env, capture_output=True,
                              text=True)
        assert done.returncode == 0 and "usage:" in done.stdout, (command, done.stderr[-2000:])
    bad = subprocess.run([str(bin_dir / "ipg-train"), "no_such_config"], cwd=tmp_path, env=env, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "synthetic_retinanet_cpu" in bad.stderr  # lists the packaged configs
