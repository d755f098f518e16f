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


_CROP_SCALES = (1.0, 0.975, 0.95, 0.925, 0.9)
_VERIFY_SIDE = 24
_CHUNK = 512


def _area_matrix(side: int, scale: float, out: int) -> np.ndarray:
    """``out x side`` weights that crop the centred ``scale`` share of ``side`` pixels and
    average it down to ``out`` pixels (area resampling), as one matrix product."""
    size = max(1.0, side * scale)
    start = (side - size) / 2.0
    edges = start + np.arange(out + 1) * size / out
    pixels = np.arange(side)
    overlap = (np.minimum(edges[1:, None], pixels[None, :] + 1)
               - np.maximum(edges[:-1, None], pixels[None, :])).clip(min=0.0)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def crop_vectors(thumbs: np.ndarray, scales=_CROP_SCALES) -> np.ndarray:
    """``n x len(scales) x 576``: centred crops of gray thumbnails (``n x s x s``) at each
    scale, resampled to 24 x 24, centred and unit-normed."""
    thumbs = np.asarray(thumbs, dtype=np.float32)
    out = np.empty((len(thumbs), len(scales), _VERIFY_SIDE * _VERIFY_SIDE), dtype=np.float32)
    for k, scale in enumerate(scales):
        matrix = _area_matrix(thumbs.shape[1], scale, _VERIFY_SIDE)
        vectors = (matrix @ thumbs @ matrix.T).reshape(len(thumbs), -1)
        vectors -= vectors.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        out[:, k] = vectors / np.where(norms > 1e-6, norms, 1.0)
    return out


def verified_similarity(indices: np.ndarray, mask: np.ndarray, read_thumbs
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the kNN pairs ``(i, indices[i, c])`` where ``mask[i, c]``: the best correlation
    of a centred crop of image i (scales 1 to 0.9) with the whole of its neighbour, so a
    cropped or padded copy still lines up. ``read_thumbs(rows)`` returns the gray
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
        whole = crop_vectors(read_thumbs(unique_partners), scales=(1.0,))[:, 0]
        best = np.einsum("psd,pd->ps", crops[row_position], whole[partner_position]).max(axis=1)
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
                         density_factor: float = 0.1, threshold: float | None = None,
                         seed: int = 0) -> tuple[list[tuple[int, int, float]], float]:
    """Pairs ``(i, j, similarity)``, ``i < j``, that are near copies, and the threshold used.

    Candidates are kNN pairs with embedding similarity at least ``candidate_similarity``,
    verified on thumbnails (:func:`verified_similarity`). The threshold adapts to how
    crowded the data set is: at least ``min_similarity``, and closer to 1 than a share
    (``density_factor``) of the typical verified distance between nearest neighbours, so
    that in a set of look-alikes (handwritten ones) only real copies pass. A given
    ``threshold`` replaces that rule.
    """
    n = len(indices)
    if threshold is None:
        sample = np.random.default_rng(seed).choice(n, size=min(n, 2000), replace=False)
        nearest = np.zeros_like(indices, dtype=bool)
        nearest[sample, 0] = indices[sample, 0] >= 0
        typical = verified_similarity(indices, nearest, read_thumbs)[2]
        median_distance = float(np.median(1.0 - typical)) if typical.size else 1.0
        threshold = max(min_similarity, 1.0 - density_factor * median_distance)
    candidates = (sims >= candidate_similarity) & (indices >= 0)
    first, second, similarity = verified_similarity(indices, candidates, read_thumbs)
    keep = similarity >= threshold
    return ([(int(i), int(j), float(v)) for i, j, v in zip(first[keep], second[keep], similarity[keep])],
            threshold)


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
