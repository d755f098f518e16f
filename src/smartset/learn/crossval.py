"""Out-of-fold predictions and ensembles over image arrays."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from smartset._progress import next_phase
from smartset.engine import get_engine
from smartset.learn._arrays import encode_labels
from smartset.learn.errors import LearnError
from smartset.learn.estimator import ImageClassifier
from smartset.learn.inference import predict_on_engine

__all__ = ["cross_val_predict", "fold_ids", "groups_in_row_order", "ensemble_proba",
           "EnsembleClassifier"]


def groups_in_row_order(keys) -> tuple[np.ndarray, int]:
    """``(index, count)``: a group number per row, groups numbered by their first row.

    Not by the keys' sorted values: a sample id hashes its root's path, which is absolute
    for data outside the workspace, so numbering groups by sorted ids would make a seeded
    split or fold assignment depend on where the data lies. Rows come in catalog order
    (root, relative path), the same wherever the workspace and the data are."""
    keys = np.asarray(keys)
    if not len(keys):
        return np.zeros(0, dtype=np.int64), 0
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[np.ravel(inverse)], len(first)


def fold_ids(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """A stratified fold number per sample (classes spread evenly over the folds)."""
    codes = np.asarray(labels)
    if folds < 2:
        raise LearnError(f"folds must be at least 2, got {folds}")
    counts = np.bincount(codes)
    if counts[counts > 0].min() < folds:
        small = [int(c) for c in np.flatnonzero((counts > 0) & (counts < folds))]
        raise LearnError(f"{folds} folds need at least {folds} samples per class; class "
                         f"index(es) {small[:5]} have fewer: lower --folds or add samples.")
    rng = np.random.default_rng(seed)
    out = np.empty(len(codes), dtype=np.int64)
    for c in np.unique(codes):
        rows = rng.permutation(np.flatnonzero(codes == c))
        out[rows] = (np.arange(len(rows)) + rng.integers(folds)) % folds
    return out


def cross_val_predict(images, labels, *, model: str = "small_cnn", folds: int = 5,
                      epochs: int = 8, seed: int = 0, classes: Sequence | None = None,
                      return_features: bool = False, fold: np.ndarray | None = None,
                      engine=None, checkpoint_dir: str | Path | None = None, **options):
    """Out-of-fold class probabilities: each sample predicted by a model that did not see it.

    Parameters
    ----------
    images : uint8 ``(N, H, W)`` or ``(N, H, W, C)``.
    labels : ``(N,)`` class names or indices.
    model, epochs, options : passed to :class:`ImageClassifier` (e.g. ``augment``,
        ``batch_size``, ``lr``).
    folds : number of stratified folds (default 5); ``fold`` gives them explicitly.
    seed : seeds the folds and every fold's training.
    return_features : also return each sample's backbone features ``(N, d)`` from the fold
        model that did not see it: an embedding for kNN-based cleaning.
    engine : where the held-out samples are predicted (training is always here). None:
        in this process, by the fold model in memory. An engine name (``serial``,
        ``local``, ``ray``) or instance: each fold model is saved to
        ``checkpoint_dir/fold-K.pt`` (default: a temporary folder) and applied by
        :func:`smartset.learn.inference.predict_batch` on the engine's workers (on CPU;
        on a cluster, ``checkpoint_dir`` must be on a file system every node sees).
        Every engine gives the same probabilities to float rounding.

    Returns
    -------
    probs : float32 ``(N, n_classes)`` in the order of ``classes`` (default: sorted labels),
        and ``features`` when asked.
    """
    codes, classes = encode_labels(labels, classes)
    fold = fold_ids(codes, folds, seed) if fold is None else np.asarray(fold)
    images = np.asarray(images)
    probs = np.zeros((len(codes), len(classes)), dtype=np.float32)
    features = None
    runner = None if engine is None else get_engine(engine)
    with tempfile.TemporaryDirectory(prefix="smartset-folds-") as scratch:
        for position, k in enumerate(numbers := np.unique(fold), start=1):
            next_phase(f"fold {position}/{len(numbers)}", 1.0)  # one bar for all the folds
            held = fold == k
            estimator = ImageClassifier(model, epochs=epochs, seed=seed + int(k), **options)
            estimator._fixed_classes = list(range(len(classes)))
            estimator.fit(images[~held], codes[~held])
            if runner is None:
                probs[held] = estimator.predict_proba(images[held])
                block = estimator.transform(images[held]) if return_features else None
            else:
                checkpoint = estimator.save(Path(checkpoint_dir or scratch) / f"fold-{int(k)}.pt")
                # Worker processes cannot share this process's CUDA context: they use the CPU.
                device = str(estimator._device_of()) if runner.name == "serial" else "cpu"
                predicted = predict_on_engine(checkpoint, images[held], engine=runner,
                                              features=return_features, device=device)
                probs[held] = predicted["probs"]
                block = predicted.get("features")
            if block is not None:
                if features is None:
                    features = np.zeros((len(codes), block.shape[1]), dtype=np.float32)
                features[held] = block
    return (probs, features) if return_features else probs


def ensemble_proba(models: Sequence, images) -> np.ndarray:
    """The mean of the members' class probabilities (members must share their classes)."""
    if not models:
        raise LearnError("an ensemble needs at least one model")
    classes = list(models[0].classes_)
    for member in models[1:]:
        if list(member.classes_) != classes:
            raise LearnError("ensemble members were trained on different classes")
    return np.mean([m.predict_proba(images) for m in models], axis=0).astype(np.float32)


