"""A linear head on frozen backbone embeddings: cross-validated out-of-fold probabilities in
seconds, and a fitted head that predicts new images.

The features are :mod:`smartset.embeddings` vectors (L2-normalised rows). The head is a
multinomial logistic regression (scikit-learn, lbfgs) on the raw unit-norm vectors with
``C=1``: measured on the 741 pistol/smartphone photos with EfficientNet-Lite0 embeddings and
5 duplicate-aware folds, every setting tried separates the clean labels (out-of-fold accuracy
1.000), but with 15% of the labels flipped the raw ``C=1`` head still gets 0.992 of the true
labels and ranks the flipped ones at AUROC 0.9996, where a standardised head (``C=0.01``
to ``1``) gets 0.94-0.87 and 0.98-0.92, and a weaker regularisation (``C=100``) 0.915 and
0.944: a head that fits the wrong labels hides them from cleaning. Choosing ``C`` by an inner
cross-validation chose ``C=1`` too, at 5-10x the time.

Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smartset.learn.errors import LearnError

__all__ = ["LinearHead", "cross_val_head", "HEAD_C"]

HEAD_C = 1.0  # inverse regularisation of the head (see the module docstring)


@dataclass
class LinearHead:
    """A logistic-regression head over embeddings.

    ``classes``: class names in the order of the probability columns; ``C``: inverse
    regularisation (default 1.0); ``standardize``: centre and scale each feature on the
    training rows first (default False: measured worse on unit-norm embeddings);
    ``backbone``/``preprocessing``: where the features come from (recorded, and checked
    when the head is applied).
    """

    classes: list
    C: float = HEAD_C
    standardize: bool = False
    backbone: str | None = None
    preprocessing: dict = field(default_factory=dict)
    seed: int = 0
    coef_: np.ndarray | None = None       # (k, d), or (1, d) for two classes
    intercept_: np.ndarray | None = None  # (k,) or (1,)
    mean_: np.ndarray | None = None       # (d,) when standardised
    scale_: np.ndarray | None = None

    def fit(self, features, codes) -> LinearHead:
        """``features`` float ``(N, d)``; ``codes`` int ``(N,)`` indices into ``classes``
        (every class must occur)."""
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(features, dtype=np.float64)
        codes = np.asarray(codes, dtype=np.int64)
        present = np.unique(codes)
        if len(present) != len(self.classes):
            missing = [self.classes[i] for i in range(len(self.classes)) if i not in set(present)]
            raise LearnError(f"The head's training rows lack class(es) {missing[:5]}: every "
                             f"class needs samples in every training fold (lower --folds).")
        if self.standardize:
            self.mean_ = x.mean(0)
            self.scale_ = np.where(x.std(0) > 1e-12, x.std(0), 1.0)
            x = (x - self.mean_) / self.scale_
        model = LogisticRegression(C=self.C, max_iter=2000, random_state=self.seed)
        with _one_blas_thread():
            model.fit(x, codes)
        self.coef_ = model.coef_.astype(np.float64)
        self.intercept_ = model.intercept_.astype(np.float64)
        return self

    def predict_proba(self, features) -> np.ndarray:
        """float32 ``(N, k)`` in the order of ``classes``; rows sum to 1."""
        if self.coef_ is None:
            raise LearnError("The head is not fitted: call fit() or LinearHead.load() first.")
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.coef_.shape[1]:
            raise LearnError(f"The head takes {self.coef_.shape[1]}-d features of "
                             f"{self.backbone}, got shape {x.shape}.")
        if self.standardize:
            x = (x - self.mean_) / self.scale_
        logits = x @ self.coef_.T + self.intercept_
        if logits.shape[1] == 1:  # binary: sklearn's single column is the second class
            logits = np.concatenate([np.zeros_like(logits), logits], axis=1)
        logits -= logits.max(1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(1, keepdims=True)
        return probs.astype(np.float32)

    def predict(self, features) -> np.ndarray:
        return np.asarray(self.classes, dtype=object)[self.predict_proba(features).argmax(1)]

    def save(self, path: str | Path) -> Path:
        """Write the head as a ``.npz`` (no pickle), atomically."""
        import json
        import os

        path = Path(path)
        meta = {"classes": [str(c) for c in self.classes], "C": self.C,
                "standardize": self.standardize, "backbone": self.backbone,
                "preprocessing": self.preprocessing, "seed": self.seed}
        arrays = {"coef": self.coef_, "intercept": self.intercept_,
                  "meta": np.asarray(json.dumps(meta))}
        if self.standardize:
            arrays |= {"mean": self.mean_, "scale": self.scale_}
        temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(temporary, **arrays)
        os.replace(temporary, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LinearHead:
        import json

        try:
            with np.load(path, allow_pickle=False) as stored:
                meta = json.loads(str(stored["meta"]))
                head = cls(classes=meta["classes"], C=meta["C"],
                           standardize=meta["standardize"], backbone=meta["backbone"],
                           preprocessing=meta.get("preprocessing") or {},
                           seed=meta.get("seed", 0))
                head.coef_, head.intercept_ = stored["coef"], stored["intercept"]
                if head.standardize:
                    head.mean_, head.scale_ = stored["mean"], stored["scale"]
        except (OSError, KeyError, ValueError) as error:
            raise LearnError(f"{path} is not a readable linear head ({error}); run "
                             f"'smartset predict --oof' again to write it.") from None
        return head


def _one_blas_thread():
    """BLAS on one thread: the head's matrices are small (N x d), and on a busy 2-core
    machine two BLAS threads made a 5-fold fit of 741 x 1280 take 3-7 s instead of 0.2 s."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def cross_val_head(features, codes, fold, *, classes, C: float = HEAD_C,
                   standardize: bool = False, seed: int = 0) -> np.ndarray:
    """Out-of-fold probabilities of a :class:`LinearHead`.

    ``features`` float ``(N, d)``; ``codes`` int ``(N,)`` indices into ``classes``;
    ``fold`` int ``(N,)``: each row is predicted by the head fitted on the other folds.
    Returns float32 ``(N, len(classes))``, rows summing to 1.
    """
    features = np.asarray(features)
    codes = np.asarray(codes)
    fold = np.asarray(fold)
    if len(features) != len(codes) or len(codes) != len(fold):
        raise LearnError(f"features, codes and fold differ in length "
                         f"({len(features)}, {len(codes)}, {len(fold)}).")
    probs = np.zeros((len(codes), len(classes)), dtype=np.float32)
    for k in np.unique(fold):
        held = fold == k
        head = LinearHead(list(classes), C=C, standardize=standardize, seed=seed)
        probs[held] = head.fit(features[~held], codes[~held]).predict_proba(features[held])
    return probs
