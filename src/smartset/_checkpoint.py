"""Saving and reading the model files of every trainer (classifier, segmenter, detector).

One place for what the three share: the write is atomic (a crash leaves the previous file
whole), the read never runs pickled code (``weights_only=True``), and a missing, damaged or
foreign file is one error that names the file and says what to do. Each trainer keeps its
own error class and wording of the fix; the ``format`` stamp tells its files apart.
"""

from __future__ import annotations

from pathlib import Path

import torch

from smartset._atomic import atomic_path

__all__ = ["save_state", "read_state"]


def save_state(state: dict, path: str | Path) -> Path:
    """``torch.save`` ``state`` to ``path`` through a temporary file and one rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def read_state(path: str | Path, *, format: str, error: type[Exception], missing: str,
               damaged: str, foreign: str) -> dict:
    """The state dict saved at ``path`` whose ``"format"`` is ``format``.

    Raises ``error`` with one line: ``missing`` when there is no file, ``damaged`` when torch
    cannot read it, ``foreign`` when it is not a ``format`` file. Each message may use
    ``{path}``, ``{format}`` and (``damaged``) ``{reason}``, the exception type and the
    start of its message.
    """
    path = Path(path)
    if not path.is_file():
        raise error(missing.format(path=path, format=format))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code
    except Exception as problem:  # torch raises many types for a truncated or foreign file
        reason = f"{type(problem).__name__}: {str(problem)[:120]}"
        raise error(damaged.format(path=path, format=format, reason=reason)) from None
    if not isinstance(state, dict) or state.get("format") != format:
        raise error(foreign.format(path=path, format=format))
    return state
