"""Exact k nearest neighbours for the cleaning detectors (FAISS, flat indexes).

``groups`` restricts each sample's neighbours to its own group: out-of-fold features are
computed by a different model per fold, so only samples embedded by the same model are
comparable.
"""

from __future__ import annotations

import numpy as np

from smartset.clean._validation import CleanInputError

__all__ = ["neighbours", "METRICS"]

METRICS = ("euclidean", "cosine")


def _search(data: np.ndarray, queries: np.ndarray, k: int, metric: str):
    import faiss

    if metric == "cosine":
        index = faiss.IndexFlatIP(data.shape[1])
    else:
        index = faiss.IndexFlatL2(data.shape[1])
    index.add(data)
    dist, idx = index.search(queries, k)
    if metric == "cosine":
        dist = np.clip(1.0 - dist, 0.0, None)  # cosine distance
    else:
        dist = np.sqrt(np.clip(dist, 0.0, None))
    return dist, idx


def prepare(features: np.ndarray, metric: str) -> np.ndarray:
    if metric not in METRICS:
        raise CleanInputError(f"Unknown metric {metric!r}; metrics: {', '.join(METRICS)}.")
    data = np.ascontiguousarray(features, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(data, axis=1, keepdims=True)
        data = data / np.where(norms > 0, norms, 1.0)
    return np.ascontiguousarray(data)


def neighbours(features: np.ndarray, k: int, *, metric: str = "euclidean",
               groups: np.ndarray | None = None, subset: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other samples of each sample: ``(indices, distances)``, ``(n, k)``,
    nearest first. ``subset`` (row indices) limits both the queries and the candidates;
    the returned indices are then global row numbers, rows outside ``subset`` are -1.
    Callers check that every group holds more than ``k`` samples."""
    data = prepare(features, metric)
    n = len(data)
    rows_all = np.arange(n) if subset is None else np.asarray(subset, dtype=np.int64)
    indices = np.full((n, k), -1, dtype=np.int64)
    distances = np.full((n, k), np.inf, dtype=np.float32)
    group_of = np.zeros(n, dtype=np.int64) if groups is None else groups
    for group in np.unique(group_of[rows_all]):
        rows = rows_all[group_of[rows_all] == group]
        want = min(k + 1, len(rows))
        dist, idx = _search(data[rows], data[rows], want, metric)
        keep = (idx != np.arange(len(rows))[:, None]) & (idx >= 0)
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # drop the query itself
        chosen = np.take_along_axis(idx, order, axis=1)
        valid = np.take_along_axis(keep, order, axis=1)
        indices[rows, :chosen.shape[1]] = np.where(valid, rows[np.clip(chosen, 0, None)], -1)
        distances[rows, :chosen.shape[1]] = np.where(
            valid, np.take_along_axis(dist, order, axis=1), np.inf)
    return indices, distances
