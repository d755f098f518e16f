"""Confident learning (Northcutt, Jiang and Chuang, 2021) over out-of-fold probabilities.

Per-class thresholds (the mean probability of class j over the samples labeled j), the
confident joint (counts of given label i with confidently-predicted true label j),
calibrated to the label counts, and pruning by noise rate, by class, or both. The results
agree with cleanlab's ``filter.find_label_issues`` on the same inputs (a test checks it when
cleanlab is installed), without depending on it.
"""

from __future__ import annotations

import numpy as np

from smartset.clean._validation import (CleanInputError, check_labels, check_pred_probs,
                                        warn_empty_classes, warn_if_in_sample)

__all__ = ["confident_thresholds", "confident_joint", "noise_matrix", "num_label_issues",
           "label_quality", "confident_learning", "FILTERS"]

FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
           "predicted_neq_given")
_EPS = 1e-6
_MISSING_CLASS_THRESHOLD = 2.0  # above any probability: nothing is confidently a missing class


def confident_thresholds(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """``(k,)``: for each class j, the mean ``pred_probs[:, j]`` over samples labeled j.

    A class no sample is labeled with gets 2.0 (no probability reaches it)."""
    labels = check_labels(labels)
    probs = check_pred_probs(pred_probs, len(labels))
    return _thresholds(labels, probs)


def _thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    k = probs.shape[1]
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros(k)
    np.add.at(sums, labels, probs[np.arange(len(labels)), labels])
    out = np.where(counts > 0, sums / np.maximum(counts, 1), _MISSING_CLASS_THRESHOLD)
    return np.clip(out, 2 * _EPS, None)


def _confident_guess(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray):
    """Per sample: whether any class reaches its threshold, and the guessed true class."""
    above = probs >= thresholds - _EPS
    n_above = above.sum(axis=1)
    guess = np.where(n_above > 1, probs.argmax(axis=1), above.argmax(axis=1))
    return n_above > 0, guess


def _round_rows(matrix: np.ndarray) -> np.ndarray:
    """Round each row to integers keeping its (rounded) total: largest remainders first."""
    out = np.zeros(matrix.shape, dtype=np.int64)
    for i, row in enumerate(matrix):
        ints = np.round(row)
        diff = int(round(row.sum())) - int(ints.sum())
        while diff != 0:
            step = 1 if diff > 0 else -1
            order = np.argsort(row - ints)[::-step][:min(abs(diff), len(row))]
            ints[order] += step
            diff = int(round(row.sum())) - int(ints.sum())
        out[i] = ints
    return out


def _joint(labels: np.ndarray, probs: np.ndarray, *, calibrate: bool = True,
           thresholds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    k = probs.shape[1]
    thresholds = _thresholds(labels, probs) if thresholds is None else thresholds
    confident, guess = _confident_guess(labels, probs, thresholds)
    joint = np.zeros((k, k), dtype=np.int64)
    np.add.at(joint, (labels[confident], guess[confident]), 1)
    np.fill_diagonal(joint, np.maximum(joint.diagonal(), 1))
    off_diagonal = np.flatnonzero(confident & (guess != labels))
    if not calibrate:
        return joint, off_diagonal
    counts = np.bincount(labels, minlength=k)
    calibrated = joint / np.maximum(joint.sum(axis=1, keepdims=True), 1e-100) * counts[:, None]
    calibrated = calibrated / max(calibrated.sum(), 1e-100) * counts.sum()
    return _round_rows(calibrated), off_diagonal


def confident_joint(labels: np.ndarray, pred_probs: np.ndarray, *,
                    calibrate: bool = True) -> np.ndarray:
    """The confident joint ``C`` (``(k, k)`` int): ``C[i, j]`` counts samples labeled i whose
    probability of class j reaches j's threshold (the largest such j when several do).

    With ``calibrate`` (default), rows are rescaled to the label counts, so ``C`` estimates the
    joint counts of (given label, true label) and ``C.sum() == n``.
    """
    labels = check_labels(labels)
    probs = check_pred_probs(pred_probs, len(labels))
    labels = check_labels(labels, probs.shape[1])
    return _joint(labels, probs, calibrate=calibrate)[0]


def noise_matrix(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """``(k, k)``: estimated ``P(given label = i | true label = j)`` (columns sum to 1)."""
    joint = confident_joint(labels, pred_probs).astype(np.float64)
    return joint / np.maximum(joint.sum(axis=0, keepdims=True), 1e-12)


def num_label_issues(labels: np.ndarray, pred_probs: np.ndarray) -> int:
    """Estimated number of wrong labels: the off-diagonal mass of the calibrated confident
    joint (cleanlab's ``num_label_issues`` with ``estimation_method='off_diagonal_calibrated'``)."""
    joint = confident_joint(labels, pred_probs)
    return int(joint.sum() - np.trace(joint))


def label_quality(labels: np.ndarray, pred_probs: np.ndarray, *,
                  method: str = "normalized_margin") -> np.ndarray:
    """``(n,)`` label quality in [0, 1], lower is more suspicious.

    ``method``: ``self_confidence`` (probability of the given label) or
    ``normalized_margin`` ((p_label - max other p + 1) / 2).
    """
    labels = check_labels(labels)
    probs = check_pred_probs(pred_probs, len(labels))
    labels = check_labels(labels, probs.shape[1])
    return _quality(labels, probs, method)


def _quality(labels: np.ndarray, probs: np.ndarray, method: str) -> np.ndarray:
    rows = np.arange(len(labels))
    own = probs[rows, labels]
    if method == "self_confidence":
        return own
    if method == "normalized_margin":
        other = probs.copy()
        other[rows, labels] = -np.inf
        return (own - other.max(axis=1) + 1.0) / 2.0
    raise CleanInputError(f"Unknown label quality method {method!r}; methods: "
                          f"self_confidence, normalized_margin.")


def confident_learning(labels: np.ndarray, pred_probs: np.ndarray, *,
                       filter_by: str = "prune_by_noise_rate", frac_noise: float = 1.0,
                       min_examples_per_class: int = 1,
                       check_in_sample: bool = True) -> np.ndarray:
    """Flag likely wrong labels by confident learning; ``(n,)`` bool, True = suspicious.

    Parameters
    ----------
    labels : (n,) int
        The given (possibly wrong) class index of each sample.
    pred_probs : (n, k) float
        Out-of-fold predicted probabilities (rows sum to 1). In-sample probabilities hide
        wrong labels: a warning says so when they look like it.
    filter_by : str
        ``prune_by_noise_rate`` (default): for each off-diagonal cell (i, j) of the confident
        joint, flag that many samples labeled i with the largest margin p_j - p_i.
        ``prune_by_class``: for each class i, flag as many samples labeled i as the joint
        says are wrong, lowest p_i first. ``both``: flagged by both.
        ``confident_learning``: the off-diagonal samples of the confident joint.
        ``predicted_neq_given``: argmax differs from the label.
    frac_noise : float in (0, 1]
        Flag only this share of the estimated count (pruning methods).
    min_examples_per_class : int
        Never flag so many that a class keeps fewer samples.

    Samples whose given label is the model's argmax are never flagged (cleanlab does the
    same), except by nothing: this holds for every ``filter_by``.
    """
    labels = check_labels(labels)
    probs = check_pred_probs(pred_probs, len(labels))
    labels = check_labels(labels, probs.shape[1])
    if filter_by not in FILTERS:
        raise CleanInputError(f"Unknown filter_by {filter_by!r}; choose one of "
                              f"{', '.join(FILTERS)}.")
    if not 0.0 < frac_noise <= 1.0:
        raise CleanInputError(f"frac_noise must be in (0, 1], got {frac_noise}.")
    warn_empty_classes(labels, probs.shape[1])
    if check_in_sample:
        warn_if_in_sample(labels, probs)
    return _confident_learning(labels, probs, filter_by=filter_by, frac_noise=frac_noise,
                               min_examples_per_class=min_examples_per_class)


def _confident_learning(labels, probs, *, filter_by="prune_by_noise_rate", frac_noise=1.0,
                        min_examples_per_class=1) -> np.ndarray:
    n, k = probs.shape
    joint, off_diagonal = _joint(labels, probs)
    mask = np.zeros(n, dtype=bool)
    if filter_by == "confident_learning":
        mask[off_diagonal] = True
    elif filter_by == "predicted_neq_given":
        mask = probs.argmax(axis=1) != labels
    else:
        prune = _keep_at_least(joint.T, min_examples_per_class, frac_noise)  # [true, given]
        by_class = np.zeros(n, dtype=bool)
        by_rate = np.zeros(n, dtype=bool)
        for given in range(k):
            members = np.flatnonzero(labels == given)
            if len(members) <= min_examples_per_class:
                continue
            if filter_by in ("prune_by_class", "both"):
                count = len(members) - prune[given, given]
                if count >= 1:
                    order = np.argsort(probs[members, given], kind="quicksort")
                    by_class[members[order[:count]]] = True
            if filter_by in ("prune_by_noise_rate", "both"):
                for true in range(k):
                    count = prune[true, given]
                    if true != given and count > 0:
                        margin = probs[members, true] - probs[members, given]
                        order = np.argsort(-margin, kind="quicksort")
                        by_rate[members[order[:count]]] = True
        mask = {"prune_by_class": by_class, "prune_by_noise_rate": by_rate,
                "both": by_class & by_rate}[filter_by]
    nudged = probs.copy()
    nudged[np.arange(n), labels] += _EPS
    mask &= nudged.argmax(axis=1) != labels
    return mask


def _keep_at_least(prune: np.ndarray, n: int, frac_noise: float) -> np.ndarray:
    """cleanlab's ``_keep_at_least_n_per_class`` on the transposed joint [true, given]."""
    diagonal = np.diagonal(prune)
    new_diagonal = np.maximum(diagonal, n)
    diff = new_diagonal - diagonal
    nonzero = np.maximum(np.count_nonzero(prune, axis=0) - 1.0, 1.0)
    matrix = prune - diff / nonzero
    matrix[matrix < 0] = 0
    np.fill_diagonal(matrix, new_diagonal)
    reduced = matrix * frac_noise
    np.fill_diagonal(reduced, matrix.diagonal() + np.sum(matrix - reduced, axis=0))
    # cleanlab casts to int here, then rounds rows
    return _round_rows(reduced.astype(np.int64).astype(np.float64))
