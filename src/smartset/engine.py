"""The executor seam: stages are functions over batches, engines run them.

A batch is a dict of equal-length columns (``{"path": [...], "label": [...]}``), the shape
Hugging Face ``datasets.map(batched=True)`` and Ray Data ``map_batches`` use. A stage
function takes a batch (plus keyword options) and returns a batch, with no side effects on
the catalog: the caller writes results, so every engine gives the same catalog. Engines:

- ``serial``: in this process, for small jobs, debugging and tests;
- ``local``: a process pool on this machine (the default), results in input order, with a
  bounded number of batches in flight so memory stays flat however large the input.

A worker that dies (killed, out of memory) fails the whole map with ``BrokenProcessPool``
rather than hanging; the caller's per-batch transactions keep what was done.

A distributed engine plugs in by registering under a name with :func:`register_engine`;
``ray`` (Ray Data, :mod:`smartset.engine_ray`, ``pip install 'smartset[ray]'``) is
registered that way, imported only when asked for.
"""

from __future__ import annotations

import collections
import functools
import itertools
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol

from smartset._threads import usable_cores

__all__ = [
    "Batch",
    "Engine",
    "SerialEngine",
    "LocalEngine",
    "get_engine",
    "register_engine",
    "available_engines",
    "batches_of",
]

Batch = dict[str, list[Any]]
BatchFn = Callable[..., Batch]


class Engine(Protocol):
    name: str

    def map_batches(
        self,
        fn: BatchFn,
        batches: Iterable[Batch],
        *,
        fn_kwargs: dict[str, Any] | None = None,
    ) -> Iterator[Batch]:
        """Yield ``fn(batch, **fn_kwargs)`` for each batch, in input order."""
        ...


def batches_of(columns: dict[str, Sequence[Any]], batch_size: int) -> Iterator[Batch]:
    """Cut equal-length columns into batches of at most ``batch_size`` rows."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns of a batch must have equal lengths, got {lengths}")
    n = next(iter(lengths.values()), 0)
    for start in range(0, n, batch_size):
        yield {name: list(values[start:start + batch_size]) for name, values in columns.items()}


class SerialEngine:
    """Runs every batch in this process."""

    name = "serial"

    def map_batches(self, fn, batches, *, fn_kwargs=None):
        kwargs = fn_kwargs or {}
        for batch in batches:
            yield fn(batch, **kwargs)


class LocalEngine:
    """A process pool on this machine.

    ``workers`` defaults to the number of usable cores. On Linux, workers are forked when
    the calling process runs a single thread (no import of the caller's script, no
    ``if __name__ == "__main__"`` guard needed); otherwise they are spawned, since forking
    a threaded process can deadlock. ``start_method`` overrides the choice. The pool starts
    when :meth:`map_batches` is called, not when its results are first read, so callers
    start their own threads (progress bars) afterwards.
    """

    name = "local"

    def __init__(self, workers: int | None = None, *, start_method: str | None = None):
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        methods = multiprocessing.get_all_start_methods()
        if start_method is not None and start_method not in methods:
            raise ValueError(f"start_method must be one of {methods}, got {start_method!r}")
        self.workers = workers or _usable_cores()
        self.start_method = start_method

    def _context(self):
        method = self.start_method
        if method is None:
            single_threaded = threading.active_count() == 1
            method = "fork" if sys.platform == "linux" and single_threaded else "spawn"
        return multiprocessing.get_context(method)

    def map_batches(self, fn, batches, *, fn_kwargs=None):
        iterator = iter(batches)
        head = list(itertools.islice(iterator, 2))
        call = functools.partial(fn, **(fn_kwargs or {}))
        if len(head) < 2 or self.workers == 1:
            # One batch, or one worker: a pool would only add start-up time.
            return map(call, itertools.chain(head, iterator))
        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=self._context())
        pending = collections.deque(pool.submit(call, batch) for batch in head)
        return self._in_order(pool, pending, call, iterator)

    def _in_order(self, pool, pending, call, iterator):
        window = 2 * self.workers  # batches in flight: bounds memory however long the input
        try:
            for batch in iterator:
                if len(pending) >= window:
                    yield pending.popleft().result()
                pending.append(pool.submit(call, batch))
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _usable_cores() -> int:
    return usable_cores()  # one definition, shared with the thread choice (smartset._threads)


def _ray_engine(workers: int | None = None, **options) -> Engine:
    from smartset.engine_ray import RayEngine  # Ray is an extra: imported when asked for

    return RayEngine(workers, **options)


_ENGINES: dict[str, Callable[..., Engine]] = {
    "serial": lambda workers=None: SerialEngine(),
    "local": LocalEngine,
    "ray": _ray_engine,
}


def register_engine(name: str, factory: Callable[..., Engine]) -> None:
    """Make an engine available by name (``factory(workers=...)`` builds it)."""
    _ENGINES[name] = factory


def available_engines() -> list[str]:
    return sorted(_ENGINES)


def get_engine(engine: str | Engine | None = None, *, workers: int | None = None) -> Engine:
    """An engine by name (``SMARTSET_ENGINE`` or ``local`` when None), or the one given."""
    if engine is not None and not isinstance(engine, str):
        return engine
    name = engine or os.environ.get("SMARTSET_ENGINE") or "local"
    if name not in _ENGINES:
        raise ValueError(
            f"unknown engine {name!r}; choose one of: {', '.join(available_engines())}"
        )
    return _ENGINES[name](workers=workers)
