"""Handing freed memory back to the operating system between the phases of a long stage."""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading

__all__ = ["give_back_memory", "return_large_blocks", "reuse_freed_blocks"]

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameters
_M_TRIM_THRESHOLD = -1
_mmap_threshold: int | None = None  # what return_large_blocks last set (None: glibc's own)
_reusing = 0
_reusing_lock = threading.Lock()


def _mallopt(parameter: int, value: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(parameter, int(value))
        except (OSError, AttributeError):  # not glibc
            pass


def return_large_blocks(threshold: int = 1 << 20) -> None:
    """Serve allocations of ``threshold`` bytes or more from their own mappings, returned
    to the OS when freed. glibc raises this threshold as large blocks are freed, after
    which the large temporaries of array code come from the heap and stay resident: a
    phase's peak then stacks on the last one's leftovers."""
    global _mmap_threshold
    _mmap_threshold = int(threshold)
    if not _reusing:
        _mallopt(_M_MMAP_THRESHOLD, threshold)


@contextlib.contextmanager
def reuse_freed_blocks(limit: int = 1 << 30):
    """Inside: large blocks (up to ``limit`` bytes) come from the heap and stay there when
    freed, so a loop that allocates the same large temporaries again and again (a network's
    activations, batch after batch) reuses its pages instead of mapping, zero-filling and
    unmapping them each time. With :func:`return_large_blocks`' 1 MB threshold every
    activation of the embedding network was a fresh mapping: half of its CPU time was the
    kernel's page faults. On exit the thresholds go back (to what
    :func:`return_large_blocks` set, else glibc's converged defaults: 32 MB mapped, 64 MB
    trim) and the freed heap is handed back. Nested uses are one."""
    global _reusing
    with _reusing_lock:
        _reusing += 1
        if _reusing == 1:
            _mallopt(_M_MMAP_THRESHOLD, limit)
            _mallopt(_M_TRIM_THRESHOLD, 2 * limit)
    try:
        yield
    finally:
        with _reusing_lock:
            _reusing -= 1
            if _reusing == 0:
                if _mmap_threshold is not None:  # glibc's trim default beside it
                    _mallopt(_M_MMAP_THRESHOLD, _mmap_threshold)
                    _mallopt(_M_TRIM_THRESHOLD, 128 << 10)
                else:
                    _mallopt(_M_MMAP_THRESHOLD, 32 << 20)
                    _mallopt(_M_TRIM_THRESHOLD, 64 << 20)
                give_back_memory()


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
