"""Checks of the arrays every cleaning detector takes, with messages that say the fix."""

from __future__ import annotations

import warnings

import numpy as np

from smartset.errors import SmartsetError

__all__ = ["CleanInputError", "CleanWarning", "InSampleWarning", "check_labels",
           "check_pred_probs", "check_features", "check_k", "check_groups"]

#: how far a row of probabilities may sum from 1 (float32 softmax outputs drift ~1e-6)
SUM_TOLERANCE = 1e-3


class CleanInputError(SmartsetError, ValueError):
    """The labels, probabilities or features given to a cleaning detector are not usable."""


class CleanWarning(UserWarning):
    """Something about the input weakens what a detector can find (a class with no samples)."""


class InSampleWarning(CleanWarning):
    """The probabilities were predicted by a model that saw the samples (not out-of-fold)."""


def check_labels(labels, n_classes: int | None = None) -> np.ndarray:
    """``labels`` as an int64 vector of class indices in ``[0, n_classes)``."""
    array = np.asarray(labels)
    if array.ndim != 1:
        raise CleanInputError(f"labels must be a vector of class indices (shape (n,)), got "
                              f"shape {array.shape}. Pass one integer label per sample.")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array)) \
                and np.all(array == np.round(array)):
            array = array.astype(np.int64)
        else:
            raise CleanInputError(
                f"labels must be integer class indices, got dtype {array.dtype}. Map class "
                f"names to indices first, e.g. np.unique(names, return_inverse=True)[1].")
    array = array.astype(np.int64, copy=False)
    if array.size and array.min() < 0:
        raise CleanInputError(f"labels must be >= 0, got {int(array.min())}. Unlabeled samples "
                              f"have no label to check: leave them out.")
    if n_classes is not None and array.size and array.max() >= n_classes:
        raise CleanInputError(
            f"label {int(array.max())} is out of range for pred_probs with {n_classes} columns "
            f"(classes 0..{n_classes - 1}). pred_probs needs one column per class, in the order "
            f"of the label indices.")
    return array


def check_pred_probs(pred_probs, n: int | None = None, *, name: str = "pred_probs") -> np.ndarray:
    """``pred_probs`` as float64 ``(n, k)``: finite, in [0, 1], rows summing to one."""
    probs = np.asarray(pred_probs)
    if probs.ndim != 2:
        raise CleanInputError(f"{name} must be a 2-D array (n samples x k classes), got shape "
                              f"{probs.shape}.")
    if not np.issubdtype(probs.dtype, np.number):
        raise CleanInputError(f"{name} must be numeric, got dtype {probs.dtype}.")
    probs = probs.astype(np.float64, copy=False)
    if n is not None and probs.shape[0] != n:
        raise CleanInputError(f"{name} has {probs.shape[0]} rows but there are {n} labels: "
                              f"give one row of probabilities per labeled sample, in the same "
                              f"order.")
    if probs.shape[1] < 2:
        raise CleanInputError(f"{name} needs at least 2 classes (columns), got "
                              f"{probs.shape[1]}.")
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise CleanInputError(f"{name} has NaN or infinite values in {bad.sum()} row(s) (first: "
                              f"{', '.join(map(str, rows[:5]))}). Re-run the predictions, or "
                              f"leave those samples out.")
    if probs.min() < -1e-6 or probs.max() > 1 + 1e-6:
        raise CleanInputError(f"{name} must be probabilities in [0, 1], got values from "
                              f"{probs.min():.3g} to {probs.max():.3g}: these look like logits; "
                              f"apply a softmax first.")
    sums = probs.sum(axis=1)
    off = np.abs(sums - 1.0) > SUM_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise CleanInputError(
            f"Rows of {name} must sum to 1, but {off.sum()} do not (row {row} sums to "
            f"{sums[row]:.4f}). Pass softmax probabilities over all classes (not per-class "
            f"sigmoid scores), or normalise each row: p / p.sum(axis=1, keepdims=True).")
    return np.clip(probs, 0.0, 1.0)


def check_features(features, n: int, *, name: str = "features") -> np.ndarray:
    """``features`` as float32 ``(n, d)`` with finite values."""
    array = np.asarray(features)
    if array.ndim != 2:
        raise CleanInputError(f"{name} must be a 2-D array (n samples x d dimensions), got "
                              f"shape {array.shape}. Flatten images first, or pass embeddings.")
    if array.shape[0] != n:
        raise CleanInputError(f"{name} has {array.shape[0]} rows but there are {n} labels: give "
                              f"one row per labeled sample, in the same order.")
    array = np.ascontiguousarray(array, dtype=np.float32)
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise CleanInputError(f"{name} has NaN or infinite values in {bad.sum()} row(s) (first: "
                              f"{int(np.flatnonzero(bad)[0])}). Recompute the embeddings, or "
                              f"leave those samples out.")
    return array


def check_groups(groups, n: int) -> np.ndarray | None:
    """``groups`` (e.g. the fold that embedded each sample) as int64 ``(n,)``, or None."""
    if groups is None:
        return None
    array = np.asarray(groups)
    if array.shape != (n,):
        raise CleanInputError(f"groups must have one entry per sample ({n},), got shape "
                              f"{array.shape}.")
    return np.unique(array, return_inverse=True)[1].astype(np.int64)


def check_k(k: int, n: int, *, groups: np.ndarray | None = None, name: str = "k") -> int:
    """``k`` neighbours need at least ``k + 1`` samples (in each group)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise CleanInputError(f"{name} must be a positive integer, got {k!r}.")
    smallest = n if groups is None else int(np.bincount(groups).min())
    if smallest < k + 1:
        where = "samples" if groups is None else "samples in the smallest group (fold)"
        raise CleanInputError(f"{name}={k} neighbours need at least {k + 1} {where}, got "
                              f"{smallest}. Lower {name}, or add samples.")
    return int(k)


def warn_empty_classes(labels: np.ndarray, n_classes: int, *, stacklevel: int = 3) -> np.ndarray:
    """Warn about classes no sample is labeled with; returns the per-class counts."""
    counts = np.bincount(labels, minlength=n_classes)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        warnings.warn(f"{empty.size} class(es) have no samples with that label (index "
                      f"{', '.join(map(str, empty[:10]))}): no threshold can be estimated for "
                      f"them, so no sample is suggested into them. Drop unused classes from "
                      f"pred_probs, or add samples.", CleanWarning, stacklevel=stacklevel)
    return counts


def warn_if_in_sample(labels: np.ndarray, probs: np.ndarray, *, stacklevel: int = 3) -> bool:
    """Warn when probabilities look in-sample: every argmax equals the given label and the
    model is nearly certain of it, which out-of-fold predictions on real data never are."""
    n = len(labels)
    if n < 200:
        return False
    self_conf = probs[np.arange(n), labels]
    agree = (probs.argmax(axis=1) == labels).mean()
    if agree == 1.0 and np.median(self_conf) > 0.999:
        warnings.warn(
            f"pred_probs agree with every one of the {n} given labels, with median confidence "
            f"{np.median(self_conf):.4f}: they look in-sample (predicted by a model that "
            f"trained on these samples), which hides wrong labels. Use out-of-fold "
            f"probabilities ('smartset predict --oof', or smartset.learn.cross_val_predict).",
            InSampleWarning, stacklevel=stacklevel)
        return True
    return False
