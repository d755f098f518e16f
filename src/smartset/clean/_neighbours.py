"""The cleaning detectors' k nearest neighbours: :func:`smartset.neighbours.nearest`
(exact; FAISS flat indexes, NumPy without FAISS), with clean's own error for an unknown
metric.

``groups`` restricts each sample's neighbours to its own group: out-of-fold features are
computed by a different model per fold, so only samples embedded by the same model are
comparable.
"""

from __future__ import annotations

import numpy as np

from smartset.clean._validation import CleanInputError
from smartset.neighbours import METRICS, nearest

__all__ = ["neighbours", "METRICS"]


def neighbours(features: np.ndarray, k: int, *, metric: str = "euclidean",
               groups: np.ndarray | None = None, subset: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other samples of each sample: ``(indices, distances)``, ``(n, k)``,
    nearest first (see :func:`smartset.neighbours.nearest`). ``subset`` (row indices)
    limits both the queries and the candidates; the returned indices are then global row
    numbers, rows outside ``subset`` are -1. Callers check that every group holds more
    than ``k`` samples."""
    if metric not in METRICS:
        raise CleanInputError(f"Unknown metric {metric!r}; metrics: {', '.join(METRICS)}.")
    return nearest(features, k, metric=metric, groups=groups, subset=subset)
