"""Honest baselines: what a model must beat before its number means anything.

Dummy classifiers (most frequent, stratified, uniform) and mean/median regressors; kNN on
pixels (resized to at most ``pixel_side``) and on embeddings; a linear probe (logistic
regression) on embeddings: the pixel embedding by default, backbone embeddings when given
(the workspace's :func:`smartset.learn.baselines` gives them on photos). All report the same
metrics as the trained models. A private module: ``smartset.learn.baselines`` is the
workspace function, and a submodule of that name would replace it once imported.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from smartset.learn.errors import LearnError

__all__ = ["classification_baselines", "regression_baselines", "pixel_vectors",
           "pixel_embeddings", "BASELINES"]

BASELINES = ("most_frequent", "stratified", "uniform", "knn_pixels", "knn_embeddings",
             "linear_probe")


def _with_channels(images) -> np.ndarray:
    images = np.asarray(images)
    return images[..., None] if images.ndim == 3 else images


def pixel_vectors(images: np.ndarray, side: int = 28) -> np.ndarray:
    """Images resized (area) so the longer side is at most ``side``, gray, flattened, [0, 1]."""
    out = []
    for image in _with_channels(images):
        gray = image[..., 0] if image.shape[-1] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        h, w = gray.shape
        scale = min(1.0, side / max(h, w))
        if scale < 1.0:
            gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                              interpolation=cv2.INTER_AREA)
        out.append(gray.reshape(-1))
    return np.stack(out).astype(np.float32) / 255.0


def pixel_embeddings(images: np.ndarray) -> np.ndarray:
    """The pixel embedding (gray 8x8 layout + 4x4 colour, unit norm; the audit's) per image:
    float32 ``(N, 112)``."""
    from smartset._pixels import pixel_embedding

    out = []
    for image in _with_channels(images):
        rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        out.append(pixel_embedding(gray, rgb))
    return np.stack(out).astype(np.float32)


def _timed(name, fit_predict) -> dict:
    started = time.perf_counter()
    predicted, probs = fit_predict()
    return {"name": name, "predicted": predicted, "probs": probs,
            "seconds": time.perf_counter() - started}


def classification_baselines(train_images, train_labels, test_images, *, k: int = 3,
                             pixel_side: int = 28, train_features=None, test_features=None,
                             which=BASELINES, seed: int = 0,
                             standardize_probe: bool = True) -> list[dict]:
    """Fit each baseline on the training set and predict the test set.

    Returns one dict per baseline: ``name``, ``predicted`` (labels), ``probs`` and
    ``classes``, ``seconds``. ``train_features``/``test_features`` (float ``(n, d)``)
    replace the pixel embeddings of ``knn_embeddings`` and ``linear_probe`` (e.g. backbone
    embeddings, or a trained network's features). ``standardize_probe`` (default True):
    the linear probe standardises the features first; False fits
    :class:`smartset.learn.heads.LinearHead`'s logistic regression (``C=1``) on them as
    they are, measured better on L2-normalised backbone embeddings.
    """
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    unknown = sorted(set(which) - set(BASELINES))
    if unknown:
        raise LearnError(f"Unknown baseline(s) {unknown}; baselines: {', '.join(BASELINES)}.")
    labels = np.asarray(train_labels, dtype=object)
    if len(set(labels.tolist())) < 2:
        raise LearnError("baselines need at least two classes in the training set")
    if k > len(labels):
        raise LearnError(f"k={k} is more than the {len(labels)} training samples")
    classes = sorted(set(labels.tolist()), key=str)
    results = []

    def sklearn_run(estimator, train_x, test_x):
        def run():
            estimator.fit(train_x, labels.astype(str))
            probs = estimator.predict_proba(test_x)
            order = [list(estimator.classes_).index(str(c)) for c in classes]
            probs = probs[:, order]
            return np.asarray(classes, dtype=object)[probs.argmax(1)], probs
        return run

    n_test = len(test_images)
    dummy_x = np.zeros((len(labels), 1))
    for strategy in ("most_frequent", "stratified", "uniform"):
        if strategy in which:
            results.append(_timed(strategy, sklearn_run(
                DummyClassifier(strategy=strategy, random_state=seed), dummy_x,
                np.zeros((n_test, 1)))))
    if "knn_pixels" in which:
        results.append(_timed(f"knn_pixels (k={k})", sklearn_run(
            KNeighborsClassifier(k), pixel_vectors(train_images, pixel_side),
            pixel_vectors(test_images, pixel_side))))
    if {"knn_embeddings", "linear_probe"} & set(which):
        if train_features is None:
            train_features, test_features = (pixel_embeddings(train_images),
                                             pixel_embeddings(test_images))
        if "knn_embeddings" in which:
            results.append(_timed(f"knn_embeddings (k={k})", sklearn_run(
                KNeighborsClassifier(k, metric="cosine"), train_features, test_features)))
        if "linear_probe" in which:
            if standardize_probe:
                probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            else:
                from smartset.learn.heads import HEAD_C

                probe = LogisticRegression(C=HEAD_C, max_iter=2000, random_state=seed)
            results.append(_timed("linear_probe", sklearn_run(probe, train_features,
                                                              test_features)))
    for result in results:
        result["classes"] = classes
    return results


def regression_baselines(train_targets, n_test: int) -> list[dict]:
    """Mean and median regressors: predict the training set's mean (median) for everything."""
    targets = np.asarray(train_targets, dtype=np.float64).reshape(len(train_targets), -1)
    return [{"name": name, "predicted": np.repeat(stat(targets, axis=0)[None], n_test, 0),
             "seconds": 0.0} for name, stat in (("mean", np.mean), ("median", np.median))]
