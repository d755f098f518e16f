"""The consensus's ranking under class-conditional noise: by the probability that the label
is wrong *given that it was the label given* (the estimated noise matrix), on real digits."""

from __future__ import annotations

import numpy as np
import pytest

from smartset import clean
from smartset.clean.consensus import _given_label_score

PAIRS = np.array([6, 7, 7, 8, 9, 6, 5, 1, 3, 4])  # each digit's look-alike


def test_given_label_score_by_hand():
    # two true classes can be labeled 1: class 0 (30% of the time) and 1 itself
    transition = np.array([[0.7, 0.3, 0.0],
                           [0.0, 1.0, 0.0],
                           [0.0, 0.0, 1.0]])
    posterior = np.array([[0.5, 0.0, 0.5],    # labeled 1, looks like 0 or 2
                          [0.0, 0.5, 0.5],    # labeled 1, looks like 1 or 2
                          [0.5, 0.5, 0.0]])   # labeled 1, looks like 0 or 1
    score, suggested = _given_label_score(np.array([1, 1, 1]), posterior, transition)
    # row 0: Q0 T01 = 0.15, Q1 T11 = 0, Q2 T21 = 0 -> certainly wrong, truly a 0
    # row 1: only class 1 is ever labeled 1 -> right
    # row 2: 0.15 vs 0.5 -> wrong with 0.15 / 0.65
    assert np.allclose(score, [1.0, 0.0, 0.15 / 0.65])
    assert suggested[0] == 0 and suggested[2] == 0


def _digits(shared_data, n=3000):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    with np.load(shared_data / "mnist10k.npz") as archive:
        images, labels = archive["images"], archive["labels"].astype(np.int64)
    rows = np.random.default_rng(0).permutation(len(labels))[:n]
    flat = images[rows].reshape(n, -1) / 255.0
    features = PCA(40, random_state=0).fit_transform(flat).astype(np.float32)

    def oof(noisy):
        folds = StratifiedKFold(5, shuffle=True, random_state=0)
        return cross_val_predict(LogisticRegression(max_iter=200), features, noisy, cv=folds,
                                 method="predict_proba")
    return labels[rows], features, oof


def _f1(mask, truth):
    tp = (mask & truth).sum()
    return 2 * tp / max(mask.sum() + truth.sum(), 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_class_conditional_noise_is_ranked_by_the_noise_model(shared_data, seed):
    true, features, oof = _digits(shared_data)
    rng = np.random.default_rng(seed)
    flip = rng.random(len(true)) < 0.2
    noisy = np.where(flip, PAIRS[true], true)
    probs = oof(noisy)
    auto = clean.consensus(noisy, probs, features=features)
    plain = clean.consensus(noisy, probs, features=features, rank="posterior")
    assert auto.params["rank_used"] == "noise_model"
    assert plain.params["rank_used"] == "posterior"
    f1_auto, f1_plain = _f1(auto.is_issue, flip), _f1(plain.is_issue, flip)
    assert f1_auto > f1_plain + 0.02, (f1_auto, f1_plain)
    # the suggestion of a caught wrong label is its true class, nearly always
    caught = auto.is_issue & flip
    assert np.mean(auto.suggested[caught] == true[caught]) > 0.95


def test_uniform_noise_keeps_the_posterior_ranking(shared_data):
    true, features, oof = _digits(shared_data)
    rng = np.random.default_rng(5)
    flip = rng.random(len(true)) < 0.1
    noisy = np.where(flip, (true + rng.integers(1, 10, len(true))) % 10, true)
    found = clean.consensus(noisy, oof(noisy), features=features)
    assert found.params["rank_used"] == "posterior"
    with pytest.raises(clean.CleanInputError, match="rank must be one of"):
        clean.consensus(noisy, oof(noisy), rank="best")
