"""kNN editing filters from the smart-data literature, on embeddings: they flag, never delete.

- ENN, Wilson's edited nearest neighbours (1972): a sample whose ``k`` nearest neighbours
  out-vote its label is flagged.
- RENN: ENN repeated on the samples not yet flagged, until nothing changes.
- All-kNN (Tomek, 1976): ENN with 1, 2, ..., ``k`` neighbours, each on what the previous
  round kept.
- :func:`knn_posterior`: the class distribution of each sample's neighbourhood (leave one
  out), the kNN evidence the consensus combines with model probabilities.

Voting rules (``kind``): ``mode`` flags a sample unless its label is (one of) the most
frequent among its neighbours; ``all`` flags it unless every neighbour shares its label
(imbalanced-learn's ``kind_sel='all'``); ``weighted`` is ``mode`` with votes weighted by
inverse distance.

``groups`` limits neighbours to the same group: pass the fold of each sample when the
features are out-of-fold embeddings (each fold's model embeds its own held-out samples,
and embeddings of different models are not comparable).
"""

from __future__ import annotations

import numpy as np

from smartset.clean._neighbours import METRICS, neighbours
from smartset.clean._validation import (CleanInputError, check_features, check_groups,
                                        check_k, check_labels)

__all__ = ["edited_nearest_neighbours", "repeated_edited_nearest_neighbours", "all_knn",
           "knn_posterior", "VOTING_RULES"]

VOTING_RULES = ("mode", "all", "weighted")


def _prepare(labels, features, k, groups, kind, metric, only_classes):
    labels = check_labels(labels)
    features = check_features(features, len(labels))
    groups = check_groups(groups, len(labels))
    k = check_k(k, len(labels), groups=groups)
    if kind not in VOTING_RULES:
        raise CleanInputError(f"Unknown voting rule kind={kind!r}; choose one of "
                              f"{', '.join(VOTING_RULES)}.")
    if metric not in METRICS:
        raise CleanInputError(f"Unknown metric {metric!r}; metrics: {', '.join(METRICS)}.")
    eligible = np.ones(len(labels), dtype=bool)
    if only_classes is not None:
        eligible = np.isin(labels, np.asarray(list(only_classes), dtype=np.int64))
    return labels, features, k, groups, eligible


def _votes_disagree(labels, idx, dist, kind) -> np.ndarray:
    """Per sample: whether its neighbours (``idx``, -1 = none) out-vote its label."""
    n, k = idx.shape
    valid = idx >= 0
    neighbour_labels = np.where(valid, labels[np.clip(idx, 0, None)], -1)
    if kind == "all":
        return (valid & (neighbour_labels != labels[:, None])).any(axis=1)
    if kind == "weighted":
        weights = np.where(valid, 1.0 / (dist + 1e-6), 0.0)
    else:
        weights = valid.astype(np.float64)
    n_classes = int(labels.max()) + 1 if n else 0
    votes = np.zeros((n, max(n_classes, 1)))
    rows = np.repeat(np.arange(n), k)
    cols = np.clip(neighbour_labels.ravel(), 0, None)
    np.add.at(votes, (rows, cols), weights.ravel())
    own = votes[np.arange(n), labels]
    votes[np.arange(n), labels] = -np.inf
    return votes.max(axis=1) > own + 1e-12


def edited_nearest_neighbours(labels: np.ndarray, features: np.ndarray, *, k: int = 3,
                              kind: str = "mode", metric: str = "euclidean",
                              groups: np.ndarray | None = None,
                              only_classes=None) -> np.ndarray:
    """Wilson's ENN as a noise filter: ``(n,)`` bool, True where the ``k`` nearest
    neighbours (in ``features``, ``(n, d)``) out-vote the sample's label under ``kind``
    (``mode``, ``all`` or ``weighted``). ``only_classes`` (class indices) limits which
    samples may be flagged, e.g. the majority classes when undersampling."""
    labels, features, k, groups, eligible = _prepare(labels, features, k, groups, kind, metric,
                                                     only_classes)
    idx, dist = neighbours(features, k, metric=metric, groups=groups)
    return _votes_disagree(labels, idx, dist, kind) & eligible


