"""Nearest neighbours over embeddings, and the duplicate sets found with them.

Exact cosine kNN: FAISS (``IndexFlatIP``) when installed (the ``[ray]`` extra), else blocked
NumPy matrix products, whose memory is ``block x n`` floats whatever the number of images.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["knn", "near_duplicate_pairs", "group_pairs"]

_BLOCK = 256


def knn(embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other rows of each row by cosine similarity (rows unit-normed).

    Returns ``(indices, similarities)``, both ``n x k``, nearest first; rows with fewer
    than ``k`` others are padded with index -1 and similarity -inf.
    """
    n = len(embeddings)
    k_eff = min(k, max(n - 1, 0))
    indices = np.full((n, k), -1, dtype=np.int64)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    if k_eff == 0:
        return indices, sims
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None:
        data = np.ascontiguousarray(embeddings, dtype=np.float32)
        index = faiss.IndexFlatIP(data.shape[1])
        index.add(data)
        found_sims, found = index.search(data, k_eff + 1)
        for row in range(n):
            keep = found[row] != row
            indices[row, :k_eff] = found[row][keep][:k_eff]
            sims[row, :k_eff] = found_sims[row][keep][:k_eff]
        return indices, sims
    matrix = np.asarray(embeddings, dtype=np.float32)
    for start in range(0, n, _BLOCK):
        block = matrix[start:start + _BLOCK] @ matrix.T
        rows = np.arange(start, min(start + _BLOCK, n))
        block[np.arange(len(rows)), rows] = -np.inf  # not its own neighbour
        top = np.argpartition(-block, k_eff - 1, axis=1)[:, :k_eff]
        top_sims = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        indices[rows, :k_eff] = np.take_along_axis(top, order, axis=1)
        sims[rows, :k_eff] = np.take_along_axis(top_sims, order, axis=1)
    return indices, sims


# Windows of one image, each compared with a window of the other: centred crops against
# the whole (a cropped or padded copy), and shifted windows against the centred window of
# the same size (a translated copy). As (scale, x offset, y offset), offsets in sides.
_SHIFT_SCALE = 0.94
_WINDOWS = ([(scale, 0.0, 0.0) for scale in (1.0, 0.975, 0.95, 0.925, 0.9)]
            + [(_SHIFT_SCALE, dx, dy) for dx in (-0.03, 0.0, 0.03) for dy in (-0.03, 0.0, 0.03)
               if dx or dy])
_REFERENCE = [(1.0, 0.0, 0.0), (_SHIFT_SCALE, 0.0, 0.0)]
_REFERENCE_OF = np.array([0 if scale != _SHIFT_SCALE else 1 for scale, _, _ in _WINDOWS])
_VERIFY_SIDE = 24
_CHUNK = 256


def _area_matrix(side: int, scale: float, offset: float, out: int) -> np.ndarray:
    """``out x side`` weights that take the ``scale`` share of ``side`` pixels, centred
    then moved by ``offset`` (a share of the side), and average it down to ``out`` pixels
    (area resampling), as one matrix product."""
    size = max(1.0, side * scale)
    start = (side - size) / 2.0 + offset * side
    edges = start + np.arange(out + 1) * size / out
    pixels = np.arange(side)
    overlap = (np.minimum(edges[1:, None], pixels[None, :] + 1)
               - np.maximum(edges[:-1, None], pixels[None, :])).clip(min=0.0)
    return (overlap / np.maximum(overlap.sum(axis=1, keepdims=True), 1e-9)).astype(np.float32)


def crop_vectors(thumbs: np.ndarray, windows=_WINDOWS) -> np.ndarray:
    """``n x len(windows) x 576``: each window (scale, x offset, y offset) of gray
    thumbnails (``n x s x s``), resampled to 24 x 24, centred and unit-normed.

    Separable: one matrix product resamples every row for all horizontal windows, then one
    small product per window resamples the columns."""
    thumbs = np.asarray(thumbs, dtype=np.float32)
    n, side = len(thumbs), thumbs.shape[1]
    horizontal = sorted({(scale, dx) for scale, dx, _ in windows})
    column_of = {key: k for k, key in enumerate(horizontal)}
    stacked = np.concatenate([_area_matrix(side, scale, dx, _VERIFY_SIDE)
                              for scale, dx in horizontal])            # (H*24) x side
    rows_done = thumbs.reshape(n * side, side) @ stacked.T                # (n*side) x (H*24)
    rows_done = rows_done.reshape(n, side, len(horizontal), _VERIFY_SIDE)
    out = np.empty((n, len(windows), _VERIFY_SIDE * _VERIFY_SIDE), dtype=np.float32)
    for w, (scale, dx, dy) in enumerate(windows):
        vertical = _area_matrix(side, scale, dy, _VERIFY_SIDE)
        vectors = np.matmul(vertical, rows_done[:, :, column_of[(scale, dx)], :]).reshape(n, -1)
        vectors -= vectors.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        out[:, w] = vectors / np.where(norms > 1e-6, norms, 1.0)
    return out


