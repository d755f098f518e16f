"""Where the benchmarks find the real data: ``--data``, by default ``shared/data`` beside
the repository, holding ``guns-smartphones/train/`` and ``mnist10k.npz``; and the peak
memory of a benchmark's child process."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def locate(data: Path, script: str) -> tuple[Path, Path]:
    """``(photos folder, MNIST archive)`` under ``data``, or exit saying what is missing."""
    photos, npz = data / "guns-smartphones" / "train", data / "mnist10k.npz"
    missing = [str(p) for p in (photos, npz) if not p.exists()]
    if missing:
        sys.exit(f"{script}: data not found: {', '.join(missing)}.\n"
                 f"Pass --data DIR, a folder holding guns-smartphones/train/ and mnist10k.npz "
                 f"(default: {DEFAULT_DATA}).")
    return photos, npz


def peak_rss_kb() -> int:
    """This process's peak RSS in KiB: ``VmHWM`` on Linux, which starts afresh at exec (the
    ``ru_maxrss`` of a child keeps the high-water mark of the parent it was forked from)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
