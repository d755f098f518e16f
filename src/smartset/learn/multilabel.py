"""Multi-label training: several classes per image, a sigmoid head and per-class thresholds.

:class:`MultiLabelClassifier` is :class:`~smartset.learn.ImageClassifier`'s training loop
(any smartset CNN, a pretrained backbone, fine-tuning, the frozen-features fast path,
checkpoints, resume) with one output per class, each an independent sigmoid trained by
binary cross-entropy (``BCEWithLogitsLoss``; ``class_weight="balanced"`` weighs each class's
positives by its negatives-to-positives ratio). A share of the training rows
(``threshold_fraction``, grouped when ``groups`` are given, so copies and duplicates stay
on one side) is held out; the epoch with the lowest loss on it is kept, and on it each
class gets the threshold that maximises its F1 (:func:`choose_thresholds`). The
thresholds are saved in the checkpoint and used by :meth:`predict`.

``cross_val_predict_multilabel`` gives out-of-fold probabilities for the cleaning stage's
per-class label-issue detection (:func:`smartset.clean.find_multilabel_issues`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from smartset._random import resolve_rng
from smartset._torch import require_torch
from smartset.learn._arrays import as_image_tensor
from smartset.learn.crossval import groups_in_row_order
from smartset.learn.errors import LearnError
from smartset.learn.estimator import _ImageModel
from smartset.learn.multilabel_metrics import (
    DEFAULT_THRESHOLD,
    choose_thresholds,
    multilabel_report,
)
from smartset.tags import tag_matrix

torch = require_torch("smartset.learn")

__all__ = ["MultiLabelClassifier", "cross_val_predict_multilabel", "group_folds",
           "as_tag_matrix"]


def as_tag_matrix(y, classes: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """``(Y, classes)`` from tag sets (``[{"cat", "dog"}, {"dog"}, ...]``) or a 0/1 ``(N, K)``
    indicator matrix (classes then default to ``"0"``..``"K-1"``); ``Y`` is float32."""
    if isinstance(y, np.ndarray) and y.ndim == 2 and y.dtype != object:
        if not np.isin(y, (0, 1)).all():
            raise LearnError("a multi-label indicator matrix holds only 0 and 1")
        names = list(classes) if classes is not None else [str(k) for k in range(y.shape[1])]
        if len(names) != y.shape[1]:
            raise LearnError(f"{len(names)} class names for {y.shape[1]} indicator columns")
        return y.astype(np.float32), names
    if isinstance(y, (str, bytes)) or not isinstance(y, Iterable):
        raise LearnError("multi-label targets are a list of tag sets, e.g. [{'cat', 'dog'}, "
                         "{'dog'}], or a 0/1 indicator matrix")
    matrix, names = tag_matrix(list(y), classes)
    return matrix.astype(np.float32), names


def group_folds(n: int, folds: int, *, groups: Sequence | None = None, seed=0) -> np.ndarray:
    """A fold number per row: whole groups (lineage: an original, its copies, its
    duplicates) are assigned at random so that folds hold about the same number of rows."""
    if folds < 2:
        raise LearnError(f"folds must be at least 2, got {folds}")
    rng = resolve_rng(seed)
    keys = np.arange(n) if groups is None else np.asarray(groups)
    if len(keys) != n:
        raise LearnError(f"{len(keys)} groups for {n} rows")
    inverse, count = groups_in_row_order(keys)  # location-independent numbering
    if count < folds:
        raise LearnError(f"{folds} folds need at least {folds} groups; there are "
                         f"{count}: lower the number of folds.")
    sizes = np.bincount(inverse, minlength=count)
    load = np.zeros(folds)
    assigned = np.empty(count, dtype=np.int64)
    for g in rng.permutation(count):  # greedy: the lightest fold takes the next group
        f = int(np.argmin(load + rng.random(folds) * 1e-9))
        assigned[g] = f
        load[f] += sizes[g]
    return assigned[inverse]


class MultiLabelClassifier(_ImageModel):
    """A CNN over uint8 images with one sigmoid output per class; see the module docstring.

    ``fit(images, y, groups=None)``: ``y`` tag sets or a 0/1 matrix. ``threshold_fraction``
    (0.2): the share held out for early stopping and thresholds (``val_fraction``, when set,
    takes its place); 0 keeps every row for training and 0.5 for every class.
    Learned: ``classes_``, ``thresholds_`` ``(K,)``, ``validation_report_`` (the held-out
    share's metrics at those thresholds), and the base class's ``network_``, ``history_``.
    """

    _task = "multilabel"

    def __init__(self, model: str = "lenet", *, threshold_fraction: float = 0.2, **options):
        super().__init__(model, **options)
        self.threshold_fraction = threshold_fraction

    def get_params(self) -> dict:
        return {**super().get_params(), "threshold_fraction": self.threshold_fraction}

    # -- the hooks of the shared training loop ---------------------------------------------
    def _prepare_targets(self, y):
        matrix, self.classes_ = as_tag_matrix(y, getattr(self, "_fixed_classes", None))
        if len(self.classes_) < 1:
            raise LearnError("no tags to learn: give each image at least one class")
        return matrix

    def _encode(self, y):
        return as_tag_matrix(y, self.classes_)[0]

    def _n_outputs(self) -> int:
        return len(self.classes_)

    def _split_validation(self, targets, rng) -> np.ndarray:
        take = max(1, int(round(len(targets) * self.val_fraction)))
        return np.sort(rng.choice(len(targets), take, replace=False))

    def _loss(self, targets, device):
        weight = None
        if self.class_weight == "balanced":
            positives = np.asarray(targets).sum(0)
            negatives = len(targets) - positives
            weight = torch.from_numpy((negatives / np.maximum(positives, 1)).astype(np.float32)
                                      ).to(device)
        elif self.class_weight is not None:
            raise LearnError(f"class_weight must be None or 'balanced', got "
                             f"{self.class_weight!r}")
        return torch.nn.BCEWithLogitsLoss(pos_weight=weight)

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, images, y, *, validation: tuple | None = None, groups: Sequence | None = None):
        """Train on ``images`` and tag sets ``y``; hold out a share (by ``groups``) for the
        best epoch and the per-class thresholds, unless ``validation=(images, y)`` is given."""
        if not 0.0 <= self.threshold_fraction < 0.9:
            raise LearnError(f"threshold_fraction must be in [0, 0.9), got "
                             f"{self.threshold_fraction}")
        x = as_image_tensor(images)
        matrix, classes = as_tag_matrix(y, getattr(self, "_fixed_classes", None))
        if len(matrix) != len(x):
            raise LearnError(f"{len(x)} images but {len(matrix)} tag sets")
        self._fixed_classes = classes
        fraction = self.val_fraction or self.threshold_fraction
        if validation is None and fraction > 0:
            folds = max(2, int(round(1 / fraction)))
            fold = group_folds(len(x), folds, groups=groups, seed=self.seed)
            held = fold == 0
            validation = (x[torch.from_numpy(held)], matrix[held])
            x, matrix = x[torch.from_numpy(~held)], matrix[~held]
        saved, self.val_fraction = self.val_fraction, 0.0
        try:
            super().fit(x, matrix, validation=validation)
        finally:
            self.val_fraction = saved
        if validation is not None:
            val_y = self._encode(validation[1])
            probs = self.predict_proba(validation[0])
            self.thresholds_ = choose_thresholds(val_y, probs)
            self.validation_report_ = multilabel_report(val_y, probs, self.classes_,
                                                        thresholds=self.thresholds_)
        else:
            self.thresholds_ = np.full(len(self.classes_), DEFAULT_THRESHOLD)
            self.validation_report_ = None
        if self.checkpoint is not None:  # again, now with the thresholds
            self.save(self.checkpoint)
        return self

    # -- using the model ---------------------------------------------------------------------
    def predict_proba(self, images) -> np.ndarray:
        """Independent per-class probabilities ``(N, K)`` float32, columns in ``classes_``."""
        return torch.sigmoid(self._outputs(images)).numpy().astype(np.float32)

    def decision(self, images, probs: np.ndarray | None = None) -> np.ndarray:
        """``(N, K)`` bool: each class's probability at or above its threshold."""
        probs = self.predict_proba(images) if probs is None else probs
        return probs >= np.asarray(self.thresholds_, dtype=np.float32)[None, :]

    def predict(self, images) -> list[tuple[str, ...]]:
        """The predicted tag set of each image (sorted class names; may be empty)."""
        chosen = self.decision(images)
        return [tuple(c for c, on in zip(self.classes_, row) if on) for row in chosen]

    def score(self, images, y) -> float:
        """Mean average precision over classes (threshold-free) on ``(images, y)``."""
        return multilabel_report(self._encode(y), self.predict_proba(images),
                                 self.classes_)["mAP"]

    def report(self, images, y) -> dict:
        """:func:`multilabel_report` of ``(images, y)`` at the model's thresholds."""
        return multilabel_report(self._encode(y), self.predict_proba(images), self.classes_,
                                 thresholds=self.thresholds_)

    def transform(self, images) -> np.ndarray:
        return self._forward_features(images).numpy().astype(np.float32)

    # -- checkpoints ------------------------------------------------------------------------
    def _meta(self) -> dict:
        meta = super()._meta()
        meta["n_targets"] = len(getattr(self, "classes_", []))
        thresholds = getattr(self, "thresholds_", None)
        meta["thresholds"] = None if thresholds is None else [float(t) for t in thresholds]
        return meta

    def _restore(self, state: dict, network=None) -> None:
        super()._restore(state, network)
        self.classes_ = list(state["classes"])
        thresholds = state.get("thresholds")
        self.thresholds_ = (np.full(len(self.classes_), DEFAULT_THRESHOLD) if thresholds is None
                            else np.asarray(thresholds, dtype=np.float64))


def cross_val_predict_multilabel(images, y, *, model: str = "small_cnn", folds: int = 5,
                                 groups: Sequence | None = None, seed: int = 0,
                                 classes: Sequence[str] | None = None, **options
                                 ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Out-of-fold per-class probabilities ``(N, K)``: each row predicted by a model trained
    without its fold (whole ``groups`` per fold). Returns ``(probs, classes, fold)``;
    ``options`` go to :class:`MultiLabelClassifier` (``epochs``, ``batch_size``, ...)."""
    x = as_image_tensor(images)
    matrix, names = as_tag_matrix(y, classes)
    fold = group_folds(len(x), folds, groups=groups, seed=seed)
    probs = np.zeros(matrix.shape, dtype=np.float32)
    for k in range(folds):
        held = fold == k
        estimator = MultiLabelClassifier(model, seed=seed + k, **options)
        estimator._fixed_classes = names
        estimator.fit(x[torch.from_numpy(~held)], matrix[~held],
                      groups=None if groups is None else np.asarray(groups)[~held])
        probs[held] = estimator.predict_proba(x[torch.from_numpy(held)])
    return probs, names, fold
