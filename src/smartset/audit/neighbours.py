"""The audit's duplicate-set helpers: thumbnail windows for verifying near copies
(:func:`crop_vectors`), candidate pairs valued once (:func:`_pair_values`), an exact median
of values spilled to disk (:class:`_Scratch`), and connected components of pairs
(:func:`group_arrays`). The nearest-neighbour search itself lives in
:mod:`smartset.neighbours`, shared by every stage.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["crop_vectors", "raw_window_vectors", "group_pairs", "group_arrays"]


_VERIFY_SIDE = 24


@functools.lru_cache(maxsize=64)
def _area_matrix(side: int, scale: float, offset: float, out: int) -> np.ndarray:
    """``out x side`` weights that take the ``scale`` share of ``side`` pixels, centred
    then moved by ``offset`` (a share of the side), and average it down to ``out`` pixels
    (area resampling), as one matrix product. Cached (read-only): every chunk of
    :func:`verified_similarity` asks for the same few."""
    size = max(1.0, side * scale)
    start = (side - size) / 2.0 + offset * side
    edges = start + np.arange(out + 1) * size / out
    pixels = np.arange(side)
    overlap = (np.minimum(edges[1:, None], pixels[None, :] + 1)
               - np.maximum(edges[:-1, None], pixels[None, :])).clip(min=0.0)
    matrix = (overlap / np.maximum(overlap.sum(axis=1, keepdims=True), 1e-9)).astype(np.float32)
    matrix.flags.writeable = False
    return matrix


def crop_vectors(thumbs: np.ndarray, windows) -> np.ndarray:
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


def raw_window_vectors(thumbs: np.ndarray, windows) -> tuple[np.ndarray, np.ndarray]:
    """:func:`crop_vectors` without the centring and norming passes over its output:
    ``(vectors, norms)``, the windows resampled to 24 x 24 as they are (``n x W x 576``)
    and the norm of each one once centred (``n x W``). A window's correlation with a
    centred, unit-normed reference is ``vectors @ reference / norms``: a centred
    reference sums to zero, so the window's mean drops out of the product. Two passes
    over the largest array of the near-copy check saved (it dominates its time). Each
    thumbnail's own mean is taken off first (every window is an average of its pixels, so
    this moves each window by a constant and changes no correlation): the products then
    do not cancel a large common level in float32."""
    thumbs = np.asarray(thumbs, dtype=np.float32)
    thumbs = thumbs - thumbs.mean(axis=(1, 2), keepdims=True, dtype=np.float64
                                  ).astype(np.float32)
    n, side = len(thumbs), thumbs.shape[1]
    horizontal = sorted({(scale, dx) for scale, dx, _ in windows})
    column_of = {key: k for k, key in enumerate(horizontal)}
    stacked = np.concatenate([_area_matrix(side, scale, dx, _VERIFY_SIDE)
                              for scale, dx in horizontal])
    rows_done = (thumbs.reshape(n * side, side) @ stacked.T
                 ).reshape(n, side, len(horizontal), _VERIFY_SIDE)
    size = _VERIFY_SIDE * _VERIFY_SIDE
    out = np.empty((n, len(windows), size), dtype=np.float32)
    for w, (scale, dx, dy) in enumerate(windows):
        np.matmul(_area_matrix(side, scale, dy, _VERIFY_SIDE),
                  rows_done[:, :, column_of[(scale, dx)], :],
                  out=out[:, w].reshape(n, _VERIFY_SIDE, _VERIFY_SIDE))
    sums = out.sum(axis=2, dtype=np.float64)
    squares = np.einsum("nwd,nwd->nw", out, out, dtype=np.float64)
    norms = np.sqrt(np.maximum(squares - sums * sums / size, 0.0)).astype(np.float32)
    return out, norms


def _pair_values(indices: np.ndarray, mask: np.ndarray, scores: np.ndarray, start: int,
                 stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of the masked entries of rows ``start:stop``, each unordered pair once
    (from its smaller row when both rows hold it), valued by its better direction:
    ``(first, second, value)`` with ``first < second``."""
    rows, cols = np.nonzero(mask[start:stop])
    rows += start
    partners = indices[rows, cols]
    value = scores[rows, cols]
    back = (indices[partners] == rows[:, None]) & mask[partners]  # the partner holds it too
    mutual = back.any(axis=1)
    value = np.where(mutual, np.maximum(value, np.where(back, scores[partners], -np.inf)
                                        .max(axis=1)), value)
    once = ~mutual | (rows < partners)
    rows, partners = rows[once], partners[once]
    return np.minimum(rows, partners), np.maximum(rows, partners), value[once]


