"""Handing freed memory back to the operating system between the phases of a long stage."""

from __future__ import annotations

import ctypes
import sys

__all__ = ["give_back_memory"]


def give_back_memory() -> None:
    """Hand freed memory back to the OS between phases. glibc's heap and Arrow's pool (the
    catalog's strings pass through it) keep freed pages, and the next phase's peak would
    stack on them; this makes the audit's peak that of its largest phase, not their sum."""
    arrow = sys.modules.get("pyarrow")
    if arrow is not None:
        arrow.default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass
