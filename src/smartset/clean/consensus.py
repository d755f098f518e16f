"""The consensus of the detectors: one ranking of suspicious labels, each with a suggested
label and its evidence.

How it decides (measured on MNIST with 10% and 20% uniform and class-conditional noise, see
``benchmarks/label_noise.py``):

1. **Posterior.** The out-of-fold model probabilities (averaged over the runs of an
   ensemble) and the leave-one-out kNN posterior of the features are averaged:
   ``R = w * P + (1 - w) * Q`` (``k`` 20 neighbours, cosine). The two err on different
   samples (the model on odd shapes, the neighbourhood on crowded class borders), so their
   mean ranks better than either. How much each is worth depends on the data (a strong
   CNN against weak features, or a weak linear model against a kNN that separates digits
   better than it does), so ``w`` is fitted (``model_weight="auto"``): both views are
   out-of-sample predictions of the *given* label, and ``w`` is the value on a 0.05 grid
   that maximises the mean log-likelihood ``log(R[i, label_i] + 1e-4)`` of the given
   labels. No true label is needed; wrong labels weigh on both views alike. (MNIST, 8,000
   digits, PCA-50 + logistic regression probabilities, calibration noise seeds 200 and
   201: ``w`` 0.05-0.30 instead of the fixed 0.6, (1-F1) down by 4-25% in all four
   settings, see ``benchmarks/label_noise_filters.py``.)
2. **Noise correction.** ``R`` estimates the *given* label, noise included: a model
   trained where 30% of the 4s are labeled 9 gives a 4 about 0.3 for "9". The noise
   transition matrix ``T[true, given]`` is estimated from the confident joint of ``R``,
   and ``R = Q T`` is solved for the posterior of the *true* class ``Q`` (forward
   correction, run backwards). Near-uniform noise leaves ``T`` close to a scaled identity
   and the ranking almost as it was; class-conditional noise (7 -> 1) is undone where it
   lives. (MNIST, 8,000 digits, 30% of 7/4/3/2 flipped to 1/9/5/7: F1 0.83 -> 0.88.)
3. **Ranking.** The score of a sample is ``1 - Q[label]``: how little the evidence
   supports its given label (self-confidence ranks wrong labels better than the margin).
   When the noise is class-conditional (step 4's test), the label given is evidence too:
   the true class of a sample labeled ``g`` is ``t`` with probability proportional to
   ``Q[t] T[t, g]``, so the score is ``1 - Q[g] T[g, g] / sum_t Q[t] T[t, g]`` and the
   suggestion the most likely other ``t``. A 7 that looks like a 1 (1s are often labeled
   7) is suspicious; one that looks like a 4 (never labeled 7) much less, where ``1 -
   Q[label]`` ranks both alike. (MNIST, 8,000 digits, small-CNN out-of-fold
   probabilities, each digit flipped to its look-alike with probability 0.2, chosen on
   noise seeds 200/201: F1 0.938 -> 0.965; on seeds 100-104 0.940 -> 0.962, (1-F1) 0.51x
   cleanlab's best filter instead of 0.81x.) Under uniform noise ``T`` is a scaled
   identity and the two rankings are the same; ``1 - Q[label]`` is kept there, free of
   the estimate's noise (``rank``).
4. **Cut.** How many to flag is estimated, not thresholded: the scores a wrong label
   *would* get are simulated on confidently correct samples, by reading their posterior
   at the classes they would be mislabeled as (drawn from the confident joint's
   off-diagonal pattern, each true class weighted by the noise the joint says it sends,
   so class-conditional noise such as 7 -> 1 is simulated as such). The share of
   observed scores below that distribution's ``quantile`` estimates the noise rate, as
   Storey's estimate of the share of true nulls does; the ``n * rate`` lowest-scored
   labels are flagged (at least those whose posterior is below a quarter of chance,
   ``0.25 / k``), never one whose posterior argmax is its label. The confident joint's
   own count (cleanlab's) over-counts when the model separates the classes well, because
   the samples it counts confidently are mostly the wrong ones. The same estimate is made
   per given class; when the per-class noise rates differ by more than sampling noise
   (a chi-squared test of one common rate, p < 0.001) the noise is class-conditional and
   each class gets its own count (its most suspicious labels); otherwise one global
   ranking, which spends the budget better when every class is as noisy (cut ``auto``;
   class-conditional MNIST above: F1 0.88 -> 0.93, uniform noise unchanged).

Every detector also reports its own flags, kept as evidence (``Consensus.flags``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from smartset.clean import confident as _cl
from smartset.clean._validation import (CleanInputError, check_features, check_groups,
                                        check_k, check_labels, check_pred_probs,
                                        warn_empty_classes, warn_if_in_sample)
from smartset.clean.knn_filters import (_posterior_from, _votes_disagree, all_knn,
                                        edited_nearest_neighbours,
                                        repeated_edited_nearest_neighbours)
from smartset.clean._neighbours import neighbours

__all__ = ["Consensus", "consensus", "find_label_issues", "estimate_noise_count",
           "noise_corrected", "class_conditional", "fit_model_weight",
           "DETECTORS", "register_detector", "available_detectors", "CUTS", "RANKS"]

CUTS = ("auto", "simulated", "per_class", "confident_joint", "argmax")
RANKS = ("auto", "posterior", "noise_model")


@dataclass
class Consensus:
    """What :func:`consensus` found, as arrays over the ``n`` samples.

    ``is_issue`` (bool) the flagged labels; ``score`` (float, higher = more suspicious,
    ``1 - posterior[label]``); ``suggested`` (int, the most likely other class);
    ``posterior`` (``(n, k)``, the combined evidence); ``model_probs`` and
    ``knn_probs`` (``(n, k)`` or None) its parts; ``flags`` each detector's own flags;
    ``disagreement`` (share of ensemble runs whose argmax is not the label, or None);
    ``n_estimated`` the estimated number of wrong labels; ``params`` the settings used.
    """

    is_issue: np.ndarray
    score: np.ndarray
    suggested: np.ndarray
    posterior: np.ndarray
    model_probs: np.ndarray
    knn_probs: np.ndarray | None
    flags: dict[str, np.ndarray]
    disagreement: np.ndarray | None
    n_estimated: int
    params: dict = field(default_factory=dict)

    def ranked(self) -> np.ndarray:
        """Indices of the flagged samples, most suspicious first."""
        flagged = np.flatnonzero(self.is_issue)
        return flagged[np.argsort(-self.score[flagged], kind="stable")]

    def votes(self) -> np.ndarray:
        """``(n,)`` int: how many of the detectors in :attr:`flags` flag each sample."""
        if not self.flags:
            return np.zeros(len(self.score), dtype=np.int64)
        return np.sum([f.astype(np.int64) for f in self.flags.values()], axis=0)


def _ensemble(pred_probs, n: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """One ``(n, k)`` array, or a sequence / ``(runs, n, k)`` array of ensemble runs."""
    if isinstance(pred_probs, (list, tuple)) or (hasattr(pred_probs, "ndim")
                                                 and np.ndim(pred_probs) == 3):
        runs = [check_pred_probs(p, n, name=f"pred_probs[{i}]") for i, p in enumerate(pred_probs)]
        if not runs:
            raise CleanInputError("pred_probs is an empty list of ensemble runs.")
        if len({r.shape for r in runs}) > 1:
            raise CleanInputError(f"Ensemble runs differ in shape: {[r.shape for r in runs]}.")
        return np.mean(runs, axis=0), np.stack(runs)
    return check_pred_probs(pred_probs, n), None


def estimate_noise_count(labels: np.ndarray, posterior: np.ndarray, *,
                         quantile: float = 0.9) -> int:
    """Estimated number of wrong labels (see the module notes, step 4): ``(n,)`` int
    labels, ``(n, k)`` posterior; ``quantile`` of the simulated wrong-label scores below
    which observed scores are counted."""
    labels = check_labels(labels)
    posterior = check_pred_probs(posterior, len(labels), name="posterior")
    return _estimate_count(labels, posterior, quantile)


def _simulated_wrong(labels: np.ndarray, posterior: np.ndarray):
    """Scores wrong labels would get, read off confidently correct samples: per such sample
    ``i`` and class ``g``, ``posterior[i, g]`` with weight ``w[i, g]`` (how often the
    confident joint says its class is mislabeled as ``g``). None if too few are correct."""
    n, k = posterior.shape
    clean = posterior.argmax(axis=1) == labels
    if clean.sum() < 10:
        return None
    joint = _cl._joint(labels, posterior)[0].astype(np.float64)  # [given, true]
    mislabel = joint.T.copy()                                     # [true, given]
    np.fill_diagonal(mislabel, 0.0)
    totals = mislabel.sum(axis=1, keepdims=True)
    uniform = (1.0 - np.eye(k)) / (k - 1)
    # a little uniform mass: a pair the joint never saw can still occur
    mislabel = np.where(totals > 0, mislabel / np.maximum(totals, 1e-12), uniform)
    mislabel = 0.9 * mislabel + 0.1 * uniform
    # each true class contributes as much as the joint says it sends to other labels
    sent = joint.sum(axis=0) - np.diag(joint)
    sent = sent + 0.05 * max(sent.sum(), 1.0) / k  # no class is assumed noise-free
    c = labels[clean]
    per_sample = sent[c] / np.maximum(np.bincount(c, minlength=k)[c], 1)
    return posterior[clean], mislabel[c] * per_sample[:, None]


def _rate_below(scores: np.ndarray, weights: np.ndarray, own: np.ndarray,
                quantile: float) -> float:
    """Storey-style share of ``own`` scores that are wrong labels, given the simulated
    wrong-label ``scores`` and their ``weights``."""
    if weights.sum() <= 0 or len(own) == 0:
        return 0.0
    order = np.argsort(scores, kind="stable")
    cumulative = np.cumsum(weights[order])
    cumulative /= cumulative[-1]
    cut = scores[order][min(np.searchsorted(cumulative, quantile), len(order) - 1)]
    share = max(float(weights[scores <= cut].sum() / weights.sum()), 1e-3)
    return float(np.mean(own <= cut)) / share


def _check_quantile(quantile: float) -> None:
    if not 0.0 < quantile < 1.0:
        raise CleanInputError(f"quantile must be in (0, 1), got {quantile}.")


def _estimate_count(labels: np.ndarray, posterior: np.ndarray, quantile: float) -> int:
    _check_quantile(quantile)
    n, k = posterior.shape
    own = posterior[np.arange(n), labels]
    simulated = _simulated_wrong(labels, posterior)
    if simulated is None:
        return int((posterior.argmax(axis=1) != labels).sum())
    scores, weights = simulated
    rate = _rate_below(scores.ravel(), weights.ravel(), own, quantile)
    # whatever the estimate, labels the evidence all but rules out (posterior below a
    # quarter of chance) are counted: small sets give the estimate little to work with
    certain = int(np.sum(own < 0.25 / k))
    return int(np.clip(max(round(rate * n), certain), 0, n))


def _estimate_class_counts(labels: np.ndarray, posterior: np.ndarray,
                           quantile: float) -> np.ndarray:
    """``(k,)`` estimated wrong labels per given class (the simulation of
    :func:`_estimate_count`, with the wrong labels of each class simulated alone)."""
    _check_quantile(quantile)
    n, k = posterior.shape
    own = posterior[np.arange(n), labels]
    sizes = np.bincount(labels, minlength=k)
    simulated = _simulated_wrong(labels, posterior)
    if simulated is None:
        return np.bincount(labels[posterior.argmax(axis=1) != labels], minlength=k)
    scores, weights = simulated
    counts = np.zeros(k, dtype=np.int64)
    for g in range(k):
        mine = labels == g
        rate = _rate_below(scores[:, g], weights[:, g], own[mine], quantile)
        certain = int(np.sum(own[mine] < 0.25 / k))
        counts[g] = int(np.clip(max(round(rate * sizes[g]), certain), 0, sizes[g]))
    return counts


def _given_label_score(labels: np.ndarray, posterior: np.ndarray, transition: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``(score, suggested)`` ranked by the noise model (module notes, step 3): the true
    class ``t`` of a sample labeled ``g`` has probability proportional to ``Q[t] T[t, g]``
    (``Q`` the posterior of the true class, ``T[true, given]`` the estimated noise
    matrix), so the label is wrong with probability ``1 - Q[g] T[g, g] / sum_t Q[t] T[t,
    g]`` and the suggestion is the ``t != g`` with the largest ``Q[t] T[t, g]``. Under
    class-conditional noise a digit labeled 7 that looks like a 1 (a class the matrix says
    is often labeled 7) is suspicious, one that looks like a 4 (never labeled 7) much less:
    ``1 - Q[g]`` ranks both alike."""
    n = len(labels)
    rows = np.arange(n)
    joint = posterior * transition[:, labels].T            # (n, k): Q[t] T[t, g_i]
    total = joint.sum(axis=1)
    right = np.where(total > 0, joint[rows, labels] / np.maximum(total, 1e-300), 0.0)
    others = joint.copy()
    others[rows, labels] = -np.inf
    return 1.0 - right, others.argmax(axis=1)


