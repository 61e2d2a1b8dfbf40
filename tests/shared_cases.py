"""The real-world bug-report cases in `../shared/cases/` (see its README), for the robustness tests."""

from pathlib import Path

import pytest

CASES = Path(__file__).resolve().parents[1] / ".." / "shared" / "cases"


def case(name: str) -> Path:
    """The folder of case `name`; skips the test, saying why, when `../shared` is absent."""
    folder = CASES / name
    if not folder.is_dir():
        pytest.skip(f"shared case {name} not found at {folder} (../shared is absent in this checkout)")
    return folder