class _Scratch:
    """float64 values appended to a scratch file, and their exact median, read back a
    block at a time: never all values in memory."""

    _BLOCK = 1 << 18  # values per read: 2 MB
    _SORT = 1 << 18  # few enough values left to sort

    def __init__(self, folder: str | Path | None):
        descriptor, name = tempfile.mkstemp(dir=folder, prefix="limits-", suffix=".f8")
        self.path, self.count = Path(name), 0
        self._handle = os.fdopen(descriptor, "wb")

    def __enter__(self) -> _Scratch:
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()
        self.path.unlink(missing_ok=True)

    def append(self, values: np.ndarray) -> None:
        self._handle.write(np.ascontiguousarray(values, dtype=np.float64).tobytes())
        self.count += len(values)

    def _blocks(self):
        self._handle.flush()
        with open(self.path, "rb") as handle:
            while (block := np.fromfile(handle, dtype=np.float64, count=self._BLOCK)).size:
                yield block

    def _kth(self, k: int) -> float:
        """The ``k``-th smallest value (0-based): histograms narrow its range pass after
        pass until few values are left in it."""
        lo, hi, below = -np.inf, np.inf, 0  # the value lies in [lo, hi], after `below` others
        while True:
            inside, least, most = 0, np.inf, -np.inf
            for block in self._blocks():
                part = block[(block >= lo) & (block <= hi)]
                if part.size:
                    inside += part.size
                    least, most = min(least, part.min()), max(most, part.max())
            if least == most:
                return float(least)
            if inside <= self._SORT:
                values = np.concatenate([b[(b >= lo) & (b <= hi)] for b in self._blocks()])
                return float(np.partition(values, k - below)[k - below])
            if np.nextafter(least, np.inf) == most:  # two neighbouring floats: count them
                at_least = sum(int((b == least).sum()) for b in self._blocks())
                return float(least if k - below < at_least else most)
            edges = np.linspace(least, most, 1025)
            counts = np.zeros(1024, dtype=np.int64)
            for block in self._blocks():
                counts += np.histogram(block[(block >= least) & (block <= most)], edges)[0]
            cumulative = np.cumsum(counts)
            b = int(np.searchsorted(cumulative, k - below, side="right"))
            below += int(cumulative[b - 1]) if b else 0
            lo = edges[b]
            hi = edges[b + 1] if b == len(counts) - 1 else np.nextafter(edges[b + 1], -np.inf)

    def median(self) -> float:
        """As ``np.median`` of every value appended."""
        if not self.count:
            return float("nan")
        middle = [(self.count - 1) // 2, self.count // 2]
        values = [self._kth(k) for k in dict.fromkeys(middle)]
        return float(np.mean([values[0], values[-1]]))


def _components(m: int, a: np.ndarray, b: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of the undirected edges ``(a[e], b[e])`` over ``0..m-1``:
    ``(count, label)``, labels numbered by their smallest node. Each round hooks every
    edge's larger root onto the smaller one, then jumps pointers to the roots, in NumPy
    (a few rounds for duplicate sets). Written here rather than scipy's
    ``connected_components``: importing ``scipy.sparse.csgraph`` cost the audit half a
    CPU-second, more than the search itself on a thousand photos."""
    root = np.arange(m, dtype=np.int64)
    while True:
        ra, rb = root[a], root[b]
        apart = ra != rb
        if not apart.any():
            break
        ra, rb = ra[apart], rb[apart]
        np.minimum.at(root, np.maximum(ra, rb), np.minimum(ra, rb))
        while True:  # pointer jumping: every node straight to its root
            up = root[root]
            if np.array_equal(up, root):
                break
            root = up
    roots, label = np.unique(root, return_inverse=True)
    return len(roots), label.reshape(-1)


def group_pairs(n: int, pairs) -> list[list[int]]:
    """Connected components of the pairs ``(i, j, ...)``: the duplicate sets, largest
    first (then by first member), members ascending. See :func:`group_arrays`."""
    pairs = list(pairs)
    first = np.array([int(p[0]) for p in pairs], dtype=np.int64)
    second = np.array([int(p[1]) for p in pairs], dtype=np.int64)
    members, starts = group_arrays(n, first, second)
    return [members[a:b].tolist() for a, b in zip(starts[:-1], starts[1:])]


def group_arrays(n: int, first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the pairs ``(first[p], second[p])`` of ``0..n-1``, as
    ``(members, starts)``: group g is ``members[starts[g]:starts[g + 1]]``, groups largest
    first (then by first member), members ascending. Only images named in a pair take
    memory, a few bytes each."""
    first, second = np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)
    outside = (first < 0) | (first >= n) | (second < 0) | (second >= n)
    if outside.any():
        at = int(np.flatnonzero(outside)[0])
        raise IndexError(f"pair ({first[at]}, {second[at]}) outside 0..{n - 1}")
    nodes = np.unique(np.concatenate([first, second]))
    if not len(nodes):
        return nodes, np.zeros(1, dtype=np.int64)
    a, b = np.searchsorted(nodes, first), np.searchsorted(nodes, second)
    count, label = _components(len(nodes), a, b)
    sizes = np.bincount(label, minlength=count)
    smallest = np.full(count, len(nodes))
    np.minimum.at(smallest, label, np.arange(len(nodes)))  # nodes are sorted
    rank = np.empty(count, dtype=np.int64)
    rank[np.lexsort((smallest, -sizes))] = np.arange(count)
    order = np.lexsort((nodes, rank[label]))
    starts = np.r_[0, np.cumsum(sizes[np.argsort(rank)])]
    return nodes[order], starts
