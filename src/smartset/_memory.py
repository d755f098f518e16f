"""Handing freed memory back to the operating system between the phases of a long stage."""

from __future__ import annotations

import ctypes
import sys

__all__ = ["give_back_memory", "return_large_blocks"]

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def return_large_blocks(threshold: int = 1 << 20) -> None:
    """Serve allocations of ``threshold`` bytes or more from their own mappings, returned
    to the OS when freed. glibc raises this threshold as large blocks are freed, after
    which the large temporaries of array code come from the heap and stay resident: a
    phase's peak then stacks on the last one's leftovers."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, int(threshold))
        except (OSError, AttributeError):  # not glibc
            pass


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
