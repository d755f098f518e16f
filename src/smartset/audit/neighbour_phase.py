"""The audit's neighbour phase: exact and near duplicates, outliers, images far from their
class, and class imbalance. It owns its state: the vector files it searches (the features
plan decides which, :mod:`smartset.audit.features`), the neighbour tables, and the
candidate pairs (:mod:`smartset.audit.near_copies`); :func:`neighbour_findings` is its
entry point and writes findings as they are found."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from smartset._memory import give_back_memory
from smartset.audit.checks import robust_fence
from smartset.audit.features import FeaturePlan, aligned_vector_file, backbone_vector_file
from smartset.audit.near_copies import (
    MODE_DENSITY,
    MODE_FLOOR,
    group_complete,
    near_copy_pairs,
    pair_scorer,
)
from smartset.audit.neighbours import group_arrays
from smartset.neighbours import NeighbourTable, search_neighbours
from smartset._progress import step
from smartset.errors import EmptyDataError

if TYPE_CHECKING:
    from smartset.audit.measure_phase import _Samples

__all__ = ["neighbour_findings", "CANDIDATE_SIMILARITY"]

_USED_NEIGHBOURS = 5
"""Neighbours the audit reads: candidates are the 3 nearest, density the 5th, isolation
the mean of 5; a larger ``neighbours`` changes nothing past these, so none are kept."""
_VECTOR_BLOCK = 4096

CANDIDATE_SIMILARITY = {"pixels": 0.85, "aligned pixels": 0.5, "backbone": 0.75}
"""The least embedding similarity of a near-duplicate candidate, per embedding (the
audit's ``candidate_similarity`` replaces it)."""


def describe_group(table: _Samples, audited: np.ndarray, members: list[int]
                    ) -> tuple[list[str], str]:
    rows = audited[members]
    labels = sorted({table.label_names[c] for c in table.label[rows] if c >= 0})
    splits = sorted({table.split_names[c] for c in table.split[rows]})
    scopes = []
    if len(labels) > 1:
        scopes.append("label conflict")
    if len(splits) > 1:
        scopes.append("split leakage")
    if not scopes:
        scopes.append("same class" if labels else "unlabeled")
    detail = []
    if len(labels) > 1:
        detail.append(f"labels {' / '.join(labels)}")
    if len(splits) > 1:
        detail.append(f"splits {' / '.join(splits)}")
    return scopes, ", ".join(detail)


def duplicates(table: _Samples, audited: np.ndarray, exact_pairs, search_vectors,
               candidate_vectors: list, thumbs, *, verification: str, k: int,
               candidate_similarity: list[float], min_similarity: float,
               threshold: float | None, scratch: Path, read_aligned=None):
    """Exact and near duplicate sets (each ``(members, starts)``, see
    :func:`group_arrays`), each near member's best verified similarity (aligned with its
    members), the search over ``search_vectors``, the near-duplicate threshold (median),
    the floor applied, and each image's isolation. Near-duplicate candidates come from
    each of ``candidate_vectors`` (searched apart unless one is ``search_vectors``; each at
    least its ``candidate_similarity`` alike), pooled, are verified
    with the ``verification`` mode and grouped without chaining
    (:func:`~smartset.audit.near_copies.group_complete`)."""
    n = len(audited)
    pairs = np.array(exact_pairs, dtype=np.int64).reshape(-1, 2)
    exact = group_arrays(n, pairs[:, 0], pairs[:, 1])
    members, starts = exact
    exact_group = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    order = np.argsort(members, kind="stable")
    sorted_members, sorted_group = members[order], exact_group[order]

    def exact_set(positions: np.ndarray, missing: int) -> np.ndarray:
        if not len(sorted_members):
            return np.full(len(positions), missing)
        at = np.searchsorted(sorted_members, positions).clip(max=len(sorted_members) - 1)
        return np.where(sorted_members[at] == positions, sorted_group[at], missing)

    table.spill_ids(scratch / f"ids-{os.getpid()}.npy")  # the search and pairs use positions
    give_back_memory()  # SQLite's grouping: freed, not yet handed back
    search, candidates = None, []
    floor = MODE_FLOOR[verification] or min_similarity
    try:
        search = search_neighbours(search_vectors, k,
                                   out=scratch / f"neighbours-{os.getpid()}.bin")
        isolation = isolation_of(search.table)
        give_back_memory()
        for number, vectors in enumerate(candidate_vectors):
            candidates.append(search if vectors is search_vectors else search_neighbours(
                vectors, k, out=scratch / f"candidates{number}-{os.getpid()}.bin"))
        score = pair_scorer(verification, thumbs, read_aligned)
        first, second, value, threshold, limit_of = near_copy_pairs(
            [c.table for c in candidates], score, candidate_similarity=candidate_similarity,
            min_similarity=floor, density_factor=MODE_DENSITY[verification],
            threshold=threshold, scratch=scratch)
        # a pair inside one exact set is that set's business
        keep = exact_set(first, -1) != exact_set(second, -2)
        first, second, value = first[keep], second[keep], value[keep]

        def passes(a: int, b: int) -> float | None:
            """A pair that was no candidate, verified when a merge asks for it."""
            if exact_set(np.array([a]), -1)[0] == exact_set(np.array([b]), -2)[0]:
                return 1.0
            found = float(score(np.array([a]), np.array([b]))[0])
            return found if found >= limit_of(np.array([a]), np.array([b]))[0] else None

        near_members, near_starts, best = group_complete(first, second, value, passes)
    finally:
        for found in {id(s): s for s in [search, *candidates] if s is not None}.values():
            found.table.path.unlink(missing_ok=True)
        give_back_memory()
        table.load_ids()
    return exact, (near_members, near_starts), best, search, threshold, floor, isolation


def isolation_of(neighbours: NeighbourTable, k: int = _USED_NEIGHBOURS) -> np.ndarray:
    """1 - the mean similarity of each image to its ``k`` nearest (float32, NaN without
    any), read block by block."""
    out = np.empty(len(neighbours), dtype=np.float32)
    k = min(k, neighbours.k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an image with no neighbour: NaN
        for start, stop, _, sims in neighbours.blocks():
            finite = np.where(np.isfinite(sims[:, :k]), sims[:, :k], np.nan)
            out[start:stop] = 1.0 - np.nanmean(finite, axis=1)
    return out


def _vector_files(ws, version, table: _Samples, audited: np.ndarray, pixel_file, thumbs,
                  plan: FeaturePlan, scratch: Path, made: list[Path], engine=None):
    """``(search vectors, [(name, candidate vectors)], note, read_aligned)`` for
    ``plan``: the pixel file, a backbone file or an aligned file (and its aligned images'
    reader), each made once (paths appended to ``made``)."""
    files = {"pixels": pixel_file}
    note = read_aligned = None
    if plan.backbone is not None:
        path = scratch / f"backbone-{os.getpid()}.f16"
        made.append(path)
        ids = [table.id(int(a)) for a in audited]
        files[plan.backbone], missing = backbone_vector_file(ws, version, ids, plan.backbone,
                                                             path, engine=engine,
                                                             size=plan.backbone_size)
        if missing:
            note = f"{missing} images could not be decoded for {plan.backbone} (zero vectors)"
    if plan.candidates == "aligned pixels":
        path = scratch / f"aligned-{os.getpid()}.f16"
        made.append(path)
        made.append(Path(f"{path}.img"))
        files["aligned pixels"], read_aligned = aligned_vector_file(thumbs, len(audited), path)
    search = files.get(plan.outliers, pixel_file)  # a trained model's come later
    # backbone candidates are pooled with pixel ones (a few thousand more pairs on sets of
    # photo size), so that a copy the backbone sees differently (a texture whose noise
    # re-encoding removed) is still proposed; aligned pixels stand alone
    pooled = [plan.candidates] + (["pixels"] if plan.backbone is not None else [])
    return search, [(name, files[name]) for name in pooled], note, read_aligned


def neighbour_findings(ws, version, table: _Samples, audited: np.ndarray, pixel_file, thumbs,
                       findings, *, plan: FeaturePlan, exact_pairs, near_given, neighbours,
                       engine=None,
                       candidate_similarity, near_duplicate_similarity, outlier_fence,
                       embedding_model, used: dict, skipped: dict, scratch: Path):
    """Duplicates, outliers and imbalance, written to ``findings`` (a writer with ``add``
    and ``extend``): returns ``(duplicate set counts, search, features)``; adds the
    near-duplicate rule to ``used`` and what was skipped to ``skipped``. ``features``
    describes what each check read (:meth:`FeaturePlan.describe`)."""
    from smartset.audit.measure_phase import _label_series

    def sid(position: int) -> str:
        return table.id(audited[position])

    counts = {"exact_duplicate": 0, "near_duplicate": 0, "label conflict": 0,
              "split leakage": 0}
    search = None
    features = plan.describe()
    k = min(neighbours, _USED_NEIGHBOURS)
    made: list[Path] = []
    try:
        if len(audited) >= 2:
            vectors, candidate_vectors, note, read_aligned = _vector_files(
                ws, version, table, audited, pixel_file, thumbs, plan, scratch, made, engine)
            if note:
                features["note"] = "; ".join(filter(None, [features.get("note"), note]))
            similarity = [candidate_similarity if candidate_similarity is not None else
                          CANDIDATE_SIMILARITY["backbone" if name == plan.backbone else name]
                          for name, _ in candidate_vectors]
            features["near_duplicate"]["candidate_similarity"] = dict(
                zip([name for name, _ in candidate_vectors], similarity))
            step("near copies")  # the audit's bar names the phase it is in
            exact, near, best_sim, search, near_threshold, floor, isolation = duplicates(
                table, audited, exact_pairs, vectors, [v for _, v in candidate_vectors], thumbs,
                verification=plan.verification, k=k, candidate_similarity=similarity,
                read_aligned=read_aligned,
                min_similarity=near_duplicate_similarity, threshold=near_given,
                scratch=scratch)
            used["near_duplicate"] = {
                "property": "verified similarity", "direction": "high",
                "threshold": near_threshold,
                "set_by": ("given" if near_given is not None else
                           "absolute limit" if near_threshold == floor
                           else "local density (median shown)"),
                "absolute": floor, "fence": None, "flagged": int(len(near[0])),
                "features": features["near_duplicate"]["candidates"]}
            _write_sets(table, audited, exact, near, best_sim, near_threshold, findings,
                        counts, sid)
            del exact, near, best_sim
            step("outliers")
            if embedding_model is not None:
                vectors = model_embeddings(ws, version, [sid(i) for i in range(len(audited))],
                                           embedding_model)
                isolation = isolation_of(search_neighbours(vectors, k).table, k)
            findings.extend(outliers(table.label[audited], table.label_names, isolation, k,
                                     vectors, sid, fence=outlier_fence, skipped=skipped))
        else:
            skipped["duplicates"] = skipped["outlier"] = "fewer than 2 images"
    finally:
        for path in made:
            path.unlink(missing_ok=True)
    findings.extend(imbalance(_label_series(table, audited), skipped))
    return counts, search, features


def _write_sets(table, audited, exact, near, best_sim, near_threshold, findings, counts,
                sid) -> None:
    for kind, (members, starts) in (("exact_duplicate", exact), ("near_duplicate", near)):
        what = "same bytes or pixels" if kind == "exact_duplicate" else "near copy"
        for number in range(len(starts) - 1):
            group = members[starts[number]:starts[number + 1]]
            key = f"{kind.split('_')[0]}-{number + 1}"
            scopes, detail = describe_group(table, audited, group)
            counts[kind] += 1
            for scope in scopes:
                counts[scope] = counts.get(scope, 0) + 1
            reason = duplicate_reason(what, len(group), scopes, detail)
            for at, m in enumerate(group, start=int(starts[number])):
                findings.add({
                    "kind": kind, "sample_id": sid(int(m)),
                    "score": 1.0 if kind == "exact_duplicate" else float(best_sim[at]),
                    "threshold": None if kind == "exact_duplicate" else near_threshold,
                    "group": key, "reason": reason})


def duplicate_reason(what: str, size: int, scopes: list[str], detail: str) -> str:
    """A duplicate finding's reason; :func:`_duplicate_scopes` reads the scopes back."""
    return f"{what} in a set of {size} ({', '.join(scopes)}{': ' + detail if detail else ''})"


def model_source(model) -> str | None:
    """How the run config names an embedding model: where it was loaded from (a run id or
    checkpoint, ``loaded_from_``), else its class. A run id or path given in place of the
    model is refused with the call that loads it."""
    if model is None:
        return None
    if isinstance(model, (str, int, Path)) or not hasattr(model, "transform"):
        raise ValueError(
            f"embedding_model must be a fitted model (with transform), got {model!r}: load a "
            f"run or checkpoint with smartset.learn.load_model(ws, {str(model)!r}) (the "
            f"command line's --embedding-model does it for you).")
    return str(getattr(model, "loaded_from_", None) or type(model).__name__)


def model_embeddings(ws, version, ids: list[str], model) -> np.ndarray:
    """A fitted model's features of the audited images, unit-normed, in ``ids`` order; the
    images are decoded and resized as learn decodes them (:mod:`smartset.data`)."""
    from smartset.data import ImageDataset
    from smartset.errors import ImageDecodeError

    channels, height, width = model.input_shape_
    frame = ws.samples(version).set_index("id")
    data = ImageDataset([frame.at[sid, "path"] for sid in ids], ids=ids,
                        mode="L" if channels == 1 else "RGB", size=(height, width))
    images, failed = [], []
    for index, sid in enumerate(ids):
        try:
            images.append(data[index][0].numpy().transpose(1, 2, 0))
        except (ImageDecodeError, OSError, ValueError):  # named below
            failed.append(sid)
    if failed:
        raise EmptyDataError(f"{len(failed)} audited images could not be decoded for the "
                             f"embedding model (e.g. {failed[0]}).")
    stacked = np.stack(images)
    features = model.transform(stacked)  # N x H x W x C, as learn's arrays
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)


def outliers(labels: np.ndarray, names: list[str], isolation: np.ndarray, k: int, vectors,
              sid, *, fence: float, skipped: dict) -> list[dict]:
    """Images far from their ``k`` nearest neighbours (``isolation``), and images far from
    their class centre (centres accumulated over blocks of ``vectors``, never all vectors
    at once)."""
    findings = []
    isolation = pd.Series(isolation, copy=False)
    limit = robust_fence(isolation, "high", fence)
    for i in np.flatnonzero(isolation.to_numpy() > limit):
        findings.append({"kind": "outlier", "sample_id": sid(int(i)),
                         "score": float(isolation.iloc[i]), "threshold": limit,
                         "reason": (f"unlike the rest: mean similarity to its {k} nearest images "
                                    f"{1 - isolation.iloc[i]:.2f}, below {1 - limit:.2f}")})
    del isolation
    labeled = labels >= 0
    if labeled.sum() == 0 or len(np.unique(labels[labeled])) < 2:
        skipped["class_outlier"] = "needs labels in 2 or more classes"
        return findings
    counts = np.bincount(labels[labeled], minlength=len(names))
    # float32 sums row after row, carried from block to block: the very sum (and mean)
    # NumPy takes over all of a class's rows at once.
    sums = np.zeros((len(names), vectors.shape[1]), dtype=np.float32)
    block = _VECTOR_BLOCK
    for start in range(0, len(labels), block):
        part = np.asarray(vectors[start:start + block], dtype=np.float32)
        codes = labels[start:start + block]
        for code in np.unique(codes[codes >= 0]):
            sums[code] = np.concatenate([sums[code][None], part[codes == code]]).sum(axis=0)
    centres = np.zeros((len(names), vectors.shape[1]), dtype=np.float32)
    usable = np.zeros(len(names), dtype=bool)
    for code in range(len(names)):
        if counts[code] < 10:
            continue
        centroid = sums[code] / np.float32(counts[code])
        norm = float(np.linalg.norm(centroid))
        if norm == 0:
            continue
        centres[code], usable[code] = centroid / norm, True
    similarity = np.full(len(labels), np.nan, dtype=np.float32)
    for start in range(0, len(labels), block):
        codes = labels[start:start + block]
        part = None
        for code in np.unique(codes[codes >= 0]):
            if usable[code]:
                part = np.asarray(vectors[start:start + block], dtype=np.float32) if part is None else part
                mine = np.flatnonzero(codes == code)
                similarity[start + mine] = part[mine] @ centres[code]
    for code in sorted(np.flatnonzero(usable), key=lambda c: names[c]):
        rows = np.flatnonzero(labels == code)
        values = pd.Series(similarity[rows], index=rows)
        limit = robust_fence(values, "low", fence)
        for row in values.index[values < limit]:
            findings.append({"kind": "class_outlier", "sample_id": sid(int(row)),
                             "score": float(1 - values[row]), "threshold": float(1 - limit),
                             "reason": (f"far from its class '{names[code]}': similarity to the "
                                        f"class centre {values[row]:.2f}, below {limit:.2f}")})
    return findings


def imbalance(labels: pd.Series, skipped: dict) -> list[dict]:
    counts = labels.dropna().value_counts()
    if len(counts) < 2:
        skipped["class_imbalance"] = "needs labels in 2 or more classes"
        return []
    largest, median = int(counts.max()), float(counts.median())
    findings = []
    for label, count in counts.items():
        ratio = largest / count
        if count < 0.5 * median or ratio >= 5:
            findings.append({"kind": "class_imbalance", "sample_id": None,
                             "score": float(count / largest), "threshold": 0.5,
                             "group": str(label),
                             "reason": (f"class '{label}' has {count} images, {ratio:.1f}x fewer "
                                        f"than '{counts.index[0]}' ({largest}); median class "
                                        f"size {median:.0f}")})
    return findings

