"""Honest splits: every split, fold and leakage check groups samples by lineage (an
original and its augmented copies), by content and by the reference audit's duplicate sets
(:func:`duplicate_groups`), so no copy of a sample is on both sides."""

from __future__ import annotations


import numpy as np

from smartset.learn.crossval import fold_ids, groups_in_row_order
from smartset.learn.data import LoadedData
from smartset.learn.errors import LearnError


_HELD_OUT = ("test", "val", "valid", "validation")


def lineage_roots(ws, ids=None) -> dict[str, str]:
    """The lineage root of each sample: the original an augmented (or oversampled) copy was
    made from, following chains of copies of copies; an original is its own root.
    ``ids``: the samples to answer for (default: every derived sample of the catalog; a
    sample missing from the answer is an original)."""
    parent = ws.origins()

    def root(sid: str) -> str:
        seen = set()
        while sid in parent and sid not in seen:
            seen.add(sid)
            sid = parent[sid]
        return sid

    wanted = parent.keys() if ids is None else (str(i) for i in ids)
    return {sid: root(sid) for sid in wanted}


def derived_mask(ws, ids) -> np.ndarray:
    """``True`` for each of ``ids`` that smartset derived from another sample (augmented or
    oversampled copies: a row in the catalog's ``lineage``)."""
    derived = set(ws.origins())
    return np.array([str(i) in derived for i in ids], dtype=bool)


def duplicate_groups(ws, ids) -> np.ndarray:
    """A group key per sample: samples of one lineage (an original and every copy derived
    from it), samples with the same bytes, and samples in one duplicate set of the newest
    audit share a key, transitively, so that they land on the same side of every split,
    fold and leakage check."""
    ids = list(ids)
    roots = lineage_roots(ws, ids)
    all_roots = lineage_roots(ws)
    parent = {r: r for r in roots.values()}  # the union-find runs over lineage roots

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(members):
        members = [m for m in {all_roots.get(m, m) for m in members} if m in parent]
        for other in members[1:]:
            parent[find(other)] = find(members[0])

    by_sha: dict[str, list[str]] = {}
    for sid, sha in ws.content_hashes(available_only=False).items():
        by_sha.setdefault(sha, []).append(sid)
    for members in by_sha.values():
        if len(members) > 1:
            union(members)
    from smartset.audit.store import duplicate_sets

    for members in duplicate_sets(ws).values():  # the reference audit's sets
        union(members)
    return np.array([find(roots[str(s)]) for s in ids], dtype=object)


def split_holdout(data: LoadedData, groups: np.ndarray, *, test_fraction: float, seed: int,
                  derived: np.ndarray | None = None, include_derived: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, str]:
    """Training and held-out rows: the version's test split when it has one, else a seeded
    stratified ``test_fraction`` of the ``groups`` (:func:`duplicate_groups`: a lineage, its
    copies and duplicates are one group, kept on one side).

    ``derived`` (:func:`derived_mask`): the rows that are augmented copies. They are never
    scored (the held-out rows are originals) unless ``include_derived``; copies of held-out
    samples are not trained on either. Without ``derived``, every row counts as an original.
    """
    derived = np.zeros(len(data), dtype=bool) if derived is None else np.asarray(derived, bool)
    keys = groups.astype(str)
    held = np.isin(data.splits, _HELD_OUT)
    if held.any() and (~held).any():
        is_test, how = held, "the version's test split"
    else:
        if not 0 < test_fraction < 1:
            raise LearnError(f"test_fraction must be in (0, 1), got {test_fraction}")
        rng = np.random.default_rng(seed)
        group_index, count = groups_in_row_order(keys)  # location-independent numbering
        has_original = np.zeros(count, dtype=bool)
        has_original[group_index[~derived]] = True
        strata = data.labels if data.targets is None else np.zeros(len(data), dtype=object)
        test_groups = set()
        for value in sorted(set(strata[~derived].tolist()), key=str):
            rows = np.flatnonzero((strata == value) & ~derived)
            candidates = rng.permutation(np.unique(group_index[rows]))
            take = max(1, int(round(len(candidates) * test_fraction))) if len(candidates) > 1 else 0
            test_groups.update(candidates[:take].tolist())
        is_test = np.isin(group_index, list(test_groups)) & has_original[group_index]
        how = (f"a {test_fraction:.0%} stratified hold-out (lineages and duplicates kept "
               f"together, seed {seed})")
    test_keys = set(keys[is_test & ~derived].tolist())
    # copies of held-out samples: neither trained on nor (unless asked) scored
    copies_of_test = derived & ~is_test & np.isin(keys, list(test_keys))
    train = ~is_test & ~copies_of_test
    test = is_test & (~derived | include_derived)
    left_out = int(is_test.sum() - test.sum() + copies_of_test.sum())
    if left_out:
        how += (f"; {left_out} augmented cop{'y' if left_out == 1 else 'ies'} of held-out "
                f"samples left out (only originals are scored)")
    return np.flatnonzero(train), np.flatnonzero(test), how


def _group_folds(codes, groups, folds, seed) -> np.ndarray:
    """Stratified folds over lineage and duplicate groups (:func:`duplicate_groups`: a
    group's members share a fold, so no copy of a sample trains the model that predicts it)."""
    base = fold_ids(codes, folds, seed)
    first: dict = {}
    out = base.copy()
    for row, group in enumerate(groups.tolist()):
        out[row] = first.setdefault(group, base[row])
    return out
