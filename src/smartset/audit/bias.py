"""Bias probes: does one image property alone predict the label?

For each property, a one-feature classifier (the majority label of each quantile bin) is
scored by stratified k-fold cross-validation and compared with the majority-class
baseline, the frequency of the most common label. A property that predicts the label well
above that baseline is a shortcut a model can learn instead of the content ("dark images
are 'bar'"): the data set should be fixed, or the model tested against it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from smartset._random import SeedLike, resolve_rng

__all__ = ["bias_probe", "error_probe", "PROBED_PROPERTIES"]

PROBED_PROPERTIES = ("brightness", "contrast", "dark_fraction", "saturated_fraction",
                     "sharpness", "entropy", "colourfulness", "grayscale", "width", "height",
                     "aspect_ratio", "megapixels", "file_bytes", "jpeg_quality")


def _fold_ids(labels: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Stratified fold assignment: each class spread evenly over the folds."""
    fold = np.empty(len(labels), dtype=np.int64)
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        rng.shuffle(members)
        fold[members] = np.arange(len(members)) % folds
    return fold


def _bin_predict(train_x, train_y, test_x, bins: int, classes: np.ndarray) -> np.ndarray:
    edges = np.unique(np.quantile(train_x, np.linspace(0, 1, bins + 1)[1:-1]))
    train_bin = np.searchsorted(edges, train_x, side="right")
    test_bin = np.searchsorted(edges, test_x, side="right")
    counts = np.zeros((len(edges) + 1, len(classes)))
    np.add.at(counts, (train_bin, train_y), 1)
    overall = counts.sum(axis=0).argmax()
    best = np.where(counts.sum(axis=1) > 0, counts.argmax(axis=1), overall)
    return best[test_bin]


def bias_probe(values: pd.DataFrame, labels, *, folds: int = 5, bins: int = 10,
               min_skill: float = 0.2, min_gain: float = 0.05, seed: SeedLike = 0,
               max_rows: int | None = 200_000) -> pd.DataFrame:
    """Score how well each column of ``values`` alone predicts ``labels``.

    Returns one row per property: ``accuracy`` (cross-validated), ``baseline`` (frequency
    of the majority label), ``gain`` (accuracy - baseline), ``skill`` (gain / (1 -
    baseline): the share of the possible improvement the property reaches), ``flagged``
    (skill >= ``min_skill`` and gain >= ``min_gain``), and ``lift_by_class``: for each
    label, how many times more often the property-only classifier is right when it
    predicts that label than the label's frequency ("2.1x better than chance"). Rows with
    a missing value or label are left out of that property's probe. Above ``max_rows``
    rows, a random ``max_rows`` of them (drawn with ``seed``) stand for all: the
    accuracies are then estimates within a few tenths of a percent, and memory stays
    bounded.
    """
    labels = pd.Series(labels, index=values.index)
    rng = resolve_rng(seed)
    sample = (np.sort(rng.choice(len(labels), size=max_rows, replace=False))
              if max_rows is not None and len(labels) > max_rows else None)
    if sample is not None:
        labels = labels.iloc[sample]
    # The labels as codes of their sorted names, once (not once a property).
    known = labels.notna().to_numpy()
    names, codes = np.unique(labels[known].astype(str).to_numpy(), return_inverse=True)
    label_code = np.full(len(labels), -1, dtype=np.int64)
    label_code[known] = codes
    del codes, labels
    rows = []
    for name in values.columns:
        # one column at a time: values may be read from disk
        x = values[name].to_numpy(dtype=float)
        if sample is not None:
            x = x[sample]
        mask = ~np.isnan(x) & known
        x = x[mask]
        present, y = np.unique(label_code[mask], return_inverse=True)
        classes = names[present]
        if len(classes) < 2 or len(x) < 2 * folds or np.unique(x).size < 2:
            continue
        fold = _fold_ids(y, folds, rng)
        predicted = np.empty_like(y)
        for f in range(folds):
            train, test = fold != f, fold == f
            predicted[test] = _bin_predict(x[train], y[train], x[test], bins, classes)
        prior = np.bincount(y, minlength=len(classes)) / len(y)
        accuracy = float((predicted == y).mean())
        baseline = float(prior.max())
        lift = {}
        for c, label in enumerate(classes):
            chosen = predicted == c
            if chosen.sum() >= 5:
                lift[str(label)] = float((y[chosen] == c).mean() / prior[c])
        gain = accuracy - baseline
        skill = gain / (1.0 - baseline) if baseline < 1.0 else 0.0
        rows.append({"property": name, "n": int(len(y)), "accuracy": accuracy,
                     "baseline": baseline, "gain": gain, "skill": skill,
                     "flagged": bool(skill >= min_skill and gain >= min_gain),
                     "lift_by_class": lift})
    columns = ["property", "n", "accuracy", "baseline", "gain", "skill", "flagged", "lift_by_class"]
    return pd.DataFrame(rows, columns=columns).sort_values("skill", ascending=False,
                                                          ignore_index=True)


def error_probe(values: pd.DataFrame, correct, *, bins: int = 5, min_ratio: float = 2.0,
                min_errors: int = 3, z: float = 3.0) -> pd.DataFrame:
    """Which properties predict a model's errors: the error rate per quantile bin of each
    property against the overall rate.

    ``correct``: per sample, whether the model (out-of-fold) was right (NaN where it is not
    known: left out). Returns one row per property with its worst bin (``low``/``high``
    edges), that bin's ``n``, ``errors``, ``error_rate``, the ``overall`` rate, their
    ``ratio``, and ``flagged``: the ratio is at least ``min_ratio``, the bin holds
    ``min_errors`` errors or more, and the excess is ``z`` binomial standard errors above
    the overall rate (not chance).
    """
    correct = pd.Series(correct, index=values.index)
    rows = []
    for name in values.columns:
        column = values[name]
        mask = column.notna() & correct.notna()
        x = column[mask].astype(float).to_numpy()
        wrong = ~correct[mask].astype(bool).to_numpy()
        if len(x) < 5 * bins or np.unique(x).size < bins or not wrong.any():
            continue
        overall = float(wrong.mean())
        edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
        which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
        best = None
        for b in range(len(edges) - 1):
            inside = which == b
            n, errors = int(inside.sum()), int(wrong[inside].sum())
            if not n:
                continue
            rate = errors / n
            excess = (rate - overall) / np.sqrt(overall * (1 - overall) / n) if 0 < overall < 1 else 0.0
            if best is None or rate > best["error_rate"]:
                best = {"property": name, "low": float(edges[b]), "high": float(edges[b + 1]),
                        "n": n, "errors": errors, "error_rate": rate, "overall": overall,
                        "ratio": rate / overall, "z": float(excess)}
        if best is not None:
            best["flagged"] = bool(best["ratio"] >= min_ratio and best["errors"] >= min_errors
                                   and best["z"] >= z)
            rows.append(best)
    columns = ["property", "low", "high", "n", "errors", "error_rate", "overall", "ratio", "z",
               "flagged"]
    return pd.DataFrame(rows, columns=columns).sort_values("ratio", ascending=False,
                                                          ignore_index=True)
