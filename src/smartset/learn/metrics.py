"""Metrics, confusion matrices and pictures of errors, over plain arrays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from smartset.learn.errors import LearnError

__all__ = ["classification_report", "regression_report", "plot_confusion",
           "misclassified_montage", "top_losses"]


def classification_report(y_true: Sequence, probs: np.ndarray, classes: Sequence) -> dict:
    """Accuracy, per-class precision/recall/F1, macro and weighted averages, the confusion
    matrix (rows: true, columns: predicted), the most confused pairs, and log loss.

    ``y_true`` holds class names (or indices into ``classes``); ``probs`` is ``(N, k)``.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    classes = list(classes)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise LearnError(f"probs must be (N, {len(classes)}), got {probs.shape}")
    index = {c: i for i, c in enumerate(classes)}
    try:
        truth = np.array([index[c] for c in np.asarray(y_true, dtype=object).tolist()])
    except KeyError as error:
        raise LearnError(f"label {error.args[0]!r} is not among the model's classes "
                         f"{classes[:10]}") from None
    predicted = probs.argmax(1)
    labels = np.arange(len(classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0)
    matrix = confusion_matrix(truth, predicted, labels=labels)
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    pairs = [(int(i), int(j)) for i, j in zip(*np.unravel_index(np.argsort(-off, axis=None),
                                                                 off.shape)) if off[i, j] > 0]
    true_p = np.clip(probs[np.arange(len(truth)), truth], 1e-12, 1.0)
    weights = support / max(support.sum(), 1)
    return {
        "n": int(len(truth)),
        "accuracy": float((predicted == truth).mean()) if len(truth) else float("nan"),
        "log_loss": float(-np.log(true_p).mean()) if len(truth) else float("nan"),
        "per_class": [{"class": classes[i], "precision": float(precision[i]),
                       "recall": float(recall[i]), "f1": float(f1[i]),
                       "support": int(support[i])} for i in labels],
        "macro": {"precision": float(precision.mean()), "recall": float(recall.mean()),
                  "f1": float(f1.mean())},
        "weighted": {"precision": float((precision * weights).sum()),
                     "recall": float((recall * weights).sum()),
                     "f1": float((f1 * weights).sum())},
        "classes": classes,
        "confusion": matrix.tolist(),
        "most_confused": [{"true": classes[i], "predicted": classes[j], "count": int(off[i, j])}
                          for i, j in pairs[:10]],
    }


def regression_report(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    truth = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    pred = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    if truth.shape != pred.shape:
        raise LearnError(f"targets {truth.shape} and predictions {pred.shape} differ in shape")
    error = pred - truth
    variance = ((truth - truth.mean(0)) ** 2).sum()
    return {"n": int(len(truth)), "mae": float(np.abs(error).mean()),
            "rmse": float(np.sqrt((error ** 2).mean())),
            "r2": float(1 - (error ** 2).sum() / variance) if variance > 0 else float("nan")}


def top_losses(y_true: Sequence, probs: np.ndarray, classes: Sequence, k: int = 20) -> list[dict]:
    """The ``k`` samples the model got most wrong: highest ``-log p(true class)``."""
    index = {c: i for i, c in enumerate(classes)}
    truth = np.array([index[c] for c in np.asarray(y_true, dtype=object).tolist()])
    p = np.clip(np.asarray(probs)[np.arange(len(truth)), truth], 1e-12, 1.0)
    order = np.argsort(np.log(p))[:k]
    return [{"row": int(i), "true": classes[truth[i]], "predicted": classes[int(np.argmax(probs[i]))],
             "loss": float(-np.log(p[i])), "p_true": float(p[i])} for i in order]


def plot_confusion(matrix, classes: Sequence, path: str | Path, *, title: str = "") -> Path:
    """A heatmap of the confusion matrix (counts, with row-normalised colour) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    rows = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * n + 2), max(3.5, 0.6 * n + 1.5)))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), [str(c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(range(n), [str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if rows[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def misclassified_montage(images: np.ndarray, y_true: Sequence, y_pred: Sequence,
                          path: str | Path, *, limit: int = 28, columns: int = 7) -> Path | None:
    """The misclassified images captioned "(true) predicted", as in the lecture's figure of
    28 misclassified digits. Returns None when nothing is misclassified."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = np.asarray(y_true, dtype=object)
    pred = np.asarray(y_pred, dtype=object)
    wrong = np.flatnonzero(truth != pred)[:limit]
    if not len(wrong):
        return None
    rows = (len(wrong) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.3, rows * 1.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), wrong):
        image = images[i]
        gray = image.ndim == 2 or image.shape[-1] == 1
        ax.imshow(image.squeeze(), cmap="gray" if gray else None)
        ax.set_title(f"({truth[i]}) {pred[i]}", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
