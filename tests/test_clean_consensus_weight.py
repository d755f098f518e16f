"""The consensus weighs the model and the neighbourhood by how well each predicts the given
labels (``model_weight="auto"``), and its F1 on a small generated noisy set clears a floor
and beats every confident-learning filter on the same probabilities."""

import numpy as np
import pytest

from smartset import clean
from smartset.clean import CleanInputError
from smartset.clean.confident import FILTERS
from smartset.clean.consensus import fit_model_weight


def _noisy_set(seed=0, n_per=250, k=5, dim=10, noise=0.15, model_blur=0.5):
    """Blobs with ``noise`` of labels flipped uniformly; features that separate the classes;
    out-of-fold-like model probabilities that are blurred toward random guesses (a weak
    model), so the two views differ in strength."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (k, dim))  # overlapping classes: neither view is perfect
    true = np.repeat(np.arange(k), n_per)
    x = centres[true] + rng.normal(0, 1.0, (len(true), dim))
    flip = rng.random(len(true)) < noise
    noisy = true.copy()
    noisy[flip] = (true[flip] + rng.integers(1, k, flip.sum())) % k
    means = np.stack([x[noisy == c].mean(axis=0) for c in range(k)])
    logits = -0.25 * ((x[:, None, :] - means[None]) ** 2).sum(axis=2)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    guesses = rng.dirichlet(np.full(k, 0.5), len(true))
    probs = (1 - model_blur) * probs + model_blur * guesses
    return x.astype(np.float32), noisy, flip, probs


def _f1(mask, truth):
    return 2 * (mask & truth).sum() / max(mask.sum() + truth.sum(), 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_consensus_f1_clears_a_floor_and_beats_every_confident_learning_filter(seed):
    x, noisy, flip, probs = _noisy_set(seed=seed)
    found = clean.consensus(noisy, probs, features=x)
    ours = _f1(found.is_issue, flip)
    theirs = max(_f1(clean.confident_learning(noisy, probs, filter_by=f), flip)
                 for f in FILTERS)
    assert ours >= 0.8, ours            # measured 0.84 and 0.83
    assert ours > theirs + 0.08, (ours, theirs)   # their best 0.71 and 0.69
    # the fitted weight leans on the stronger view (the features here), and beats the
    # old fixed 0.6
    assert found.params["model_weight_used"] < 0.6
    fixed = _f1(clean.consensus(noisy, probs, features=x, model_weight=0.6).is_issue, flip)
    assert ours > fixed + 0.01, (ours, fixed)     # fixed: 0.81 and 0.79


def test_fitted_weight_follows_the_informative_view():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 600)
    sharp = np.full((600, 4), 0.02)
    sharp[np.arange(600), labels] = 0.94
    flat = rng.dirichlet(np.ones(4), 600)
    assert fit_model_weight(labels, sharp, flat) >= 0.8
    assert fit_model_weight(labels, flat, sharp) <= 0.2


def test_model_weight_is_checked_and_recorded():
    x, noisy, flip, probs = _noisy_set(n_per=60)
    with pytest.raises(CleanInputError, match="model_weight"):
        clean.consensus(noisy, probs, features=x, model_weight="heavy")
    with pytest.raises(CleanInputError, match="model_weight"):
        clean.consensus(noisy, probs, features=x, model_weight=1.5)
    fixed = clean.consensus(noisy, probs, features=x, model_weight=0.25)
    assert fixed.params["model_weight_used"] == 0.25
    alone = clean.consensus(noisy, probs)  # no features: the model alone
    assert alone.params["model_weight_used"] == 1.0