def repeated_edited_nearest_neighbours(labels: np.ndarray, features: np.ndarray, *, k: int = 3,
                                       kind: str = "mode", metric: str = "euclidean",
                                       groups: np.ndarray | None = None, only_classes=None,
                                       max_iter: int = 100) -> np.ndarray:
    """RENN: ENN repeated on the samples kept so far until a round flags nothing (or
    ``max_iter`` rounds). Returns every sample flagged in any round, ``(n,)`` bool."""
    labels, features, k, groups, eligible = _prepare(labels, features, k, groups, kind, metric,
                                                     only_classes)
    flagged = np.zeros(len(labels), dtype=bool)
    for _ in range(max_iter):
        kept = np.flatnonzero(~flagged)
        if _too_small(kept, groups, k):
            break
        idx, dist = neighbours(features, k, metric=metric, groups=groups, subset=kept)
        new = np.zeros(len(labels), dtype=bool)
        new[kept] = _votes_disagree(labels, idx, dist, kind)[kept] & eligible[kept]
        if not new.any():
            break
        flagged |= new
    return flagged


def all_knn(labels: np.ndarray, features: np.ndarray, *, k: int = 3, kind: str = "all",
            metric: str = "euclidean", groups: np.ndarray | None = None,
            only_classes=None) -> np.ndarray:
    """All-kNN: ENN with 1, 2, ..., ``k`` neighbours, each round on the samples the rounds
    before kept. Returns every sample flagged, ``(n,)`` bool."""
    labels, features, k, groups, eligible = _prepare(labels, features, k, groups, kind, metric,
                                                     only_classes)
    flagged = np.zeros(len(labels), dtype=bool)
    for size in range(1, k + 1):
        kept = np.flatnonzero(~flagged)
        if _too_small(kept, groups, size):
            break
        idx, dist = neighbours(features, size, metric=metric, groups=groups, subset=kept)
        new = np.zeros(len(labels), dtype=bool)
        new[kept] = _votes_disagree(labels, idx, dist, kind)[kept] & eligible[kept]
        flagged |= new
    return flagged


def _too_small(kept: np.ndarray, groups, k: int) -> bool:
    if groups is None:
        return len(kept) < k + 1
    counts = np.bincount(groups[kept])
    return bool((counts[counts > 0] < k + 1).any())


def knn_posterior(labels: np.ndarray, features: np.ndarray, *, n_classes: int | None = None,
                  k: int = 10, weights: str = "distance", metric: str = "cosine",
                  groups: np.ndarray | None = None, smoothing: float = 1.0,
                  return_neighbours: bool = False):
    """Leave-one-out kNN class probabilities, ``(n, n_classes)`` float64, rows sum to 1.

    Each sample's ``k`` nearest other samples vote for their labels, ``weights``
    ``uniform`` or ``distance`` (``1 / (d + eps)``, eps the median neighbour distance /
    10), plus ``smoothing`` votes spread over the classes by their frequency. With
    ``return_neighbours``, also returns ``(indices, distances)``.
    """
    labels = check_labels(labels, n_classes)
    features = check_features(features, len(labels))
    groups = check_groups(groups, len(labels))
    k = check_k(k, len(labels), groups=groups)
    if weights not in ("uniform", "distance"):
        raise CleanInputError(f"weights must be 'uniform' or 'distance', got {weights!r}.")
    n_classes = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    idx, dist = neighbours(features, k, metric=metric, groups=groups)
    posterior = _posterior_from(labels, idx, dist, n_classes, weights, smoothing)
    if return_neighbours:
        return posterior, (idx, dist)
    return posterior


def _posterior_from(labels, idx, dist, n_classes, weights="distance", smoothing=1.0):
    n, k = idx.shape
    valid = idx >= 0
    if weights == "distance":
        finite = dist[valid]
        eps = max(float(np.median(finite)) / 10.0, 1e-6) if finite.size else 1e-6
        w = np.where(valid, 1.0 / (dist + eps), 0.0)
        w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12) * valid.sum(axis=1, keepdims=True)
    else:
        w = valid.astype(np.float64)
    votes = np.zeros((n, n_classes))
    rows = np.repeat(np.arange(n), k)
    np.add.at(votes, (rows, np.where(valid, labels[np.clip(idx, 0, None)], 0).ravel()),
              w.ravel())
    prior = np.bincount(labels, minlength=n_classes) / max(n, 1)
    votes += smoothing * prior[None, :]
    return votes / votes.sum(axis=1, keepdims=True)