class EnsembleClassifier:
    """Fitted classifiers as one: the mean of their probabilities. Evaluated like any model
    (``predict_proba``, ``predict``, ``score``); members must share their classes. Members
    trained at different image sizes or modes each see the images resized (area
    interpolation) and converted to their own: ``input_shape_`` is the largest member's, so
    the data is loaded once at that size and only ever shrunk."""

    def __init__(self, members: Sequence):
        if not members:
            raise LearnError("an ensemble needs at least one model")
        first = members[0]
        for member in members[1:]:
            if list(member.classes_) != list(first.classes_):
                raise LearnError("ensemble members were trained on different classes")
        self.members = list(members)
        self.classes_ = list(first.classes_)
        shapes = [tuple(m.input_shape_) for m in members]
        channels = max(c for c, _, _ in shapes)
        _, height, width = max(shapes, key=lambda s: s[1] * s[2])
        self.input_shape_ = (channels, height, width)
        self.model_name_ = "ensemble(" + ", ".join(m.model_name_ for m in members) + ")"

    def predict_proba(self, images) -> np.ndarray:
        images = np.asarray(images)
        return np.mean([m.predict_proba(_fit_to(images, tuple(m.input_shape_)))
                        for m in self.members], axis=0).astype(np.float32)

    def predict(self, images) -> np.ndarray:
        return np.asarray(self.classes_, dtype=object)[self.predict_proba(images).argmax(1)]

    def score(self, images, labels) -> float:
        return float(np.mean(self.predict(images) == np.asarray(labels, dtype=object)))


def _fit_to(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 ``(N, H, W[, C])`` resized and converted to a member's ``(C, H, W)``."""
    import cv2

    channels, height, width = shape
    x = images[..., None] if images.ndim == 3 else images
    if x.shape[1:3] != (height, width):
        shrink = x.shape[1] >= height and x.shape[2] >= width
        method = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        x = np.stack([cv2.resize(np.ascontiguousarray(im), (width, height),
                                 interpolation=method).reshape(height, width, -1) for im in x])
    if x.shape[-1] != channels:
        if channels == 1:
            x = np.stack([cv2.cvtColor(np.ascontiguousarray(im[..., :3]), cv2.COLOR_RGB2GRAY)
                          for im in x])[..., None]
        else:
            x = np.repeat(x[..., :1], channels, axis=-1)
    return x
