"""Versions of the software a run used, recorded with every run for reproducibility."""

from __future__ import annotations

import importlib.metadata
import platform
import sys

_PACKAGES = ("smartset", "numpy", "pillow", "pandas", "torch", "opencv-python-headless",
             "scikit-learn", "cleanlab", "faiss-cpu", "ray")


def software_versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found
