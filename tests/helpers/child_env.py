"""The environment of a test's child process: this repository first on PYTHONPATH, the entries already there
kept after it, so a package put on the path by hand (an optional extra unpacked on a machine without pip)
reaches the child too."""
from __future__ import annotations

import os

from . import ROOT


def child_env(**extra: str) -> dict[str, str]:
    paths = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(dict.fromkeys(paths)), **extra)
