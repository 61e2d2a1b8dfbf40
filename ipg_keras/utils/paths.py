"""Where the project's files and the shared sample data live."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def trees_dir() -> Path:
    """Folder of the aerial tree-crown sample data (Pascal VOC, train/ and val/).

    `IPG_KERAS_TREES_DIR` overrides; the default is `<repo>/../shared/data/trees`,
    where CI and developers' checkouts have it. The folder may be absent.
    """
    env = os.environ.get("IPG_KERAS_TREES_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "trees"
