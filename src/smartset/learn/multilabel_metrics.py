"""Multi-label metrics and per-class thresholds, over NumPy arrays.

``Y`` is an ``(N, K)`` 0/1 indicator matrix (a row: the classes an image shows), ``probs``
the ``(N, K)`` independent per-class probabilities of a sigmoid head. Written by hand in
NumPy (not scikit-learn's functions) so that one sort per class gives both average
precision and the F1-maximising threshold; the suite checks every number against
scikit-learn's ``average_precision_score``, ``f1_score``, ``hamming_loss`` and
``accuracy_score``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from smartset.learn.errors import LearnError

__all__ = ["average_precision", "choose_thresholds", "multilabel_report", "format_multilabel",
           "DEFAULT_THRESHOLD"]

DEFAULT_THRESHOLD = 0.5
"""The threshold of a class without a positive (or without a negative) in validation."""


def _check(y_true, probs) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim != 2 or p.shape != y.shape:
        raise LearnError(f"multi-label truth and probabilities must both be (N, K); got "
                         f"{y.shape} and {p.shape}")
    if not np.isin(y, (0, 1)).all():
        raise LearnError("multi-label truth must be a 0/1 indicator matrix")
    return y.astype(bool), p


def _curve(y: np.ndarray, s: np.ndarray):
    """Cumulative true and false positives at each distinct score, highest first."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last row of each tie group
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    return s[last], tp, fp


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of one class (scikit-learn's definition: the sum over distinct
    thresholds of the recall step times the precision there); NaN without positives."""
    y = np.asarray(y_true).astype(bool)
    positives = int(y.sum())
    if positives == 0:
        return float("nan")
    _, tp, fp = _curve(y, np.asarray(scores, dtype=np.float64))
    precision = tp / (tp + fp)
    recall_step = np.diff(np.r_[0, tp]) / positives
    return float(np.sum(recall_step * precision))


def choose_thresholds(y_true, probs) -> np.ndarray:
    """Per-class thresholds ``(K,)`` that maximise F1 on held-out ``(y_true, probs)``.

    A class is predicted when its probability is at least its threshold. The threshold sits
    halfway between the best cut's lowest score and the next lower score (a margin both
    ways); a class with no positive or no negative in ``y_true`` keeps
    :data:`DEFAULT_THRESHOLD`.
    """
    y, p = _check(y_true, probs)
    out = np.full(y.shape[1], DEFAULT_THRESHOLD)
    for k in range(y.shape[1]):
        positives = int(y[:, k].sum())
        if positives == 0 or positives == len(y):
            continue
        scores, tp, fp = _curve(y[:, k], p[:, k])
        f1 = 2 * tp / (tp + fp + positives)
        best = int(np.argmax(f1))
        below = scores[best + 1] if best + 1 < len(scores) else 0.0
        out[k] = 0.5 * (scores[best] + below)
    return out


def _prf(tp, fp, fn):
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    return precision, recall, f1


def multilabel_report(y_true, probs, classes: Sequence[str], *,
                      thresholds: Sequence[float] | None = None) -> dict:
    """Every multi-label number, as a JSON-ready dict.

    ``per_class``: precision, recall, F1 (at the class's threshold), average precision,
    support and threshold; ``macro_f1`` (mean of the per-class F1), ``micro_f1`` /
    ``micro_precision`` / ``micro_recall`` (counts pooled over classes), ``mAP`` (mean
    average precision over the classes with a positive), ``subset_accuracy`` (rows whose
    whole tag set is right), ``hamming_loss`` (share of wrong (row, class) cells), ``n``.
    Precision or F1 without any prediction or positive is 0 (scikit-learn's
    ``zero_division=0``). ``thresholds`` default to 0.5 for every class.
    """
    y, p = _check(y_true, probs)
    classes = list(classes)
    if len(classes) != y.shape[1]:
        raise LearnError(f"{len(classes)} class names for {y.shape[1]} columns")
    t = (np.full(len(classes), DEFAULT_THRESHOLD) if thresholds is None
         else np.asarray(thresholds, dtype=np.float64))
    predicted = p >= t[None, :]
    tp = (predicted & y).sum(0)
    fp = (predicted & ~y).sum(0)
    fn = (~predicted & y).sum(0)
    precision, recall, f1 = _prf(tp, fp, fn)
    ap = np.array([average_precision(y[:, k], p[:, k]) for k in range(len(classes))])
    micro_p, micro_r, micro_f1 = _prf(tp.sum(), fp.sum(), fn.sum())
    per_class = [{"class": c, "precision": float(precision[k]), "recall": float(recall[k]),
                  "f1": float(f1[k]), "ap": None if np.isnan(ap[k]) else float(ap[k]),
                  "support": int(y[:, k].sum()), "threshold": float(t[k])}
                 for k, c in enumerate(classes)]
    scored = ap[~np.isnan(ap)]
    return {"task": "multilabel", "n": int(len(y)), "classes": classes,
            "per_class": per_class,
            "macro_f1": float(f1.mean()) if len(classes) else 0.0,
            "micro_f1": float(micro_f1), "micro_precision": float(micro_p),
            "micro_recall": float(micro_r),
            "mAP": float(scored.mean()) if len(scored) else None,
            "subset_accuracy": float((predicted == y).all(1).mean()) if len(y) else 0.0,
            "hamming_loss": float((predicted != y).mean()) if y.size else 0.0,
            "mean_tags": float(y.sum(1).mean()) if len(y) else 0.0,
            "mean_predicted_tags": float(predicted.sum(1).mean()) if len(y) else 0.0}


def format_multilabel(report: dict) -> str:
    """The report as a plain-text table: one row per class, then the summary."""
    lines = [f"{'class':<16} {'threshold':>9} {'precision':>9} {'recall':>7} {'f1':>6} "
             f"{'AP':>6} {'support':>7}"]
    for row in report["per_class"]:
        ap = "-" if row["ap"] is None else f"{row['ap']:.3f}"
        lines.append(f"{str(row['class'])[:16]:<16} {row['threshold']:>9.3f} "
                     f"{row['precision']:>9.3f} {row['recall']:>7.3f} {row['f1']:>6.3f} "
                     f"{ap:>6} {row['support']:>7d}")
    m_ap = "-" if report["mAP"] is None else f"{report['mAP']:.3f}"
    lines.append(f"n={report['n']}  mAP {m_ap}  macro F1 {report['macro_f1']:.3f}  micro F1 "
                 f"{report['micro_f1']:.3f}  subset accuracy {report['subset_accuracy']:.3f}  "
                 f"hamming loss {report['hamming_loss']:.4f}")
    return "\n".join(lines)
