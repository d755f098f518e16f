"""Thread counts chosen on purpose, from the cores that are actually free.

Why by hand: torch's intra-op pool (OpenMP) and OpenCV start one thread per core whatever
else runs on the machine. When another process holds a core, a parallel region waits for
its descheduled thread at every barrier: on 2 shared cores smartset's batched augmentation
fell 10-20x and training with 2 threads burned 5.7x the CPU of 1 thread per epoch. Neither
library looks at the load, so smartset chooses:

- an explicit count (``threads=``, ``--threads``) or ``SMARTSET_THREADS`` wins;
- inside a worker process (a DataLoader worker, an engine worker) 1 thread: the processes
  are the parallelism;
- otherwise the usable cores minus the cores other processes keep busy, read from
  ``/proc/loadavg`` (the runnable count now and the 1-minute average, the smaller of the
  two, so a burst that ended does not stick and our own pool is not counted against us);
- for training (``purpose="train"``) on fewer than 4 cores, 1 thread: a small network's
  epoch gains little from a second thread and loses a lot when the core is shared.

:func:`limit_threads` applies a count to torch and OpenCV for a block and restores the
previous counts after; :func:`worker_init_fn` gives each DataLoader worker 1 thread in both
(torch already does it for itself, OpenCV does not).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import sys
import threading

__all__ = ["blas_threads", "capped_threads", "choose_threads", "limit_threads", "thread_pool",
           "usable_cores", "worker_init_fn", "ENV_THREADS"]

ENV_THREADS = "SMARTSET_THREADS"
_PURPOSES = ("augment", "train")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def busy_elsewhere() -> float:
    """Cores other processes keep busy: the smaller of the runnable tasks now (less this
    one) and the 1-minute load average; 0.0 where the OS reports neither."""
    try:
        with open("/proc/loadavg") as handle:
            fields = handle.read().split()
        running_now = max(0.0, float(fields[3].split("/")[0]) - 1)
        return min(float(fields[0]), running_now)
    except (OSError, IndexError, ValueError):
        try:
            return float(os.getloadavg()[0])
        except (AttributeError, OSError):
            return 0.0


def _in_worker_process() -> bool:
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.utils.data.get_worker_info() is not None:
                return True
        except AttributeError:  # torch partly imported
            pass
    return multiprocessing.parent_process() is not None


def _parse_env(value: str) -> int:
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"{ENV_THREADS}={value!r} is not a thread count: set it to a "
                         f"positive integer (e.g. {ENV_THREADS}=1), or unset it to let "
                         f"smartset choose from the free cores.")
    return threads


def choose_threads(requested: int | None = None, *, purpose: str = "augment",
                   cores: int | None = None, busy: float | None = None,
                   in_worker: bool | None = None, env: dict | None = None) -> int:
    """The number of torch/OpenCV threads to use for ``purpose`` (``"augment"`` or
    ``"train"``).

    ``requested`` (a positive int) wins, then ``SMARTSET_THREADS``; then 1 in a worker
    process; then (``"train"`` on fewer than 4 cores) 1; else the usable cores less the
    cores busy elsewhere, rounded down, at least 1. ``cores``, ``busy``, ``in_worker`` and
    ``env`` replace what is read from this machine (for tests and replays).
    """
    if purpose not in _PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(_PURPOSES)}, got {purpose!r}")
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"threads must be a positive integer, got {requested!r}")
        return requested
    env = os.environ if env is None else env
    if env.get(ENV_THREADS):
        return _parse_env(env[ENV_THREADS])
    if _in_worker_process() if in_worker is None else in_worker:
        return 1
    cores = usable_cores() if cores is None else int(cores)
    if purpose == "train" and cores < 4:
        return 1
    busy = busy_elsewhere() if busy is None else float(busy)
    return max(1, min(cores, math.floor(cores - busy + 1e-9)))


def _set(threads: int) -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    cv2 = sys.modules.get("cv2")  # only when already imported: OpenCV is not imported here
    if cv2 is not None and cv2.getNumThreads() != threads:
        cv2.setNumThreads(threads)


def _current() -> tuple[int | None, int | None]:
    torch, cv2 = sys.modules.get("torch"), sys.modules.get("cv2")
    return (torch.get_num_threads() if torch is not None else None,
            cv2.getNumThreads() if cv2 is not None else None)


@contextlib.contextmanager
def limit_threads(threads: int):
    """Run the block with ``threads`` torch intra-op and OpenCV threads, then restore the
    previous counts (of the libraries already imported; neither is imported here)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    before = _current()
    _set(threads)
    try:
        yield threads
    finally:
        torch, cv2 = sys.modules.get("torch"), sys.modules.get("cv2")
        if before[0] is not None and torch.get_num_threads() != before[0]:
            torch.set_num_threads(before[0])
        if before[1] is not None and cv2 is not None and cv2.getNumThreads() != before[1]:
            cv2.setNumThreads(before[1])


@contextlib.contextmanager
def blas_threads(threads: int):
    """Run the block with ``threads`` BLAS threads in NumPy (OpenBLAS / MKL, through
    threadpoolctl), restored after; without threadpoolctl the block runs unchanged.

    For NumPy products made on threads of our own: OpenBLAS starts one thread per core
    for every product and its threads spin while they wait, so two verification threads
    each calling a 2-thread product on 2 cores spent twice the CPU for no speed (the
    photo audit's near-copy verification: 1.8 -> 1.0 CPU-s, wall time down too)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield threads
        return
    with threadpool_limits(limits=threads, user_api="blas"):
        yield threads


def capped_threads(purpose: str = "augment"):
    """:func:`limit_threads` at the smaller of the caller's torch thread count (a ceiling
    the caller set on purpose, e.g. ``torch.set_num_threads(1)``) and
    :func:`choose_threads` for ``purpose``: the block never oversubscribes a shared core."""
    torch = sys.modules.get("torch")
    ceiling = torch.get_num_threads() if torch is not None else usable_cores()
    return limit_threads(max(1, min(ceiling, choose_threads(purpose=purpose))))


def worker_init_fn(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: 1 torch and 1 OpenCV thread in each worker (the
    workers are the parallelism; ``SMARTSET_THREADS`` still wins where set). OpenCV is
    imported here when installed, so that its pool starts at that size."""
    import importlib.util

    if "cv2" not in sys.modules and importlib.util.find_spec("cv2") is not None:
        import cv2  # noqa: F401  (smartset's JPEG/blur kernels use it in the worker)
    _set(choose_threads(in_worker=True))


_POOLS: dict = {}
_POOL_LOCK = threading.Lock()


def thread_pool(threads: int):
    """The process's pool of ``threads`` worker threads (OpenCV and NumPy release the GIL),
    kept between calls: a pool per size, created once. A forked child never reuses its
    parent's pool (it inherits the object, not the threads, and would wait for ever): pools
    are keyed by process id."""
    from concurrent.futures import ThreadPoolExecutor

    key = (os.getpid(), int(threads))
    pool = _POOLS.get(key)
    if pool is None:
        with _POOL_LOCK:
            pool = _POOLS.get(key)
            if pool is None:
                pool = _POOLS[key] = ThreadPoolExecutor(int(threads),
                                                        thread_name_prefix="smartset-pool")
    return pool

