"""Cleaning detectors on synthetic Gaussian blobs with known flipped labels, and bad input."""

import numpy as np
import pytest

from smartset import clean
from smartset.clean import CleanInputError, CleanWarning, InSampleWarning


def _blobs(n_per=150, k=4, dim=8, spread=1.0, noise=0.1, seed=0):
    """Features, true labels, noisy labels, flip mask, and out-of-fold-like probabilities
    (a softmax over distances to class means estimated without the sample)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4.0, (k, dim))
    true = np.repeat(np.arange(k), n_per)
    x = centres[true] + rng.normal(0, spread, (len(true), dim))
    flip = rng.random(len(true)) < noise
    noisy = true.copy()
    noisy[flip] = (true[flip] + rng.integers(1, k, flip.sum())) % k
    means = np.stack([x[noisy == c].mean(axis=0) for c in range(k)])
    logits = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(axis=2) / 2.0
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return x.astype(np.float32), true, noisy, flip, probs


def _prf(mask, truth):
    tp = (mask & truth).sum()
    return tp / max(mask.sum(), 1), tp / max(truth.sum(), 1)


def test_consensus_finds_flipped_labels_with_suggestions_and_evidence():
    x, true, noisy, flip, probs = _blobs()
    found = clean.consensus(noisy, probs, features=x)
    precision, recall = _prf(found.is_issue, flip)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    flagged = found.ranked()
    assert np.all(np.diff(found.score[flagged]) <= 0)  # most suspicious first
    assert (found.suggested[flip & found.is_issue] == true[flip & found.is_issue]).mean() > 0.9
    assert set(found.flags) == {"confident_learning", "enn", "knn_posterior"}
    assert abs(found.n_estimated - flip.sum()) <= 0.25 * flip.sum()
    mask = clean.find_label_issues(noisy, probs, features=x)
    assert np.array_equal(mask, found.is_issue)


def test_consensus_with_an_ensemble_reports_disagreement():
    x, true, noisy, flip, probs = _blobs(seed=1)
    rng = np.random.default_rng(0)
    other = probs * rng.uniform(0.8, 1.2, probs.shape)
    other /= other.sum(axis=1, keepdims=True)
    found = clean.consensus(noisy, [probs, other], features=x)
    assert found.disagreement is not None and found.params["runs"] == 2
    assert found.disagreement[flip].mean() > found.disagreement[~flip].mean() + 0.5
    assert _prf(found.is_issue, flip)[1] >= 0.9


@pytest.mark.parametrize("filter_by", ["prune_by_noise_rate", "prune_by_class", "both",
                                       "confident_learning", "predicted_neq_given"])
def test_confident_learning_finds_flipped_labels(filter_by):
    _, _, noisy, flip, probs = _blobs(seed=2)
    mask = clean.confident_learning(noisy, probs, filter_by=filter_by)
    precision, recall = _prf(mask, flip)
    assert recall >= 0.8 and precision >= 0.7, (filter_by, precision, recall)
    nudged = probs.argmax(axis=1) == noisy
    assert not mask[nudged].any()  # never flags what the model agrees with


def test_confident_joint_counts_and_noise_matrix():
    _, true, noisy, flip, probs = _blobs(seed=3)
    joint = clean.confident_joint(noisy, probs)
    assert joint.sum() == len(noisy)
    assert np.array_equal(joint.sum(axis=1), np.bincount(noisy))
    matrix = clean.noise_matrix(noisy, probs)
    assert np.allclose(matrix.sum(axis=0), 1.0)
    assert abs(clean.num_label_issues(noisy, probs) - flip.sum()) < 0.5 * flip.sum()
    thresholds = clean.confident_thresholds(noisy, probs)
    assert thresholds.shape == (4,) and np.all((thresholds > 0) & (thresholds <= 1))
    quality = clean.label_quality(noisy, probs)
    assert quality[flip].mean() < quality[~flip].mean()


def test_confident_learning_agrees_with_cleanlab():
    filt = pytest.importorskip("cleanlab.filter")
    _, _, noisy, _, probs = _blobs(seed=4, noise=0.2)
    for filter_by in ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning"):
        theirs = filt.find_label_issues(noisy, probs, filter_by=filter_by, n_jobs=1)
        ours = clean.confident_learning(noisy, probs, filter_by=filter_by)
        assert np.array_equal(theirs, ours), filter_by


@pytest.mark.parametrize("method", ["enn", "renn", "all_knn", "knn_posterior"])
def test_knn_filters_flag_flipped_labels(method):
    x, _, noisy, flip, probs = _blobs(seed=5)
    mask = clean.find_label_issues(noisy, probs, features=x, method=method)
    precision, recall = _prf(mask, flip)
    assert recall >= 0.85, (method, recall)
    assert precision >= (0.4 if method == "all_knn" else 0.6), (method, precision)


def test_knn_voting_rules_and_groups():
    x, _, noisy, flip, _ = _blobs(seed=6)
    mode = clean.edited_nearest_neighbours(noisy, x, k=5, kind="mode")
    everyone = clean.edited_nearest_neighbours(noisy, x, k=5, kind="all")
    weighted = clean.edited_nearest_neighbours(noisy, x, k=5, kind="weighted")
    assert mode.sum() <= everyone.sum()  # 'all' is the stricter rule to pass
    assert (mode & ~everyone).sum() == 0
    assert _prf(weighted, flip)[1] > 0.85
    renn = clean.repeated_edited_nearest_neighbours(noisy, x, k=3)
    assert renn.sum() >= clean.edited_nearest_neighbours(noisy, x, k=3).sum()
    groups = np.arange(len(noisy)) % 2
    grouped = clean.knn_posterior(noisy, x, groups=groups, k=5)
    assert grouped.shape == (len(noisy), 4) and np.allclose(grouped.sum(axis=1), 1)
    only = clean.edited_nearest_neighbours(noisy, x, k=3, only_classes=[0])
    assert not only[noisy != 0].any()


def test_neighbours_stay_within_groups():
    from smartset.clean._neighbours import neighbours

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    groups = np.arange(60) % 3
    idx, dist = neighbours(x, 4, groups=groups)
    assert (groups[idx] == groups[:, None]).all()
    assert (idx != np.arange(60)[:, None]).all()
    assert np.all(np.diff(dist, axis=1) >= -1e-6)


def test_ambiguous_images_and_classes_to_merge():
    rng = np.random.default_rng(0)
    n = 300
    labels = np.repeat([0, 1, 2], n // 3)
    probs = np.full((n, 3), 0.02)
    probs[np.arange(n), labels] = 0.96
    probs[:5] = [0.49, 0.47, 0.04]          # between 0 and 1: multi-label
    probs[5:8] = [0.34, 0.33, 0.33]         # no class stands out: exclude
    probs = probs / probs.sum(axis=1, keepdims=True)
    found = clean.find_ambiguous(probs)
    assert found.is_ambiguous[:8].all() and not found.is_ambiguous[8:].any()
    assert list(found.suggestion[:5]) == ["multi_label"] * 5
    assert list(found.suggestion[5:8]) == ["exclude"] * 3
    assert set(map(tuple, np.sort(found.classes[:5], axis=1))) == {(0, 1)}
    # classes 1 and 2 confused both ways; 0 -> 1 only one way
    probs = np.full((n, 3), 0.0)
    probs[labels == 0] = [0.7, 0.3, 0.0]
    probs[labels == 1] = [0.0, 0.6, 0.4]
    probs[labels == 2] = [0.0, 0.35, 0.65]
    features = rng.normal(size=(n, 4)).astype(np.float32) + (labels == 0)[:, None] * 5.0
    pairs = clean.find_classes_to_merge(labels, probs, features=features,
                                        class_names=["video", "book", "books"])
    assert list(zip(pairs["a"], pairs["b"])) == [("book", "books")]
    assert pairs.loc[0, "score"] == pytest.approx(0.35)
    assert pairs.loc[0, "overlap"] > 0.5  # mixed in the embedding, as chance would mix them


def test_prototype_selection_is_smaller_and_nearly_as_accurate():
    x, true, _, _, _ = _blobs(n_per=200, noise=0.0, seed=7)
    test_x, test_true, _, _, _ = _blobs(n_per=50, noise=0.0, seed=7)
    fcnn = clean.fast_condensed_nearest_neighbour(true, x)
    hart = clean.condensed_nearest_neighbour(true, x, seed=0)
    assert len(fcnn) < 0.2 * len(true) and len(hart) < 0.3 * len(true)
    assert len(set(fcnn.tolist())) == len(fcnn)
    curve = clean.reduction_curve(true, x, test_true, test_x, fractions=(1.0, 0.1))
    full = curve[(curve.method == "random") & (curve.fraction == 1.0)].accuracy.item()
    small = curve[curve.method == "fcnn"].sort_values("n").accuracy.iloc[-1]
    assert small >= full - 0.05
    assert set(curve.method) == {"random", "fcnn", "cnn"}
    subset = clean.stratified_subset(true, 40, seed=0)
    assert len(subset) == 40 and set(true[subset]) == {0, 1, 2, 3}


def test_imbalance_report_weights_and_undersampling():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(90, int), np.ones(10, int)]
    features = np.r_[rng.normal(0, 1, (90, 2)), rng.normal(3, 1, (10, 2))].astype(np.float32)
    report = clean.imbalance_report(labels, class_names=["big", "small"], features=features)
    assert report["imbalance_ratio"] == 9.0 and report["minority"] == ["small"]
    assert report["oversample_copies_per_sample"] == {"big": 0, "small": 8}
    assert report["class_weights"]["small"] == pytest.approx(5.0)
    assert np.allclose(clean.class_weights(labels, method="sqrt"), [1.0, 3.0])
    flags = clean.undersample(labels, features, rule="enn")
    assert not flags[labels == 1].any()
    drop = clean.undersample(labels, rule="random", seed=0)
    assert drop.sum() == 80 and not drop[labels == 1].any()


# -- bad input ------------------------------------------------------------------------------

def test_probabilities_that_do_not_sum_to_one_are_refused_with_the_fix():
    with pytest.raises(CleanInputError, match="sum to 1.*softmax"):
        clean.confident_learning([0, 1], [[0.5, 0.6], [0.2, 0.8]])
    with pytest.raises(CleanInputError, match="logits"):
        clean.confident_learning([0, 1], [[2.0, -1.0], [0.2, 0.8]])


def test_wrong_shapes_nans_and_labels_out_of_range_are_refused():
    probs = np.full((4, 2), 0.5)
    with pytest.raises(CleanInputError, match="2-D"):
        clean.consensus([0, 1, 0, 1], probs[:, 0])
    with pytest.raises(CleanInputError, match="4 rows but there are 3 labels"):
        clean.consensus([0, 1, 0], probs)
    bad = probs.copy()
    bad[2, 0] = np.nan
    with pytest.raises(CleanInputError, match="NaN.*first: 2"):
        clean.consensus([0, 1, 0, 1], bad)
    with pytest.raises(CleanInputError, match="out of range"):
        clean.consensus([0, 1, 0, 2], probs)
    with pytest.raises(CleanInputError, match="integer class indices"):
        clean.consensus(["a", "b", "a", "b"], probs)
    with pytest.raises(CleanInputError, match="features has 3 rows"):
        clean.consensus([0, 1, 0, 1], probs, features=np.zeros((3, 2)))
    with pytest.raises(CleanInputError, match="Unknown method 'wilson'.*consensus"):
        clean.find_label_issues([0, 1, 0, 1], probs, method="wilson")


def test_a_class_with_no_samples_warns():
    probs = np.tile([0.45, 0.45, 0.1], (6, 1))
    with pytest.warns(CleanWarning, match="no samples with that label.*index 2"):
        clean.confident_learning([0, 1, 0, 1, 0, 1], probs)


def test_fewer_samples_than_k_is_refused():
    x = np.zeros((5, 2), dtype=np.float32)
    with pytest.raises(CleanInputError, match="k=10 neighbours need at least 11 samples, got 5"):
        clean.edited_nearest_neighbours([0, 1, 0, 1, 0], x, k=10)
    with pytest.raises(CleanInputError, match="smallest group"):
        clean.knn_posterior([0, 1, 0, 1, 0, 1], np.zeros((6, 2)), k=3, groups=[0, 0, 0, 0, 1, 1])


def test_in_sample_looking_probabilities_warn_loudly():
    labels = np.arange(400) % 4
    probs = np.full((400, 4), 1e-5)
    probs[np.arange(400), labels] = 1 - 3e-5
    with pytest.warns(InSampleWarning, match="in-sample"):
        clean.confident_learning(labels, probs)
    with pytest.warns(InSampleWarning):
        clean.consensus(labels, probs)


def test_ambiguity_rules_combine_model_and_neighbourhood():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 100)
    features = (rng.normal(size=(200, 2)) + labels[:, None] * 6.0).astype(np.float32)
    features[:10] = rng.normal(size=(10, 2)) + 3.0          # between the two clusters
    labels[:10] = np.arange(10) % 2
    probs = np.where(labels[:, None] == np.arange(2), 0.95, 0.05)
    probs[:20] = [0.55, 0.45]                               # the model is unsure of 20
    both = clean.find_ambiguous(probs, labels=labels, features=features, k=6)
    either = clean.find_ambiguous(probs, labels=labels, features=features, k=6, rule="either")
    assert both.is_ambiguous.sum() <= either.is_ambiguous.sum()
    assert not (both.is_ambiguous & ~either.is_ambiguous).any()
    assert both.is_ambiguous[:10].mean() > both.is_ambiguous[10:20].mean()
    with pytest.raises(CleanInputError, match="Unknown rule"):
        clean.find_ambiguous(probs, labels=labels, features=features, rule="vote")


def test_noise_count_estimate_follows_class_conditional_noise():
    rng = np.random.default_rng(8)
    x, true, _, _, _ = _blobs(noise=0.0, seed=8)
    noisy = true.copy()
    flip = (true == 0) & (rng.random(len(true)) < 0.3)      # 0 -> 1 only
    noisy[flip] = 1
    means = np.stack([x[noisy == c].mean(axis=0) for c in range(4)])
    logits = -0.25 * ((x[:, None, :] - means[None]) ** 2).sum(axis=2)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    estimate = clean.estimate_noise_count(noisy, probs)
    assert abs(estimate - flip.sum()) <= 0.3 * flip.sum(), (estimate, flip.sum())
    found = clean.consensus(noisy, probs, features=x)
    assert _prf(found.is_issue, flip)[1] >= 0.8
    assert (found.suggested[flip & found.is_issue] == 0).all()


def _learned_noise(seed=3, rate=0.35, n_per=300, spread=3.0):
    """Class-conditional noise (0 -> 1 and 2 -> 3 at ``rate``) and probabilities from a model
    that learned it: ``P(given | x) = P(true | x) T``, as a network trained on the noisy
    labels reports."""
    rng = np.random.default_rng(seed)
    x, true, _, _, _ = _blobs(n_per=n_per, noise=0.0, spread=spread, seed=seed)
    transition = np.eye(4)
    for src, dst in ((0, 1), (2, 3)):
        transition[src, src], transition[src, dst] = 1 - rate, rate
    noisy = true.copy()
    for src, dst in ((0, 1), (2, 3)):
        chosen = (true == src) & (rng.random(len(true)) < rate)
        noisy[chosen] = dst
    means = np.stack([x[true == c].mean(axis=0) for c in range(4)])
    logits = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(axis=2) / 2.0
    p_true = np.exp(logits - logits.max(axis=1, keepdims=True))
    p_true /= p_true.sum(axis=1, keepdims=True)
    return x, true, noisy, noisy != true, p_true @ transition, transition


def test_noise_correction_and_per_class_cut_undo_class_conditional_noise():
    x, true, noisy, flip, probs, transition = _learned_noise()
    corrected, estimated = clean.noise_corrected(noisy, probs)
    assert np.allclose(corrected.sum(axis=1), 1.0)
    # the noise is found where it is (the confident joint underestimates its size)
    assert estimated[0, 1] > 0.15 and estimated[2, 3] > 0.15
    off = estimated - np.diag(np.diag(estimated))
    off[0, 1] = off[2, 3] = 0.0
    assert np.abs(off).max() < 0.05 and np.all(estimated[[1, 3], [1, 3]] > 0.95)
    rows = np.arange(len(noisy))
    # a flipped 0 labeled 1 gets less support for '1' once the learned noise is undone
    assert np.median(corrected[rows, noisy][flip]) < np.median(probs[rows, noisy][flip])

    # the correction's own effect, at one fixed weight of the two views
    plain = clean.consensus(noisy, probs, features=x, correct_noise=False, cut="simulated",
                            model_weight=0.6)
    found = clean.consensus(noisy, probs, features=x, model_weight=0.6)
    assert found.params["cut_used"] == "per_class"
    counts = np.array(found.params["class_counts"])
    assert counts[[0, 2]].sum() <= 0.1 * flip.sum()  # the clean classes are left alone
    assert abs(counts[[1, 3]].sum() - flip.sum()) <= 0.25 * flip.sum()
    f1 = lambda m: 2 * (m & flip).sum() / (m.sum() + flip.sum())  # noqa: E731
    assert f1(found.is_issue) > f1(plain.is_issue) + 0.03, (f1(found.is_issue), f1(plain.is_issue))
    assert (found.suggested[found.is_issue & flip] == true[found.is_issue & flip]).mean() > 0.9


def test_uniform_noise_keeps_one_global_cut():
    x, true, noisy, flip, probs = _blobs(n_per=300, noise=0.1, seed=5)
    found = clean.consensus(noisy, probs, features=x)
    assert found.params["cut_used"] == "simulated" and found.params["class_counts"] is None
    assert not clean.class_conditional(noisy, np.bincount(noisy[flip], minlength=4))
    assert clean.class_conditional(noisy, np.array([0, 60, 0, 70]))
    with pytest.raises(CleanInputError, match="cut"):
        clean.consensus(noisy, probs, cut="sideways")


def test_oversampling_reaches_the_target_exactly_for_every_class():
    """Mild imbalance (ratio 1.72): rounding copies per class doubled one class past the
    largest and left three untouched; per-sample copies reach the target exactly."""
    counts = [100, 58, 80, 90, 72]
    labels = np.repeat(np.arange(5), counts)
    copies = clean.per_sample_copies(labels, seed=0)
    after = np.bincount(labels, weights=copies + 1).astype(int)
    assert after.tolist() == [100] * 5
    assert copies[labels == 0].sum() == 0 and copies.max() <= 1
    assert clean.oversampling_counts(labels).tolist() == [0, 42, 20, 10, 28]
    again = clean.per_sample_copies(labels, seed=0)
    assert np.array_equal(copies, again)  # seeded
    median = np.bincount(labels, weights=clean.per_sample_copies(labels, target="median",
                                                                 seed=1) + 1).astype(int)
    assert median.tolist() == [100, 80, 80, 90, 80]