def class_conditional(labels: np.ndarray, counts: np.ndarray, *, alpha: float = 1e-3) -> bool:
    """Whether estimated per-class wrong-label ``counts`` differ more than sampling noise
    allows under one common noise rate (Pearson's chi-squared test, level ``alpha``)."""
    from scipy.stats import chi2

    sizes = np.bincount(labels, minlength=len(counts)).astype(np.float64)
    present = sizes > 0
    sizes, counts = sizes[present], np.asarray(counts, np.float64)[present]
    if len(sizes) < 2:
        return False
    rate = counts.sum() / sizes.sum()
    if rate <= 0.0 or rate >= 1.0:
        return False
    statistic = float(np.sum((counts - sizes * rate) ** 2 / (sizes * rate * (1.0 - rate))))
    return statistic > chi2.ppf(1.0 - alpha, len(sizes) - 1)


def noise_corrected(labels: np.ndarray, posterior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The posterior of the true class (module notes, step 2): ``(Q, T)`` with ``T[true,
    given]`` the noise transition matrix estimated from the confident joint of
    ``posterior`` and ``Q`` the solution of ``posterior = Q T``, clipped to non-negative
    and renormalised. ``posterior`` is returned unchanged (and ``T`` the identity) where
    ``T`` cannot be inverted reliably."""
    labels = check_labels(labels)
    posterior = check_pred_probs(posterior, len(labels), name="posterior")
    n, k = posterior.shape
    joint = _cl._joint(labels, posterior)[0].astype(np.float64)   # [given, true]
    totals = joint.sum(axis=0)
    transition = np.eye(k)
    seen = totals > 0                                            # classes the joint saw
    transition[seen] = (joint[:, seen] / totals[seen]).T
    if np.linalg.cond(transition) > 1e4 or np.any(np.diag(transition) < 0.5):
        return posterior, np.eye(k)  # more noise than signal: no reliable inverse
    corrected = np.linalg.solve(transition.T, posterior.T).T
    corrected = np.clip(corrected, 0.0, None)
    sums = corrected.sum(axis=1, keepdims=True)
    corrected = np.where(sums > 0, corrected / np.maximum(sums, 1e-12), posterior)
    return corrected, transition


_WEIGHT_GRID = np.linspace(0.0, 1.0, 21)
_LIKELIHOOD_FLOOR = 1e-4


def fit_model_weight(labels: np.ndarray, model_probs: np.ndarray,
                     knn_probs: np.ndarray) -> float:
    """The weight ``w`` of the model in ``w * model_probs + (1 - w) * knn_probs`` that
    best predicts the given ``labels`` (module notes, step 1): the value on a 0.05 grid of
    [0, 1] with the highest mean ``log(R[i, labels[i]] + 1e-4)``. Both inputs must be
    out-of-sample (out-of-fold probabilities; a leave-one-out kNN posterior)."""
    labels = check_labels(labels)
    model_probs = check_pred_probs(model_probs, len(labels), name="model_probs")
    knn_probs = check_pred_probs(knn_probs, len(labels), name="knn_probs")
    return _fit_weight(labels, model_probs, knn_probs)


def _fit_weight(labels, model_probs, knn_probs) -> float:
    rows = np.arange(len(labels))
    p, q = model_probs[rows, labels], knn_probs[rows, labels]
    likelihood = [float(np.mean(np.log(w * p + (1.0 - w) * q + _LIKELIHOOD_FLOOR)))
                  for w in _WEIGHT_GRID]
    return round(float(_WEIGHT_GRID[int(np.argmax(likelihood))]), 2)  # a grid point, printable


def consensus(labels: np.ndarray, pred_probs, *, features: np.ndarray | None = None,
              groups: np.ndarray | None = None, k: int = 20, metric: str = "cosine",
              model_weight: float | str = "auto", cut: str | float | int = "auto",
              quantile: float = 0.9, correct_noise: bool = True, rank: str = "auto",
              enn_k: int = 3,
              detectors: Sequence[str] = ("confident_learning", "enn", "knn_posterior"),
              check_in_sample: bool = True) -> Consensus:
    """Combine model probabilities and kNN evidence into one ranking of suspicious labels.

    Parameters
    ----------
    labels : (n,) int
        Given class indices.
    pred_probs : (n, k) float, or a list / (runs, n, k) array of ensemble runs
        Out-of-fold probabilities. Several runs are averaged, and the share of runs whose
        argmax is not the label is kept as ``disagreement``.
    features : (n, d) float, optional
        Embeddings for the kNN evidence (the learning stage's out-of-fold features are far
        stronger than pixels). Without them the posterior is the model's alone.
    groups : (n,) optional
        Neighbours only within the same group: pass the folds with out-of-fold features.
    k : int
        Neighbours of the kNN posterior (default 20; lowered to the smallest group's size
        minus one by :func:`smartset.clean.make_plan`).
    metric : ``cosine`` (default) or ``euclidean``.
    model_weight : ``auto`` (default) or a float in [0, 1]
        Weight of the model probabilities in the posterior: ``auto`` fits it to the given
        labels (:func:`fit_model_weight`, module notes step 1; the value used is in
        ``params["model_weight_used"]``).
    cut : ``auto`` (default), ``simulated``, ``per_class``, ``confident_joint``,
        ``argmax``, a float or an int
        How many to flag: the simulated-noise estimate (module notes), per class when the
        noise is class-conditional (``auto``), always globally (``simulated``) or always
        per class (``per_class``); the confident joint's off-diagonal count; every sample
        whose posterior argmax is not its label; those with ``posterior[label]`` below a
        float; or the int most suspicious.
    quantile : float
        Of the simulated wrong-label scores, for the simulated cuts (default 0.9).
    correct_noise : bool
        Rank by the noise-corrected posterior of the true class (module notes, step 2;
        default True); ``posterior`` then holds the corrected one.
    rank : ``auto`` (default), ``posterior`` or ``noise_model``
        How labels are ranked (module notes, step 3): ``posterior`` by ``1 - Q[label]``;
        ``noise_model`` by the probability that the label is wrong *given that it was the
        label given*, ``1 - Q[g] T[g, g] / sum_t Q[t] T[t, g]`` (the estimated noise matrix
        says which true classes end up labeled ``g``); ``auto`` uses ``noise_model`` when
        the cut finds the noise class-conditional and ``posterior`` otherwise (the value
        used is in ``params["rank_used"]``).
    enn_k : int
        Neighbours of the ENN flags kept as evidence (default 3).
    detectors : names of the detectors whose flags are kept as evidence.
    """
    labels = check_labels(labels)
    probs, runs = _ensemble(pred_probs, len(labels))
    n, n_classes = probs.shape
    labels = check_labels(labels, n_classes)
    if isinstance(model_weight, str):
        if model_weight != "auto":
            raise CleanInputError(f"model_weight must be 'auto' or a number in [0, 1], got "
                                  f"{model_weight!r}.")
    elif not 0.0 <= model_weight <= 1.0:
        raise CleanInputError(f"model_weight must be in [0, 1], got {model_weight}.")
    if rank not in RANKS:
        raise CleanInputError(f"rank must be one of {', '.join(RANKS)}, got {rank!r}.")
    warn_empty_classes(labels, n_classes)
    if check_in_sample:
        warn_if_in_sample(labels, probs)
    rows = np.arange(n)
    knn_probs, enn_flags, weight = None, None, 1.0
    if features is not None:
        features = check_features(features, n)
        groups = check_groups(groups, n)
        k = check_k(k, n, groups=groups)
        idx, dist = neighbours(features, max(k, enn_k), metric=metric, groups=groups)
        knn_probs = _posterior_from(labels, idx[:, :k], dist[:, :k], n_classes)
        enn_flags = _votes_disagree(labels, idx[:, :enn_k], dist[:, :enn_k], "mode")
        weight = (_fit_weight(labels, probs, knn_probs) if model_weight == "auto"
                  else float(model_weight))
        posterior = weight * probs + (1.0 - weight) * knn_probs
    else:
        posterior = probs
    transition = np.eye(n_classes)
    if correct_noise:
        posterior, transition = noise_corrected(labels, posterior)
    score = 1.0 - posterior[rows, labels]
    others = posterior.copy()
    others[rows, labels] = -np.inf
    suggested = others.argmax(axis=1)

    class_counts, cut_used = None, cut
    if isinstance(cut, str):
        if cut in ("auto", "per_class"):
            class_counts = _estimate_class_counts(labels, posterior, quantile)
            if cut == "auto" and not class_conditional(labels, class_counts):
                class_counts = None
            cut_used = "simulated" if class_counts is None else "per_class"
            count = (_estimate_count(labels, posterior, quantile) if class_counts is None
                     else int(class_counts.sum()))
        elif cut == "simulated":
            count = _estimate_count(labels, posterior, quantile)
        elif cut == "confident_joint":
            joint = _cl._joint(labels, posterior)[0]
            count = int(joint.sum() - np.trace(joint))
        elif cut == "argmax":
            count = int((posterior.argmax(axis=1) != labels).sum())
        else:
            raise CleanInputError(f"Unknown cut {cut!r}; choose one of {', '.join(CUTS)}, a "
                                  f"probability threshold (float) or a count (int).")
    elif isinstance(cut, (int, np.integer)) and not isinstance(cut, bool):
        count = int(np.clip(cut, 0, n))
    elif isinstance(cut, float):
        count = int((posterior[rows, labels] < cut).sum())
    else:
        raise CleanInputError(f"cut must be a name, a float or an int, got {cut!r}.")
    rank_used = ("noise_model" if rank == "noise_model" or (
        rank == "auto" and class_counts is not None) else "posterior")
    if rank_used == "noise_model" and np.allclose(transition, np.eye(n_classes)):
        rank_used = "posterior"  # no noise estimated: the given label adds nothing
    if rank_used == "noise_model":
        score, suggested = _given_label_score(labels, posterior, transition)
    is_issue = np.zeros(n, dtype=bool)
    if class_counts is not None:
        for given, wrong in enumerate(class_counts):
            members = np.flatnonzero(labels == given)
            is_issue[members[np.argsort(-score[members], kind="stable")[:wrong]]] = True
    else:
        is_issue[np.argsort(-score, kind="stable")[:count]] = True
    is_issue &= posterior.argmax(axis=1) != labels  # never flag what all evidence supports
    flags: dict[str, np.ndarray] = {}
    for name in detectors:
        if name == "confident_learning":
            flags[name] = _cl._confident_learning(labels, probs)
        elif name == "enn" and enn_flags is not None:
            flags[name] = enn_flags
        elif name == "knn_posterior" and knn_probs is not None:
            flags[name] = knn_probs.argmax(axis=1) != labels
        elif name == "model_argmax":
            flags[name] = probs.argmax(axis=1) != labels
    disagreement = None
    if runs is not None:
        disagreement = (runs.argmax(axis=2) != labels[None, :]).mean(axis=0)
    return Consensus(is_issue=is_issue, score=score, suggested=suggested, posterior=posterior,
                     model_probs=probs, knn_probs=knn_probs, flags=flags,
                     disagreement=disagreement, n_estimated=count,
                     params={"k": k, "metric": metric, "model_weight": model_weight,
                             "model_weight_used": weight,
                             "cut": cut, "cut_used": cut_used,
                             "class_counts": None if class_counts is None
                             else class_counts.tolist(),
                             "correct_noise": correct_noise, "rank": rank,
                             "rank_used": rank_used,
                             "noise_matrix": np.round(transition, 4).tolist(),
                             "quantile": quantile, "enn_k": enn_k,
                             "runs": 1 if runs is None else len(runs),
                             "features": features is not None})


# -- the registry of detectors: name -> fn(labels, pred_probs, features, groups, **options) -----

DetectorFn = Callable[..., np.ndarray]
DETECTORS: dict[str, tuple[DetectorFn, str]] = {}


def register_detector(name: str, fn: DetectorFn, description: str) -> None:
    """Register ``fn(labels, pred_probs, *, features, groups, **options) -> (n,) bool``."""
    DETECTORS[name] = (fn, description)


def available_detectors() -> dict[str, str]:
    return {name: description for name, (_, description) in DETECTORS.items()}


def _needs_features(name, features):
    if features is None:
        raise CleanInputError(f"Detector {name!r} works on embeddings: pass features=(n, d) "
                              f"(out-of-fold features of the learning stage, or "
                              f"smartset.audit.embeddings).")


def _cl_detector(labels, pred_probs, *, features=None, groups=None, **options):
    probs, _ = _ensemble(pred_probs, len(labels))
    return _cl.confident_learning(labels, probs, **options)


def _knn_detector(fn, name):
    def detect(labels, pred_probs=None, *, features=None, groups=None, **options):
        _needs_features(name, features)
        return fn(labels, features, groups=groups, **options)
    return detect


def _knn_posterior_detector(labels, pred_probs=None, *, features=None, groups=None, **options):
    from smartset.clean.knn_filters import knn_posterior

    _needs_features("knn_posterior", features)
    n_classes = None if pred_probs is None else _ensemble(pred_probs, len(labels))[0].shape[1]
    posterior = knn_posterior(labels, features, n_classes=n_classes, groups=groups, **options)
    return posterior.argmax(axis=1) != check_labels(labels)


def _consensus_detector(labels, pred_probs, *, features=None, groups=None, **options):
    return consensus(labels, pred_probs, features=features, groups=groups, **options).is_issue


for _name, _fn, _text in (
    ("consensus", _consensus_detector, "model probabilities + kNN posterior (weight fitted "
                                       "to the given labels), cut at the simulated noise "
                                       "rate (default)"),
    ("confident_learning", _cl_detector, "confident learning (filter_by=prune_by_noise_rate, "
                                         "prune_by_class, both, ...)"),
    ("enn", _knn_detector(edited_nearest_neighbours, "enn"), "Wilson's edited nearest "
                                                             "neighbours (k, kind)"),
    ("renn", _knn_detector(repeated_edited_nearest_neighbours, "renn"), "repeated ENN"),
    ("all_knn", _knn_detector(all_knn, "all_knn"), "All-kNN (Tomek): ENN with 1..k neighbours"),
    ("knn_posterior", _knn_posterior_detector, "argmax of the kNN posterior differs from "
                                               "the label"),
):
    register_detector(_name, _fn, _text)


def find_label_issues(labels: np.ndarray, pred_probs=None, *, features: np.ndarray | None = None,
                      groups: np.ndarray | None = None, method: str = "consensus",
                      **options) -> np.ndarray:
    """Flag likely wrong labels: ``(n,)`` bool, True = suspicious.

    ``labels`` ``(n,)`` int class indices; ``pred_probs`` ``(n, k)`` out-of-fold
    probabilities (or a list of ensemble runs); ``features`` ``(n, d)`` embeddings;
    ``groups`` the fold of each sample when the features are out-of-fold. ``method``
    names a registered detector (:func:`available_detectors`): ``consensus`` (default,
    see :func:`consensus` for its options), ``confident_learning`` (``filter_by``, ...),
    ``enn`` / ``renn`` / ``all_knn`` (``k``, ``kind``, ``metric``), ``knn_posterior``
    (``k``, ``weights``, ``metric``). Remaining ``options`` go to the detector. For the
    ranking, suggestions and evidence, call :func:`consensus`.
    """
    if method not in DETECTORS:
        raise CleanInputError(f"Unknown method {method!r}. Methods: "
                              f"{', '.join(f'{n} ({d})' for n, d in available_detectors().items())}.")
    if pred_probs is None and method in ("consensus", "confident_learning"):
        raise CleanInputError(f"Method {method!r} needs out-of-fold pred_probs (n, k): run "
                              f"'smartset predict --oof' or smartset.learn.cross_val_predict.")
    fn, _ = DETECTORS[method]
    return fn(labels, pred_probs, features=features, groups=groups, **options)
