"""The README's first lines and its Python example are part of the contract: test them."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_exactly_two_commands():
    block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert block and README.index(block.group(0)) < 40, "the two commands must come first"
    commands = [l for l in block.group(1).splitlines() if l.strip()]
    assert len(commands) == 2
    assert "ipg-train synthetic_retinanet_cpu" in commands[0]
    assert "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci, ".ci/run must run the README's test command"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    code = re.search(r"## Python API.*?```python\n(.*?)```", README, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert (tmp_path / "ipg_retinanet.keras").exists()
    assert namespace["detections"]["boxes"].shape == (2, 100, 4)