def verified_similarity(indices: np.ndarray, mask: np.ndarray, read_thumbs
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the kNN pairs ``(i, indices[i, c])`` where ``mask[i, c]``: the best correlation
    of a window of image i (centred crops at scales 1 to 0.9, and small shifts) with the
    whole of its neighbour, so a cropped, padded or shifted copy still lines up. ``read_thumbs(rows)`` returns the gray
    thumbnails of those images. Returns ``(first, second, similarity)`` with first <
    second, one entry per pair, the better of its two directions. Rows are done in chunks,
    so memory does not grow with the number of images."""
    firsts, seconds, values = [], [], []
    for start in range(0, len(indices), _CHUNK):
        rows = np.arange(start, min(start + _CHUNK, len(indices)))
        local_rows, cols = np.nonzero(mask[rows])
        if local_rows.size == 0:
            continue
        partners = indices[rows[local_rows], cols]
        unique_rows, row_position = np.unique(local_rows, return_inverse=True)
        crops = crop_vectors(read_thumbs(rows[unique_rows]))
        unique_partners, partner_position = np.unique(partners, return_inverse=True)
        reference = crop_vectors(read_thumbs(unique_partners), windows=_REFERENCE)
        best = np.full(len(partners), -1.0, dtype=np.float32)
        for w, ref in enumerate(_REFERENCE_OF):  # one window at a time: no pairs x windows copy
            scores = np.einsum("pd,pd->p", crops[row_position, w], reference[partner_position, ref])
            np.maximum(best, scores, out=best)
        mine = rows[local_rows]
        firsts.append(np.minimum(mine, partners))
        seconds.append(np.maximum(mine, partners))
        values.append(best)
    if not values:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    frame = pd.DataFrame({"a": np.concatenate(firsts), "b": np.concatenate(seconds),
                          "s": np.concatenate(values)}).groupby(["a", "b"], sort=True)["s"].max()
    return (frame.index.get_level_values(0).to_numpy(), frame.index.get_level_values(1).to_numpy(),
            frame.to_numpy())


def near_duplicate_pairs(indices: np.ndarray, sims: np.ndarray, read_thumbs, *,
                         candidate_similarity: float, min_similarity: float,
                         density_factor: float = 0.1, density_rank: int = 5,
                         per_image: int = 3, threshold: float | None = None
                         ) -> tuple[list[tuple[int, int, float]], float]:
    """Pairs ``(i, j, similarity)``, ``i < j``, that are near copies, and the median
    threshold applied.

    Candidates are each image's ``per_image`` nearest neighbours with embedding similarity
    at least ``candidate_similarity``, verified on thumbnails (:func:`verified_similarity`);
    a copy is its original's nearest neighbour, or nearly. Each pair's threshold adapts to
    how crowded its neighbourhood is: at least ``min_similarity``, and closer to 1 than a
    share (``density_factor``) of the verified distance from each image to its
    ``density_rank``-th neighbour. Among many look-alikes (handwritten ones) only a copy
    far closer than the rest passes; among distinct photos, ``min_similarity`` rules. A
    given ``threshold`` replaces the rule.
    """
    candidates = (sims >= candidate_similarity) & (indices >= 0)
    candidates[:, per_image:] = False
    first, second, similarity = verified_similarity(indices, candidates, read_thumbs)
    if first.size == 0:
        return [], threshold if threshold is not None else min_similarity
    if threshold is not None:
        limits = np.full(first.shape, float(threshold))
    else:
        rank = min(density_rank, indices.shape[1]) - 1
        rows = np.unique(np.concatenate([first, second]))
        reference = np.zeros_like(indices, dtype=bool)
        reference[rows, rank] = indices[rows, rank] >= 0
        a, b, s = verified_similarity(indices, reference, read_thumbs)
        lookup = dict(zip(zip(a.tolist(), b.tolist()), s.tolist()))
        distance = np.ones(len(indices))
        for row in rows:
            partner = indices[row, rank]
            if partner >= 0:
                key = (min(row, partner), max(row, partner))
                distance[row] = 1.0 - lookup.get(key, 0.0)
        local = (distance[first] + distance[second]) / 2.0
        limits = np.maximum(min_similarity, 1.0 - density_factor * local)
    keep = similarity >= limits
    pairs = [(int(i), int(j), float(v)) for i, j, v in zip(first[keep], second[keep], similarity[keep])]
    return pairs, float(np.median(limits))


def group_pairs(n: int, pairs) -> list[list[int]]:
    """Connected components (union-find) of the pairs: the duplicate sets, largest first."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j, *_ in pairs:
        root_i, root_j = find(i), find(j)
        if root_i != root_j:
            parent[max(root_i, root_j)] = min(root_i, root_j)
    groups: dict[int, list[int]] = {}
    for i, j, *_ in pairs:
        for member in (i, j):
            groups.setdefault(find(member), [])
    for member in range(n):
        root = find(member)
        if root in groups:
            groups[root].append(member)
    return sorted((sorted(set(g)) for g in groups.values()), key=lambda g: (-len(g), g[0]))
