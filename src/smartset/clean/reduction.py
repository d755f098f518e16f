"""Data reduction by prototype selection: a smaller subset that classifies (by nearest
neighbour) nearly as well as the whole.

- :func:`condensed_nearest_neighbour`: Hart (1968). Visit the samples in a random order;
  keep each one that the samples kept so far misclassify (1-NN); repeat passes until one
  keeps nothing. Order-dependent, and slow on large sets in its textbook form; here each
  kept sample updates every sample's nearest-kept distance at once (exact Hart, O(kept x n)).
- :func:`fast_condensed_nearest_neighbour`: FCNN1 (Angiulli, 2007), order-independent and
  much faster: start from the sample nearest each class centroid; in each round, every
  kept sample adds the nearest misclassified sample of its Voronoi cell; stop when none is
  misclassified. Returns the samples in the order they were added, so a prefix is a
  smaller selection.
- :func:`reduction_curve`: accuracy on held-out samples against subset size, for random
  (stratified) subsets and the two selections, so one sees what a 10x smaller set costs.

All return indices; nothing is deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from smartset._random import resolve_rng
from smartset.clean._validation import CleanInputError, check_features, check_labels

__all__ = ["condensed_nearest_neighbour", "fast_condensed_nearest_neighbour",
           "stratified_subset", "reduction_curve", "nearest_neighbour_accuracy",
           "workspace_reduction"]


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(axis=1)[:, None] - 2.0 * a @ b.T + (b * b).sum(axis=1)[None, :]
    return np.maximum(d, 0.0)


def condensed_nearest_neighbour(labels: np.ndarray, features: np.ndarray, *,
                                seed=None, max_passes: int = 50) -> np.ndarray:
    """Hart's condensed nearest neighbour: indices of the kept samples, in the order kept.

    ``labels`` ``(n,)`` int, ``features`` ``(n, d)``; ``seed`` orders the visits (int,
    Generator or None)."""
    labels = check_labels(labels)
    x = check_features(features, len(labels)).astype(np.float64)
    n = len(labels)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = resolve_rng(seed).permutation(n)
    kept = [int(order[0])]
    best = _sq_dist(x, x[order[:1]])[:, 0]
    best_label = np.full(n, labels[order[0]])
    is_kept = np.zeros(n, dtype=bool)
    is_kept[order[0]] = True
    for _ in range(max_passes):
        added = False
        for i in order:
            if is_kept[i] or best_label[i] == labels[i]:
                continue
            kept.append(int(i))
            is_kept[i] = True
            added = True
            d = _sq_dist(x, x[i:i + 1])[:, 0]
            closer = d < best
            best[closer] = d[closer]
            best_label[closer] = labels[i]
        if not added:
            break
    return np.asarray(kept, dtype=np.int64)


def fast_condensed_nearest_neighbour(labels: np.ndarray, features: np.ndarray, *,
                                     max_rounds: int = 1000) -> np.ndarray:
    """FCNN1 (Angiulli, 2007): indices of the kept samples in the order added
    (deterministic; ties to the lower index)."""
    labels = check_labels(labels)
    x = check_features(features, len(labels)).astype(np.float64)
    n = len(labels)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    seeds = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        centroid = x[members].mean(axis=0, keepdims=True)
        seeds.append(int(members[np.argmin(_sq_dist(x[members], centroid)[:, 0])]))
    kept: list[int] = []
    best = np.full(n, np.inf)
    nearest = np.full(n, -1, dtype=np.int64)
    delta = np.asarray(seeds, dtype=np.int64)
    for _ in range(max_rounds):
        if delta.size == 0:
            break
        kept.extend(delta.tolist())
        for start in range(0, len(delta), 256):
            block = delta[start:start + 256]
            d = _sq_dist(x, x[block])
            j = d.argmin(axis=1)
            dj = d[np.arange(n), j]
            closer = dj < best
            best[closer] = dj[closer]
            nearest[closer] = block[j[closer]]
        best[np.asarray(kept)] = 0.0
        nearest[np.asarray(kept)] = np.asarray(kept)
        wrong = np.flatnonzero(labels[nearest] != labels)
        if wrong.size == 0:
            break
        # the representative of each cell: its misclassified member nearest the kept sample
        cell_order = np.lexsort((wrong, best[wrong], nearest[wrong]))
        cells = nearest[wrong][cell_order]
        first = np.r_[True, cells[1:] != cells[:-1]]
        delta = np.unique(wrong[cell_order][first])
    return np.asarray(kept, dtype=np.int64)


def stratified_subset(labels: np.ndarray, size: int, *, seed=None) -> np.ndarray:
    """``size`` indices drawn without replacement, each class in proportion (at least one
    sample of every class when ``size`` allows)."""
    labels = check_labels(labels)
    rng = resolve_rng(seed)
    n = len(labels)
    size = int(np.clip(size, 0, n))
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.maximum(np.floor(counts * size / max(n, 1)).astype(int), min(1, size // max(len(classes), 1)))
    quota = np.minimum(quota, counts)
    extra = size - quota.sum()
    if extra > 0:
        room = counts - quota
        order = rng.permutation(len(classes))
        for c in order:
            take = min(room[c], extra)
            quota[c] += take
            extra -= take
            if extra == 0:
                break
    picked = [rng.choice(np.flatnonzero(labels == c), q, replace=False)
              for c, q in zip(classes, quota) if q > 0]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def nearest_neighbour_accuracy(train_features, train_labels, test_features, test_labels) -> float:
    """Held-out accuracy of a 1-NN classifier (FAISS, Euclidean)."""
    import faiss

    train = np.ascontiguousarray(train_features, dtype=np.float32)
    test = np.ascontiguousarray(test_features, dtype=np.float32)
    index = faiss.IndexFlatL2(train.shape[1])
    index.add(train)
    _, idx = index.search(test, 1)
    return float(np.mean(np.asarray(train_labels)[idx[:, 0]] == np.asarray(test_labels)))


def reduction_curve(labels: np.ndarray, features: np.ndarray, test_labels: np.ndarray,
                    test_features: np.ndarray, *,
                    fractions: Sequence[float] = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02),
                    methods: Sequence[str] = ("random", "fcnn", "cnn"), seed=0,
                    evaluate: Callable[[np.ndarray], float] | None = None) -> pd.DataFrame:
    """Held-out accuracy against subset size.

    ``random``: a stratified random subset at each of ``fractions``. ``fcnn``: the FCNN
    selection, and its prefixes at the fractions below its size. ``cnn``: Hart's selection
    (one point). ``evaluate(indices) -> accuracy`` scores a subset (default: 1-NN on
    ``features`` against ``test_features``). Returns columns ``method``, ``n``,
    ``fraction``, ``accuracy``, ``seconds`` (the selection's time).
    """
    import time

    labels = check_labels(labels)
    features = check_features(features, len(labels))
    test_labels = check_labels(test_labels)
    test_features = check_features(test_features, len(test_labels), name="test_features")
    unknown = set(methods) - {"random", "fcnn", "cnn"}
    if unknown:
        raise CleanInputError(f"Unknown reduction method(s) {sorted(unknown)}; methods: random, "
                              f"fcnn, cnn.")
    if evaluate is None:
        def evaluate(indices):
            return nearest_neighbour_accuracy(features[indices], labels[indices],
                                              test_features, test_labels)
    rng = resolve_rng(seed)
    n = len(labels)
    rows = []
    if "random" in methods:
        for fraction in fractions:
            idx = stratified_subset(labels, int(round(fraction * n)), seed=rng)
            rows.append(("random", len(idx), len(idx) / n, evaluate(idx), 0.0))
    for name, select in (("fcnn", lambda: fast_condensed_nearest_neighbour(labels, features)),
                         ("cnn", lambda: condensed_nearest_neighbour(labels, features, seed=rng))):
        if name not in methods:
            continue
        started = time.perf_counter()
        chosen = select()
        seconds = time.perf_counter() - started
        rows.append((name, len(chosen), len(chosen) / n, evaluate(chosen), seconds))
        if name == "fcnn":
            for fraction in fractions:
                size = int(round(fraction * n))
                if size < len(chosen) and size >= len(np.unique(labels)):
                    prefix = chosen[:size]
                    rows.append((name, size, size / n, evaluate(prefix), seconds))
    frame = pd.DataFrame(rows, columns=["method", "n", "fraction", "accuracy", "seconds"])
    return frame.sort_values(["method", "n"], ascending=[True, False]).reset_index(drop=True)


def workspace_reduction(ws, version: str | None = None, *, test_fraction: float = 0.2,
                        seed: int = 0, save_version: str | None = None) -> dict:
    """:func:`reduction_curve` of the labeled samples of ``version`` on the audit's
    embeddings: held-out 1-NN accuracy against subset size. The held-out samples are the
    test/val split, else a ``test_fraction`` drawn with ``seed``. With ``save_version``, the
    FCNN selection plus the held-out samples is frozen as that version. Returns
    ``n_train``, ``n_test``, ``curve`` (records) and ``version``. Raises
    :class:`~smartset.errors.EmptyDataError` when there is no audit yet."""
    from smartset.audit import embeddings
    from smartset.errors import EmptyDataError

    samples = ws.samples(version)
    samples = samples[samples["label"].notna()].reset_index(drop=True)
    try:
        found, vectors = embeddings(ws, list(samples["id"]))
    except (EmptyDataError, LookupError, OSError) as error:  # no audit yet
        raise EmptyDataError(f"Prototype selection runs on the audit's embeddings, and there "
                             f"are none yet ({type(error).__name__}: {error}): run "
                             f"'smartset audit' first.") from None
    samples = samples.set_index("id").loc[list(found)].reset_index()
    classes = sorted(samples["label"].unique())
    codes = samples["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int64)
    test = samples["split"].isin(["test", "val"]).to_numpy()
    if not test.any() or test.all():
        test = resolve_rng(seed).random(len(samples)) < test_fraction
    curve = reduction_curve(codes[~test], vectors[~test], codes[test], vectors[test], seed=seed)
    result = {"n_train": int((~test).sum()), "n_test": int(test.sum()),
              "curve": curve.to_dict("records"), "version": None}
    if save_version:
        chosen = fast_condensed_nearest_neighbour(codes[~test], vectors[~test])
        ids = list(samples["id"][~test].iloc[chosen]) + list(samples["id"][test])
        result["version"] = ws.create_version(save_version, sample_ids=ids,
                                              description="FCNN prototype selection")["name"]
    return result
