"""PyTorch is an optional extra: the modules that need it import it through here."""

from __future__ import annotations


def require_torch(feature: str):
    """Return the ``torch`` module, or raise an ImportError that says how to install it."""
    try:
        import torch
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            f"{feature} needs PyTorch: pip install 'smartset[torch]' (torch==2.13.0)"
        ) from error
    return torch


def one_thread_in_worker_processes(torch) -> None:
    """Use one torch thread when running in a worker process of the local engine.

    The engine forks its workers; OpenMP's thread pool does not survive a fork, so a child
    whose parent already ran parallel torch code hangs when it enters the pool (what
    DataLoader workers avoid the same way). The engine's processes are the parallelism.
    """
    import multiprocessing

    if multiprocessing.parent_process() is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)
