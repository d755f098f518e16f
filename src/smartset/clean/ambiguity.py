"""Ambiguous and multi-class images: the evidence points at two or more classes.

Two signals: the model gives two classes high probability (a small top-2 margin), or the
sample's neighbourhood in the embedding is split between classes. An ambiguous sample is
suggested as ``multi_label`` (it plausibly shows both: a bar that is also a restaurant)
or ``exclude`` (it shows neither well: a blot, a blank frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smartset.clean._validation import (CleanInputError, check_features, check_groups, check_k,
                                        check_labels, check_pred_probs)
from smartset.clean.knn_filters import knn_posterior

__all__ = ["Ambiguity", "find_ambiguous"]


@dataclass
class Ambiguity:
    """Arrays over the ``n`` samples: ``is_ambiguous`` (bool), ``score`` (higher = more
    ambiguous, in [0, 1]), ``classes`` (``(n, 2)`` int, the two leading classes),
    ``margin`` (top-1 minus top-2 of the posterior), ``entropy`` (normalised, in [0, 1]),
    ``knn_split`` (``(n,)`` share of neighbours outside the leading class, or None),
    ``suggestion`` (``multi_label``, ``exclude`` or '' per sample)."""

    is_ambiguous: np.ndarray
    score: np.ndarray
    classes: np.ndarray
    margin: np.ndarray
    entropy: np.ndarray
    knn_split: np.ndarray | None
    suggestion: np.ndarray


def find_ambiguous(pred_probs: np.ndarray, *, labels: np.ndarray | None = None,
                   features: np.ndarray | None = None, groups: np.ndarray | None = None,
                   max_margin: float = 0.2, min_second: float = 0.25, k: int = 10,
                   min_split: float = 0.4, min_top2_mass: float = 0.8,
                   metric: str = "cosine", rule: str = "both") -> Ambiguity:
    """Find samples whose evidence is split between classes.

    Parameters
    ----------
    pred_probs : (n, k) float
        Out-of-fold probabilities.
    labels : (n,) int, optional
        Given labels; needed for the kNN signal (neighbours vote with their labels).
    features : (n, d) float, optional
        Embeddings for the kNN signal; ``groups`` as in :func:`knn_posterior`.
    max_margin : float
        Ambiguous when the top-2 probabilities differ by at most this (default 0.2) and
        the second reaches ``min_second`` (default 0.25).
    min_split : float
        Or when at least this share (default 0.4) of the ``k`` neighbours' weighted vote
        goes to classes other than the leading one, and the second class alone has at
        least ``min_second``.
    rule : ``both`` (default), ``either``, ``model`` or ``knn``
        Which signals must agree when ``features`` are given: both (fewer, surer
        proposals: a weak model is unsure of many atypical images whose neighbourhood
        is not split), either, or one alone. Without features the model's signal decides.
    min_top2_mass : float
        An ambiguous sample whose two leading classes hold less than this share of the
        posterior (default 0.8: the evidence spreads over many classes, not two) is
        suggested ``exclude``; the others ``multi_label`` with their two leading classes.
    """
    probs = check_pred_probs(pred_probs)
    n, n_classes = probs.shape
    if not 0.0 <= max_margin <= 1.0 or not 0.0 <= min_second <= 0.5:
        raise CleanInputError(f"max_margin must be in [0, 1] and min_second in [0, 0.5], got "
                              f"{max_margin} and {min_second}.")
    posterior = probs
    split = None
    if features is not None:
        if labels is None:
            raise CleanInputError("The kNN signal needs the given labels: pass labels= with "
                                  "features=.")
        labels = check_labels(labels, n_classes)
        features = check_features(features, n)
        groups = check_groups(groups, n)
        k = check_k(k, n, groups=groups)
        knn = knn_posterior(labels, features, n_classes=n_classes, k=k, groups=groups,
                            metric=metric, smoothing=0.0)
        posterior = (probs + knn) / 2.0
        order_knn = np.sort(knn, axis=1)
        split = 1.0 - order_knn[:, -1]
        knn_two = (split >= min_split) & (order_knn[:, -2] >= min_second)
    order = np.argsort(-posterior, axis=1, kind="stable")[:, :2]
    top = np.take_along_axis(posterior, order, axis=1)
    margin = top[:, 0] - top[:, 1]
    safe = np.clip(posterior, 1e-12, 1.0)
    entropy = -(safe * np.log(safe)).sum(axis=1) / np.log(n_classes)
    model_order = np.sort(probs, axis=1)
    model_two = ((model_order[:, -1] - model_order[:, -2] <= max_margin)
                 & (model_order[:, -2] >= min_second))
    rules = ("both", "either", "model", "knn")
    if rule not in rules:
        raise CleanInputError(f"Unknown rule {rule!r}; rules: {', '.join(rules)}.")
    if split is None or rule == "model":
        is_ambiguous = model_two
    else:
        is_ambiguous = {"both": model_two & knn_two, "either": model_two | knn_two,
                        "knn": knn_two}[rule]
    is_ambiguous &= top[:, 1] >= min_second / 2
    score = np.clip(1.0 - margin, 0.0, 1.0) * np.where(is_ambiguous, 1.0, 0.5)
    suggestion = np.where(is_ambiguous, np.where(top.sum(axis=1) < min_top2_mass, "exclude",
                                                 "multi_label"), "")
    return Ambiguity(is_ambiguous=is_ambiguous, score=score, classes=order, margin=margin,
                     entropy=entropy, knn_split=split, suggestion=suggestion.astype(object))
