"""Classes to merge: pairs confused both ways (the video-store / book-store case).

Evidence per pair (i, j): the out-of-fold confusion both ways (the share of samples
labeled i predicted j, and of j predicted i), and how much the two classes overlap in the
embedding (the share of i's neighbours labeled j and of j's labeled i, over what the class
sizes alone would give). A pair is proposed when the smaller of the two confusions
reaches ``min_confusion``: one-way confusion is a labeling habit, two-way confusion means
the classes are not told apart.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from smartset.clean._validation import (check_features, check_groups, check_k, check_labels,
                                        check_pred_probs)
from smartset.clean._neighbours import neighbours

__all__ = ["class_confusion", "find_classes_to_merge"]


def class_confusion(labels: np.ndarray, pred_probs: np.ndarray, *,
                    soft: bool = True) -> np.ndarray:
    """``(k, k)``: row i is the mean predicted distribution of the samples labeled i
    (``soft``), or the share predicted as each class (argmax). Rows of empty classes are 0."""
    labels = check_labels(labels)
    probs = check_pred_probs(pred_probs, len(labels))
    labels = check_labels(labels, probs.shape[1])
    k = probs.shape[1]
    if not soft:
        probs = np.eye(k)[probs.argmax(axis=1)]
    out = np.zeros((k, k))
    np.add.at(out, labels, probs)
    counts = np.bincount(labels, minlength=k)
    return out / np.maximum(counts, 1)[:, None]


def find_classes_to_merge(labels: np.ndarray, pred_probs: np.ndarray, *,
                          features: np.ndarray | None = None,
                          groups: np.ndarray | None = None, k: int = 10,
                          min_confusion: float = 0.2, metric: str = "cosine",
                          class_names=None) -> pd.DataFrame:
    """Pairs of classes confused both ways, most confused first.

    Returns a DataFrame with one row per pair that reaches ``min_confusion`` both ways
    (soft out-of-fold confusion; default 0.2): ``a``, ``b`` (class indices, or names when
    ``class_names`` is given), ``confusion_ab``, ``confusion_ba``, ``score`` (the smaller
    of the two), ``argmax_ab``, ``argmax_ba`` (hard confusion), ``n_a``, ``n_b``, and with
    ``features`` ``overlap_ab`` / ``overlap_ba`` (share of neighbours from the other class
    over that class's share of the data: 1 means as mixed as chance) and ``overlap``.
    Merge the smaller class into the larger (``into`` names it).
    """
    labels = check_labels(labels)
    probs = check_pred_probs(pred_probs, len(labels))
    labels = check_labels(labels, probs.shape[1])
    n_classes = probs.shape[1]
    soft = class_confusion(labels, probs)
    hard = class_confusion(labels, probs, soft=False)
    counts = np.bincount(labels, minlength=n_classes)
    mixing = None
    if features is not None:
        features = check_features(features, len(labels))
        groups = check_groups(groups, len(labels))
        k = check_k(k, len(labels), groups=groups)
        idx, _ = neighbours(features, k, metric=metric, groups=groups)
        mixing = np.zeros((n_classes, n_classes))
        valid = idx >= 0
        rows = np.repeat(labels, k)[valid.ravel()]
        cols = labels[idx[valid]]
        np.add.at(mixing, (rows, cols), 1.0)
        mixing /= np.maximum(mixing.sum(axis=1, keepdims=True), 1)
        share = counts / max(counts.sum(), 1)
        mixing = mixing / np.maximum(share[None, :], 1e-12)
    names = list(class_names) if class_names is not None else list(range(n_classes))
    rows = []
    for a in range(n_classes):
        for b in range(a + 1, n_classes):
            if counts[a] == 0 or counts[b] == 0:
                continue
            score = min(soft[a, b], soft[b, a])
            if score < min_confusion:
                continue
            row = {"a": names[a], "b": names[b], "confusion_ab": round(float(soft[a, b]), 4),
                   "confusion_ba": round(float(soft[b, a]), 4), "score": round(float(score), 4),
                   "argmax_ab": round(float(hard[a, b]), 4),
                   "argmax_ba": round(float(hard[b, a]), 4),
                   "n_a": int(counts[a]), "n_b": int(counts[b]),
                   "into": names[a] if counts[a] >= counts[b] else names[b]}
            if mixing is not None:
                row.update(overlap_ab=round(float(mixing[a, b]), 4),
                           overlap_ba=round(float(mixing[b, a]), 4),
                           overlap=round(float(min(mixing[a, b], mixing[b, a])), 4))
            rows.append(row)
    columns = ["a", "b", "score", "confusion_ab", "confusion_ba", "argmax_ab", "argmax_ba",
               "n_a", "n_b", "into"] + (["overlap_ab", "overlap_ba", "overlap"]
                                        if mixing is not None else [])
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
