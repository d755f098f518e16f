"""The Ray Data engine: the same batch functions, on a Ray cluster (``pip install 'smartset[ray]'``).

``get_engine("ray")`` (``--engine ray``, ``SMARTSET_ENGINE=ray``) runs a stage's batch
function as Ray Data ``map_batches`` over the stage's batches, and yields the results in
input order to the caller, which writes them to the catalog exactly as with the local
engine: same function, same batches, same writes, so the same catalog.

- Where: ``address`` (``--ray-address``, ``SMARTSET_RAY_ADDRESS``: ``auto``, or
  ``ray://host:10001``) joins a running cluster; without one, a local Ray runtime starts
  with ``workers`` CPUs (default: the usable cores). A Ray runtime already started in this
  process is used as it is.
- Bounded memory: batches go to the cluster a window at a time (``window`` batches, default
  four per CPU), each window one Ray Data dataset; the driver never holds more than a
  window of inputs and results, however long the stage.
- Faults: a worker that dies mid-batch (killed, out of memory) has its task retried by Ray
  Data (its default for system failures); the driver receives each batch's result exactly
  once, so no catalog row is lost or written twice. An error raised by the function itself is not retried: it
  fails the map, and the stage's per-batch transactions keep what was done (a rerun
  completes it, as with the local engine).
- Files: workers open the paths the catalog holds, so every node must see the data at
  the same path (a shared file system), or under a URL every node can reach (an object
  store through fsspec, :mod:`smartset.storage`; not ``memory://``, which lives in one
  process). Stages that write files (``augment run``) write into the workspace, which
  must then be shared too.

Batches travel pickled (one Ray Data row per batch), so any column type a stage returns
(arrays, None, ragged lists) comes back unchanged.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
from collections.abc import Iterable, Iterator
from typing import Any

from smartset.engine import Batch, BatchFn, _usable_cores
from smartset.errors import SmartsetError

__all__ = ["RayEngine", "RayUnavailableError", "require_ray"]

_INSTALL = "pip install 'smartset[ray]'"


class RayUnavailableError(SmartsetError, ImportError):
    """``--engine ray`` was asked for, and Ray Data is not installed."""


def require_ray():
    """Return the ``ray`` module with Ray Data, or raise an ImportError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise RayUnavailableError(
            f"The 'ray' engine needs Ray Data: {_INSTALL} (ray[data]), or choose "
            f"--engine local (the default, no Ray needed). ({error})") from error
    return ray


class _Call:
    """The Ray Data batch function: unpickle each input batch, run the stage, pickle back."""

    def __init__(self, fn: BatchFn, kwargs: dict[str, Any]):
        self.fn, self.kwargs = fn, kwargs

    def __call__(self, rows: dict) -> dict:
        payloads = [pickle.dumps(self.fn(pickle.loads(p), **self.kwargs),
                                 protocol=pickle.HIGHEST_PROTOCOL) for p in rows["payload"]]
        return {"seq": list(rows["seq"]), "payload": payloads}


class RayEngine:
    """Runs batch functions as Ray Data ``map_batches``; results in input order."""

    name = "ray"

    def __init__(self, workers: int | None = None, *, address: str | None = None,
                 window: int | None = None):
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if window is not None and window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.workers = workers
        self.address = address or os.environ.get("SMARTSET_RAY_ADDRESS") or None
        self.window = window
        self._ray = require_ray()

    def _start(self) -> int:
        """Join or start the Ray runtime; return the cluster's CPUs."""
        ray = self._ray
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                       "configure_logging": False}
            if self.address:
                ray.init(address=self.address, **options)
            else:
                ray.init(num_cpus=self.workers or _usable_cores(), **options)
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def map_batches(self, fn: BatchFn, batches: Iterable[Batch], *,
                    fn_kwargs: dict[str, Any] | None = None) -> Iterator[Batch]:
        cpus = self._start()
        window = self.window or 4 * cpus
        return self._run(fn, iter(batches), fn_kwargs or {}, window)

    def _run(self, fn, iterator, kwargs, window) -> Iterator[Batch]:
        ray = self._ray
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        # one INFO line per window otherwise
        logging.getLogger("ray.data._internal.execution.streaming_executor").setLevel(logging.WARNING)
        call = _Call(fn, kwargs)
        seq = itertools.count()
        while True:
            rows = [{"seq": next(seq), "payload": pickle.dumps(b, protocol=pickle.HIGHEST_PROTOCOL)}
                    for b in itertools.islice(iterator, window)]
            if not rows:
                return
            dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
            del rows
            mapped = dataset.map_batches(call, batch_size=1, batch_format="numpy",
                                         zero_copy_batch=True)
            results = sorted(mapped.take_all(), key=lambda row: int(row["seq"]))
            for row in results:
                yield pickle.loads(row["payload"])
