"""Nearest neighbours for every stage: one module, below all of them.

The audit (near-duplicate candidates, outliers, images far from their class), clean (the
kNN detectors: ENN, RENN, All-kNN, the kNN posterior, classes to merge) and review (a
sample's nearest own-class and other-class neighbours) search through these functions:

- :func:`search_neighbours`: the ``k`` nearest other rows of every row by inner product
  (cosine for unit-normed rows), over an array or a :class:`VectorFile` on disk read in
  blocks, the answer in a :class:`NeighbourTable` (in memory or on disk). Exact (FAISS
  flat search, or blocked NumPy matrix products without FAISS) up to ``exact_limit``
  vectors, an inverted-file index above it (FAISS IVF with 8-bit scalar quantisation),
  whose recall@k against exact search is measured on a sample of queries
  (:func:`recall_at_k`). Memory holds a block of vectors, the index (the approximate
  one: about ``d + 8`` bytes a vector) and a block of the answer.
- :func:`nearest`: exact ``k`` nearest others of each row in memory, by ``euclidean`` or
  ``cosine`` distance, optionally only within groups or a subset of rows.
- :func:`top_k`: exact ``k`` best rows for a few queries (a focus view's neighbours),
  over blocks of the database, never a full similarity matrix.
- :func:`within_radius`: every row within a distance of each query.

Written by hand around FAISS's flat and IVF indexes (the ranking kernels) because the
pieces FAISS lacks are what the stages need: answers kept on disk block by block,
self-matches dropped, groups, recall measured against exact search, and a NumPy path
that gives the same neighbours where FAISS is missing.
"""


from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smartset._memory import give_back_memory

__all__ = ["knn", "search_neighbours", "SEARCH_METHODS", "LISTS_MEMORY_LIMIT", "NeighbourSearch", "NeighbourTable", "recall_at_k",
           "VectorFile", "nearest", "top_k", "within_radius", "METRICS", "EXACT_LIMIT"]

EXACT_LIMIT = 20_000
"""Up to this many vectors the search is exact; above it, approximate: inverted lists
searched with exact similarities (:func:`_ivf_flat`), or FAISS IVF-SQ8 above
:data:`LISTS_MEMORY_LIMIT`. Exact search costs ``n`` products a query, so its time grows
as ``n**2``: at 10,000 vectors it is a few percent of an audit, at 100,000 it would be
most of it."""
LISTS_MEMORY_LIMIT = 256 * 2**20
"""The in-memory inverted lists hold every vector as float16 (``n x d x 2`` bytes); above
this many bytes the search goes to FAISS IVF-SQ8 in shards (about ``d`` bytes a vector,
one shard in memory at a time), when FAISS is installed."""
# faiss multiplies queries by database rows in BLAS blocks of 4096 x 1024, and a product's
# rounding depends on its shape: with _QUERY_BLOCK a multiple of 4096 and _BASE_BLOCK one
# of 1024, faiss's products keep their shapes whatever the blocks, and the similarities
# their last bit.
_QUERY_BLOCK = 4096
_BASE_BLOCK = 8192  # rows of a database block: 3.5 MB as float32
_FLAT_INDEX_LIMIT = 16384  # in-memory vectors up to this many: one faiss flat index
_BLOCK = 256  # query rows per NumPy product (memory: block x base block floats)
_IVF_SHARD = 131072  # database vectors per IVF shard: ~16 MB of 8-bit codes and ids
_IVF_TRAIN = 65536  # vectors that train the IVF lists (at most 40 a list): 29 MB at d=112
_SQ_TRAIN = 16384  # of which these train the 8-bit ranges


class VectorFile:
    """An ``n x d`` matrix stored row-major in a raw file, read with plain reads, not a
    memory map (pages of a map count in the process's resident memory, read pages only in
    the OS cache). Slicing (``vf[a:b]``) and integer-array indexing return float32 rows,
    so it stands in for an array in :func:`search_neighbours`."""

    def __init__(self, path: str | Path, n: int, dim: int, dtype=np.float16):
        self.path, self.dtype = Path(path), np.dtype(dtype)
        self.shape = (int(n), int(dim))
        self._row_bytes = self.shape[1] * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    @classmethod
    def write(cls, path: str | Path, blocks, dim: int, dtype=np.float16) -> VectorFile:
        """Write ``blocks`` (arrays of ``dim`` columns), in order, to ``path``."""
        n = 0
        with open(path, "wb") as handle:
            for block in blocks:
                block = np.ascontiguousarray(block, dtype=dtype).reshape(-1, dim)
                handle.write(memoryview(block).cast("B"))  # no bytes copy of the block
                n += len(block)
        return cls(path, n, dim, dtype)

    def __getitem__(self, key) -> np.ndarray:
        n, dim = self.shape
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step != 1:
                raise IndexError("VectorFile slices take step 1")
            count = max(0, stop - start)
            with open(self.path, "rb") as handle:
                handle.seek(start * self._row_bytes)
                data = np.fromfile(handle, dtype=self.dtype, count=count * dim)
            return data.reshape(count, dim).astype(np.float32)
        rows = np.asarray(key, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), dim), dtype=np.float32)
        with open(self.path, "rb") as handle:
            descriptor = handle.fileno()
            for i, row in enumerate(rows):
                data = os.pread(descriptor, self._row_bytes, int(row) * self._row_bytes)
                out[i] = np.frombuffer(data, dtype=self.dtype)
        return out


class _Records:
    """Fixed-size records, one a row: in memory, or in a raw file (``path``) written and
    read a block of rows at a time with plain reads (pages of a memory map would count in
    the process's resident memory)."""

    def __init__(self, record: np.dtype, n: int, path: str | Path | None):
        self.record, self.path = record, None if path is None else Path(path)
        self._rows = np.empty(n, dtype=record) if self.path is None else None

    def _write_rows(self, start: int, rows: np.ndarray) -> None:
        if self.path is None:
            self._rows[start:start + len(rows)] = rows
            return
        with open(self.path, "r+b") as handle:
            os.pwrite(handle.fileno(), rows.tobytes(), start * self.record.itemsize)

    def _read_rows(self, start: int, stop: int) -> np.ndarray:
        if self.path is None:
            return self._rows[start:stop]
        with open(self.path, "rb") as handle:
            handle.seek(start * self.record.itemsize)
            return np.fromfile(handle, dtype=self.record, count=max(0, stop - start))


class NeighbourTable(_Records):
    """An ``n x k`` answer, nearest first: indices (int32 below 2**31 rows, -1 padded) and
    similarities (float32, -inf padded). In memory, or with ``path`` in a raw file of one
    record a row, written and read a block of rows at a time with plain reads (pages of a
    memory map would count in the process's resident memory)."""

    def __init__(self, n: int, k: int, path: str | Path | None = None):
        self.n, self.k = int(n), int(k)
        super().__init__(np.dtype([("indices", np.int32 if n < 2**31 else np.int64, (self.k,)),
                                   ("similarities", np.float32, (self.k,))]), self.n, path)
        if self.path is None:
            self._rows["indices"], self._rows["similarities"] = -1, -np.inf
            return
        padding = np.empty(min(self.n, _QUERY_BLOCK), dtype=self.record)
        padding["indices"], padding["similarities"] = -1, -np.inf
        with open(self.path, "wb") as handle:
            for start, stop in _blocks(self.n, len(padding) or 1):
                handle.write(padding[:stop - start].tobytes())

    def __len__(self) -> int:
        return self.n

    def write(self, start: int, indices: np.ndarray, similarities: np.ndarray) -> None:
        """Rows ``start:start + len(indices)`` (their first ``indices.shape[1]`` columns;
        the rest stay padding)."""
        rows = np.empty(len(indices), dtype=self.record)
        rows["indices"], rows["similarities"] = -1, -np.inf
        rows["indices"][:, :indices.shape[1]] = indices
        rows["similarities"][:, :indices.shape[1]] = similarities
        self._write_rows(start, rows)

    def write_rows(self, rows: np.ndarray, indices: np.ndarray, similarities: np.ndarray
                   ) -> None:
        """Rows ``rows`` (any order; on disk, one write each)."""
        records = np.empty(len(rows), dtype=self.record)
        records["indices"], records["similarities"] = -1, -np.inf
        records["indices"][:, :indices.shape[1]] = indices
        records["similarities"][:, :indices.shape[1]] = similarities
        if self.path is None:
            self._rows[np.asarray(rows, dtype=np.int64)] = records
            return
        size = self.record.itemsize
        with open(self.path, "r+b") as handle:
            for row, record in zip(np.asarray(rows, dtype=np.int64).tolist(), records):
                os.pwrite(handle.fileno(), record.tobytes(), row * size)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, similarities)`` of rows ``start:stop``."""
        rows = self._read_rows(start, stop)
        return rows["indices"], rows["similarities"]

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, similarities)`` of the rows ``rows`` (one read each on disk)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.path is None:
            found = self._rows[rows]
        else:
            found = np.empty(len(rows), dtype=self.record)
            size = self.record.itemsize
            with open(self.path, "rb") as handle:
                for i, row in enumerate(rows):
                    found[i] = np.frombuffer(os.pread(handle.fileno(), size, int(row) * size),
                                             dtype=self.record)[0]
        return found["indices"], found["similarities"]

    def blocks(self, size: int = _QUERY_BLOCK):
        """``(start, stop, indices, similarities)`` block after block."""
        for start, stop in _blocks(self.n, size):
            yield (start, stop, *self.read(start, stop))

    def column(self, c: int) -> np.ndarray:
        """Column ``c`` of the indices, every row (read block by block)."""
        out = np.empty(self.n, dtype=self.record["indices"].base)
        for start, stop, indices, _ in self.blocks():
            out[start:stop] = indices[:, c]
        return out


@dataclass
class NeighbourSearch:
    """What :func:`search_neighbours` found: the ``table`` (:class:`NeighbourTable`; also
    as arrays, ``indices`` and ``similarities``), the ``index`` used (``"flat"``, or
    ``"ivf-sq8"``), and for an approximate index its parameters and ``recall`` (recall@k
    against exact search on ``params["recall_queries"]`` sampled queries)."""

    table: NeighbourTable
    index: str
    recall: float | None = None
    params: dict = field(default_factory=dict)

    @property
    def approximate(self) -> bool:
        return self.index != "flat"

    @property
    def indices(self) -> np.ndarray:
        """``n x k`` (on disk: read whole)."""
        return self.table.read(0, self.table.n)[0]

    @property
    def similarities(self) -> np.ndarray:
        return self.table.read(0, self.table.n)[1]


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


@contextlib.contextmanager
def search_threads():
    """FAISS's OpenMP threads and NumPy's BLAS threads for a search: the cores other
    processes leave free (:func:`smartset._threads.choose_threads`), restored after. Both
    libraries start one thread per core whatever else runs; on 2 shared cores a 2-thread
    flat search took 1.6x the CPU and 1.6x the wall time of a 1-thread one (measured under
    load 7.6, 10,000 x 112 float32)."""
    from smartset._threads import choose_threads

    threads = choose_threads()
    faiss = _faiss()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # NumPy's BLAS keeps its own count
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(limits=threads, user_api="blas")
    before = faiss.omp_get_max_threads() if faiss is not None else None
    with limits:
        if faiss is not None:
            faiss.omp_set_num_threads(threads)
        try:
            yield threads
        finally:
            if faiss is not None:
                faiss.omp_set_num_threads(before)


_NUMPY_LIMIT = 4096
"""Exact searches over at most this many in-memory rows run in NumPy alone: one product
of a few milliseconds, where importing FAISS and threadpoolctl cost half a CPU-second
(more than the rest of a thousand-photo audit's search)."""


def _numpy_only(vectors, method: str) -> bool:
    return method in ("auto", "flat") and len(vectors) <= _NUMPY_LIMIT


def _blocks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _top_numpy(queries: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest inner products of each query with ``base``, best first."""
    sims = np.full((len(queries), k), -np.inf, dtype=np.float32)
    found = np.full((len(queries), k), -1, dtype=np.int64)
    take = min(k, len(base))
    for start, stop in _blocks(len(queries), _BLOCK):
        block = queries[start:stop] @ base.T
        top = np.argpartition(-block, take - 1, axis=1)[:, :take]
        top_sims = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        found[start:stop, :take] = np.take_along_axis(top, order, axis=1)
        sims[start:stop, :take] = np.take_along_axis(top_sims, order, axis=1)
    return sims, found


def _merge(best: tuple[np.ndarray, np.ndarray], new: tuple[np.ndarray, np.ndarray], k: int):
    """Keep the ``k`` best of two (similarities, indices) answers; earlier ones win ties."""
    sims = np.concatenate([best[0], new[0]], axis=1)
    found = np.concatenate([best[1], new[1]], axis=1)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(found, order, axis=1)


def _exact(vectors, queries: np.ndarray, k: int, faiss) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of ``queries`` over every row of ``vectors``, read block by block."""
    n = len(vectors)
    if faiss is not None and isinstance(vectors, np.ndarray) and n <= _FLAT_INDEX_LIMIT:
        index = faiss.IndexFlatIP(vectors.shape[1])  # small and in memory: one flat index
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return index.search(queries, k)
    if faiss is not None:
        heap = faiss.ResultHeap(len(queries), k, keep_max=True)
        for start, stop in _blocks(n, _BASE_BLOCK):
            base = np.ascontiguousarray(vectors[start:stop], dtype=np.float32)
            sims, found = faiss.knn(queries, base, min(k, len(base)),
                                    metric=faiss.METRIC_INNER_PRODUCT)
            del base
            heap.add_result(sims, np.where(found >= 0, found + start, -1))
        heap.finalize()
        return heap.D, heap.I
    best = (np.full((len(queries), k), -np.inf, dtype=np.float32),
            np.full((len(queries), k), -1, dtype=np.int64))
    for start, stop in _blocks(n, _BASE_BLOCK):
        sims, found = _top_numpy(queries, np.asarray(vectors[start:stop], dtype=np.float32), k)
        best = _merge(best, (sims, np.where(found >= 0, found + start, -1)), k)
    return best


def _drop_self(found: np.ndarray, sims: np.ndarray, rows: np.ndarray, k: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest others (its own index and padding dropped), padded."""
    keep = (found != rows[:, None]) & (found >= 0)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept first, in rank order
    picked = np.take_along_axis(keep, order, axis=1)
    return (np.where(picked, np.take_along_axis(found, order, axis=1), -1),
            np.where(picked, np.take_along_axis(sims, order, axis=1), -np.inf))


def _ivf(vectors, n: int, dim: int, faiss, *, nlist: int | None, seed: int):
    nlist = nlist or int(min(_IVF_TRAIN // 16, max(64, 2 ** round(math.log2(4 * math.sqrt(n))))))
    rng = np.random.default_rng(seed)
    train_rows = np.sort(rng.choice(n, size=min(n, 40 * nlist, _IVF_TRAIN), replace=False))
    train = np.ascontiguousarray(vectors[train_rows], dtype=np.float32)
    quantizer = faiss.IndexFlatIP(dim)
    # The lists first, then the 8-bit ranges on the residuals of a part of the same
    # sample: faiss would otherwise copy every training vector as a residual.
    clustering = faiss.Clustering(dim, nlist)
    clustering.seed = seed
    clustering.min_points_per_centroid = min(39, max(1, len(train) // nlist))
    clustering.train(train, quantizer)
    index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    index.train(train[:_SQ_TRAIN])  # the quantizer is trained: only the ranges are
    return index, quantizer, nlist  # trained, empty; the quantizer must outlive the index


SEARCH_METHODS = ("auto", "flat", "ivf-flat", "ivf")
_KMEANS_ITERATIONS = 8
_KMEANS_PER_LIST = 32  # training vectors per list


def _spherical_kmeans(sample: np.ndarray, nlist: int, rng: np.random.Generator) -> np.ndarray:
    """``nlist`` unit centroids of unit rows ``sample`` (float32) by spherical k-means:
    each row to its most similar centroid, each centroid the normed mean of its rows; an
    emptied list keeps its centroid. Seeded by ``rng``."""
    centroids = sample[rng.choice(len(sample), nlist, replace=False)].copy()
    for _ in range(_KMEANS_ITERATIONS):
        assign = np.empty(len(sample), dtype=np.int64)
        for start, stop in _blocks(len(sample), _QUERY_BLOCK):
            assign[start:stop] = np.argmax(sample[start:stop] @ centroids.T, axis=1)
        order = np.argsort(assign, kind="stable")
        counts = np.bincount(assign, minlength=nlist)
        filled = np.flatnonzero(counts)
        sums = np.add.reduceat(sample[order], np.r_[0, np.cumsum(counts)[:-1]][filled], axis=0)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        ok = norms[:, 0] > 0
        centroids[filled[ok]] = sums[ok] / norms[ok]
    return centroids


def _ivf_flat(vectors, table: NeighbourTable, k: int, *, nlist: int | None, nprobe: int,
              seed: int) -> dict:
    """Approximate kNN by inverted lists with exact similarities, written by hand because
    FAISS's IVF scans each list code by code, while here a group of queries meets a list
    in one BLAS product: ``nlist`` lists from spherical k-means on a seeded sample, each
    vector stored (float32, sorted by list) in its nearest list, and the queries of one
    list searched together over the union of the ``nprobe`` lists each of them probes
    (so each query sees at least its own ``nprobe``). Top-k by FAISS's flat kernel and
    result heap when installed, else NumPy. Writes each row's ``k`` nearest others to
    ``table``; returns the parameters."""
    started = time.perf_counter()
    n, dim = vectors.shape
    nlist = int(nlist or min(4096, max(16, 2 ** round(math.log2(n / 200)))))
    nlist = min(nlist, n)
    nprobe = int(min(nprobe, nlist))
    rng = np.random.default_rng(seed)
    sample_rows = np.sort(rng.choice(n, size=min(n, _KMEANS_PER_LIST * nlist), replace=False))
    centroids = _spherical_kmeans(np.asarray(vectors[sample_rows], dtype=np.float32), nlist,
                                  rng)
    probes = np.empty((n, nprobe), dtype=np.int32)
    for start, stop in _blocks(n, _QUERY_BLOCK):
        sims = np.asarray(vectors[start:stop], dtype=np.float32) @ centroids.T
        top = np.argpartition(-sims, nprobe - 1, axis=1)[:, :nprobe]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        probes[start:stop] = np.take_along_axis(top, order, axis=1)
    home = probes[:, 0].astype(np.int64)  # each vector lives in its nearest list
    order = np.argsort(home, kind="stable")  # rows sorted by list
    starts = np.r_[0, np.cumsum(np.bincount(home, minlength=nlist))]
    data = np.empty((n, dim), dtype=np.float32)  # sorted by list: a list is one slice
    for start, stop in _blocks(n, _BASE_BLOCK):
        data[start:stop] = vectors[order[start:stop]]
    built = time.perf_counter()
    faiss = _faiss()
    want = min(k + 1, n)  # the query itself is in its own list
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    asked = probes.reshape(-1)  # (query, list) pairs, grouped by list
    by_list = np.argsort(asked, kind="stable")
    asked_starts = np.r_[0, np.cumsum(np.bincount(asked, minlength=nlist))]
    del probes, asked, home
    best_sims = np.full((n, want), -np.inf, dtype=np.float32)  # by sorted position
    best = np.full((n, want), -1, dtype=np.int64)
    for lst in range(nlist):
        base = data[starts[lst]:starts[lst + 1]]
        if not len(base):
            continue
        askers = position[by_list[asked_starts[lst]:asked_starts[lst + 1]] // nprobe]
        take = min(want, len(base))
        for start, stop in _blocks(len(askers), _QUERY_BLOCK):
            rows = askers[start:stop]
            queries = data[rows]
            if faiss is not None:
                sims, found = faiss.knn(queries, base, take, metric=faiss.METRIC_INNER_PRODUCT)
            else:
                sims, found = _top_numpy(queries, base, take)
            found = np.where(found >= 0, found + starts[lst], -1)
            best_sims[rows], best[rows] = _merge((best_sims[rows], best[rows]),
                                                 (sims, found), want)
    del data
    for start, stop in _blocks(n, _QUERY_BLOCK):
        rows = np.arange(start, stop)
        found = best[rows]
        found = np.where(found >= 0, order[found.clip(min=0)], -1)  # sorted -> original rows
        table.write_rows(order[rows], *_drop_self(found, best_sims[rows], order[rows], k))
    return {"nlist": nlist, "nprobe": nprobe, "build_s": round(built - started, 3)}


def search_neighbours(vectors, k: int, *, method: str = "auto", exact_limit: int | None = None,
                      nlist: int | None = None, nprobe: int | None = None,
                      recall_queries: int = 1000, seed: int = 0,
                      out: str | Path | None = None) -> NeighbourSearch:
    """The ``k`` nearest other rows of each row of ``vectors`` by inner product (cosine
    for unit-normed rows).

    ``vectors``: an ``n x d`` array, or anything sliced the same way (:class:`VectorFile`),
    read ``16,384`` rows at a time. ``method``:

    - ``"flat"``: exact (FAISS flat search, or blocked NumPy products without FAISS);
    - ``"ivf-flat"``: inverted lists in NumPy (:func:`_ivf_flat`: ``nlist`` spherical
      k-means lists, default about ``sqrt(n)``, a power of two; each query searches its
      ``nprobe`` nearest lists, default 12, with BLAS products and exact similarities);
      memory: every vector as float16;
    - ``"ivf"``: FAISS ``IndexIVFScalarQuantizer``, 8-bit (``nlist`` default about ``4
      sqrt(n)``, ``nprobe`` default 32), the database in shards, about ``d + 8`` bytes a
      vector in memory; similarities approximate to the 8-bit codes;
    - ``"auto"``: flat up to ``exact_limit`` rows (default :data:`EXACT_LIMIT`), then
      ``ivf-flat`` while the vectors as float16 fit :data:`LISTS_MEMORY_LIMIT`, then
      ``ivf`` (``ivf-flat`` without FAISS).

    An approximate search is followed by :func:`recall_at_k` on ``recall_queries``
    sampled rows (``recall`` and ``params`` of the result). ``out``: a file for the
    answer (:class:`NeighbourTable`), so memory holds a block of it, not all ``n x k``.
    """
    small = _numpy_only(vectors, method)
    with contextlib.nullcontext() if small else search_threads():
        return _search_neighbours(vectors, k, method=method, exact_limit=exact_limit,
                                  nlist=nlist, nprobe=nprobe, recall_queries=recall_queries,
                                  seed=seed, out=out)


def _search_neighbours(vectors, k: int, *, method: str = "auto", exact_limit: int | None = None,
                      nlist: int | None = None, nprobe: int | None = None,
                      recall_queries: int = 1000, seed: int = 0,
                      out: str | Path | None = None) -> NeighbourSearch:
    """:func:`search_neighbours` under the thread counts it chose."""
    if method not in SEARCH_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, SEARCH_METHODS))}, "
                         f"got {method!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n = len(vectors)
    table = NeighbourTable(n, k, out)
    k_eff = min(k, max(n - 1, 0))
    if _numpy_only(vectors, method):  # read whole (at most 4096 rows): NumPy alone
        vectors, faiss = np.asarray(vectors[0:n], dtype=np.float32), None
    else:
        faiss = _faiss()
    exact_limit = EXACT_LIMIT if exact_limit is None else exact_limit
    if k_eff == 0:
        return NeighbourSearch(table, "flat")
    dim = vectors.shape[1]
    if method == "auto":
        method = ("flat" if n <= exact_limit else
                  "ivf-flat" if faiss is None or n * dim * 2 <= LISTS_MEMORY_LIMIT else "ivf")
    if method == "ivf" and faiss is None:
        method = "ivf-flat"
    started = time.perf_counter()
    if method == "ivf-flat":
        params = _ivf_flat(vectors, table, k_eff, nlist=nlist, nprobe=nprobe or 12, seed=seed)
        queried = time.perf_counter()
        recall = _recall(vectors, table, k_eff, sample=recall_queries, seed=seed)
        return NeighbourSearch(table, "ivf-flat", recall,
                               {**params, "recall_queries": min(recall_queries, n), "k": k_eff,
                                "query_s": round(queried - started, 3),
                                "recall_s": round(time.perf_counter() - queried, 3)})
    nprobe = nprobe or 32
    if method == "flat":
        for start, stop in _blocks(n, _QUERY_BLOCK):
            queries = np.ascontiguousarray(vectors[start:stop], dtype=np.float32)
            found_sims, found = _exact(vectors, queries, k_eff + 1, faiss)
            table.write(start, *_drop_self(found, found_sims, np.arange(start, stop), k_eff))
        return NeighbourSearch(table, "flat",
                               params={"query_s": round(time.perf_counter() - started, 3)})
    trained, quantizer, used_nlist = _ivf(vectors, n, dim, faiss, nlist=nlist, seed=seed)
    give_back_memory()  # the training sample's pages, before the shards take theirs
    built = time.perf_counter()
    probes = min(nprobe, used_nlist)
    # The database in shards of _IVF_SHARD vectors, one shard's codes in memory at a
    # time (each shard shares the trained lists): every query meets every shard, and the
    # best k of the shards' answers are kept, as one index over all would find them. The
    # lists each query probes are found once, kept on disk, and reused by every shard.
    coarse = _CoarseFile(n, probes, out)
    try:
        for shard_start, shard_stop in _blocks(n, _IVF_SHARD):
            index = faiss.clone_index(trained)
            index.nprobe = probes
            for start, stop in _blocks(shard_stop - shard_start, _BASE_BLOCK * 4):
                index.add(np.ascontiguousarray(vectors[shard_start + start:shard_start + stop],
                                               dtype=np.float32))
            for start, stop in _blocks(n, _QUERY_BLOCK):
                queries = np.ascontiguousarray(vectors[start:stop], dtype=np.float32)
                if shard_start == 0:
                    coarse.write(start, *quantizer.search(queries, probes))
                lists_sims, lists = coarse.read(start, stop)
                found_sims, found = index.search_preassigned(queries, k_eff + 1, lists,
                                                             lists_sims)
                _merge_shard(table, start, stop, found_sims, found, shard_start, k_eff)
            del index
            give_back_memory()
    finally:
        coarse.remove()
    del trained, quantizer
    queried = time.perf_counter()

    recall = _recall(vectors, table, k_eff, sample=recall_queries, seed=seed)
    return NeighbourSearch(table, "ivf-sq8", recall,
                           {"nlist": used_nlist, "nprobe": min(nprobe, used_nlist),
                            "recall_queries": min(recall_queries, n), "k": k_eff,
                            "build_s": round(built - started, 3),
                            "query_s": round(queried - built, 3),
                            "recall_s": round(time.perf_counter() - queried, 3)})


def _merge_shard(table: NeighbourTable, start: int, stop: int, found_sims: np.ndarray,
                 found: np.ndarray, shard_start: int, k: int) -> None:
    """Merge a shard's answer for rows ``start:stop`` into the best so far in ``table``."""
    found = np.where(found >= 0, found + shard_start, -1)
    answer = _drop_self(found, found_sims, np.arange(start, stop), k)
    if shard_start:
        best, best_sims = table.read(start, stop)
        answer = _merge((best_sims[:, :k], best[:, :k]), answer[::-1], k)[::-1]
    table.write(start, *answer)


class _CoarseFile(_Records):
    """The IVF lists each query probes (``n x probes`` list numbers and similarities), in
    memory, or in a scratch file beside ``beside`` (a :class:`NeighbourTable` path)."""

    def __init__(self, n: int, probes: int, beside: str | Path | None):
        super().__init__(np.dtype([("lists", np.int32, (probes,)),
                                   ("sims", np.float32, (probes,))]), n,
                         None if beside is None else f"{beside}.coarse")
        if self.path is not None:
            self.path.write_bytes(b"")

    def write(self, start: int, sims: np.ndarray, lists: np.ndarray) -> None:
        rows = np.empty(len(lists), dtype=self.record)
        rows["lists"], rows["sims"] = lists, sims
        self._write_rows(start, rows)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """``(similarities, lists)`` of queries ``start:stop``, as faiss takes them."""
        rows = self._read_rows(start, stop)
        return (np.ascontiguousarray(rows["sims"]),
                np.ascontiguousarray(rows["lists"], dtype=np.int64))

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def recall_at_k(vectors, indices: np.ndarray, *, sample: int = 1000, seed: int = 0) -> float:
    """recall@k of ``indices`` (``n x k`` neighbours found, -1 padded): on ``sample`` rows
    drawn at random, the share of each row's exact ``k`` nearest others that were found."""
    table = NeighbourTable(len(indices), indices.shape[1])
    table.write(0, indices, np.zeros(indices.shape, dtype=np.float32))
    return _recall(vectors, table, indices.shape[1], sample=sample, seed=seed)


def _recall(vectors, table: NeighbourTable, k: int, *, sample: int, seed: int) -> float:
    n = table.n
    if n < 2 or k == 0:
        return 1.0
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    found_rows = table.take(rows)[0][:, :k]
    queries = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    k_true = min(k, n - 1)
    sims, found = _exact(vectors, queries, k_true + 1, _faiss())
    truth, _ = _drop_self(found, sims, rows, k_true)
    hits = sum(len((set(truth[i].tolist()) - {-1}) & set(found_rows[i].tolist()))
               for i in range(len(rows)))
    return hits / max(1, int((truth >= 0).sum()))


def knn(embeddings, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other rows of each row by cosine similarity (rows unit-normed),
    exact or, above :data:`EXACT_LIMIT` rows, approximate (see :func:`search_neighbours`).

    Returns ``(indices, similarities)``, both ``n x k``, nearest first; rows with fewer
    than ``k`` others are padded with index -1 and similarity -inf.
    """
    found = search_neighbours(embeddings, k)
    return found.indices, found.similarities




# -- exact search in memory: clean's detectors, the review's focus view, radius queries ----

METRICS = ("euclidean", "cosine")
"""Distances :func:`nearest`, :func:`top_k` and :func:`within_radius` take."""


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; metrics: {', '.join(METRICS)}.")


def _as_rows(data, metric: str) -> np.ndarray:
    """float32, C-contiguous, unit-normed rows for ``cosine`` (zero rows kept zero)."""
    rows = np.ascontiguousarray(data, dtype=np.float32)
    if rows.ndim != 2:
        raise ValueError(f"expected a 2-d array of vectors, got shape {rows.shape}")
    if metric == "cosine":
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        rows = np.ascontiguousarray(rows / np.where(norms > 0, norms, 1.0))
    return rows


def _flat(base: np.ndarray, queries: np.ndarray, k: int, metric: str
          ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of ``queries`` in ``base`` (both prepared by :func:`_as_rows`):
    ``(scores, indices)`` as FAISS gives them, inner products (``cosine``) or squared
    distances (``euclidean``), best first, -1 padded. FAISS flat indexes when present,
    else blocked NumPy products (same neighbours, last-bit differences in the scores)."""
    k = min(k, len(base))
    faiss = _faiss()
    if faiss is not None:
        index = (faiss.IndexFlatIP if metric == "cosine" else faiss.IndexFlatL2)(base.shape[1])
        index.add(base)
        return index.search(queries, k)
    if metric == "cosine":
        sims, found = _exact(base, queries, k, None)
        return sims, found
    base_norms = np.einsum("ij,ij->i", base, base)
    best_d = np.full((len(queries), k), np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    for q0, q1 in _blocks(len(queries), _BLOCK):
        query = queries[q0:q1]
        query_norms = np.einsum("ij,ij->i", query, query)[:, None]
        for b0, b1 in _blocks(len(base), _BASE_BLOCK):
            dist = query_norms + base_norms[None, b0:b1] - 2.0 * (query @ base[b0:b1].T)
            dist = np.maximum(dist, 0.0, out=dist)
            take = min(k, b1 - b0)
            top = np.argpartition(dist, take - 1, axis=1)[:, :take]
            merged_d = np.concatenate([best_d[q0:q1], np.take_along_axis(dist, top, axis=1)],
                                      axis=1)
            merged_i = np.concatenate([best_i[q0:q1], top + b0], axis=1)
            order = np.argsort(merged_d, axis=1, kind="stable")[:, :k]
            best_d[q0:q1] = np.take_along_axis(merged_d, order, axis=1)
            best_i[q0:q1] = np.take_along_axis(merged_i, order, axis=1)
    return best_d, best_i


def _distances(scores: np.ndarray, metric: str) -> np.ndarray:
    """FAISS-style scores as distances: ``1 - cosine`` (clipped at 0), or Euclidean."""
    if metric == "cosine":
        return np.clip(1.0 - scores, 0.0, None)
    return np.sqrt(np.clip(scores, 0.0, None))


def nearest(features, k: int, *, metric: str = "euclidean", groups: np.ndarray | None = None,
            subset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other rows of each row of ``features`` (``n x d``), exact.

    ``metric``: ``"euclidean"`` or ``"cosine"`` (``1 - cosine similarity``). ``groups``
    (``n`` labels) keeps each row's neighbours inside its own group (features from
    different fold models are not comparable); ``subset`` (row numbers) limits both the
    queries and the candidates. Returns ``(indices, distances)``, ``n x k``, nearest
    first, indices global row numbers; rows outside ``subset``, and places beyond a
    group's size, hold -1 and ``inf``.
    """
    _check_metric(metric)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    data = _as_rows(features, metric)
    n = len(data)
    rows_all = np.arange(n) if subset is None else np.asarray(subset, dtype=np.int64)
    indices = np.full((n, k), -1, dtype=np.int64)
    distances = np.full((n, k), np.inf, dtype=np.float32)
    group_of = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups)
    for group in np.unique(group_of[rows_all]):
        rows = rows_all[group_of[rows_all] == group]
        members = np.ascontiguousarray(data[rows])
        scores, idx = _flat(members, members, min(k + 1, len(rows)), metric)
        keep = (idx != np.arange(len(rows))[:, None]) & (idx >= 0)
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # drop the query itself
        chosen = np.take_along_axis(idx, order, axis=1)
        valid = np.take_along_axis(keep, order, axis=1)
        indices[rows, :chosen.shape[1]] = np.where(valid, rows[np.clip(chosen, 0, None)], -1)
        distances[rows, :chosen.shape[1]] = np.where(
            valid, _distances(np.take_along_axis(scores, order, axis=1), metric), np.inf)
    return indices, distances


def top_k(vectors, queries, k: int, *, metric: str = "cosine", normalized: bool = False,
          exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``vectors`` (``n x d``, an array or a :class:`VectorFile`) best
    for each of ``queries`` (``m x d``), exact, searched a block of
    ``vectors`` at a time (memory: ``m`` x a block of scores, never ``m x n``).

    Returns ``(indices, scores)``, ``m x k``, best first: cosine similarities (highest
    first) or Euclidean distances (lowest first), -1 / ``-inf`` (``inf``) padded.
    ``normalized``: the rows of both are unit-normed already (cosine is then their inner
    product, and they are not normed again). ``exclude``: one row number per query that
    it must not return (itself), or -1.
    """
    _check_metric(metric)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    prepare = (lambda a: np.ascontiguousarray(a, dtype=np.float32)) if (
        normalized and metric == "cosine") else (lambda a: _as_rows(a, metric))
    queries = prepare(queries)
    n, m = len(vectors), len(queries)
    skip = (np.full(m, -1, dtype=np.int64) if exclude is None
            else np.asarray(exclude, dtype=np.int64).reshape(m))
    want = k + 1  # room for the excluded row
    sign = 1.0 if metric == "cosine" else -1.0  # rank by higher-is-better
    best = (np.full((m, want), -np.inf, dtype=np.float32), np.full((m, want), -1, np.int64))
    for start, stop in _blocks(n, _BASE_BLOCK):
        scores, found = _flat(prepare(vectors[start:stop]), queries, want, metric)
        found = np.where(found >= 0, found + start, -1)
        best = _merge(best, (np.where(found >= 0, sign * scores, -np.inf), found), want)
    sims, found = best
    keep = (found >= 0) & (found != skip[:, None])
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    picked = np.take_along_axis(keep, order, axis=1)
    found = np.where(picked, np.take_along_axis(found, order, axis=1), -1)
    sims = np.take_along_axis(sims, order, axis=1)
    if metric == "cosine":
        return found, np.where(picked, sims, -np.inf).astype(np.float32)
    return found, np.where(picked, np.sqrt(np.clip(-sims, 0.0, None)), np.inf).astype(np.float32)


def within_radius(vectors, queries, radius: float, *, metric: str = "cosine",
                  normalized: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every row of ``vectors`` within ``radius`` of each query (cosine distance ``1 -
    similarity``, or Euclidean), exact, a block of ``vectors`` at a time. Returns one
    ``(indices, distances)`` per query, nearest first."""
    _check_metric(metric)
    if not radius >= 0:
        raise ValueError(f"radius must be at least 0, got {radius}")
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    prepare = (lambda a: np.ascontiguousarray(a, dtype=np.float32)) if (
        normalized and metric == "cosine") else (lambda a: _as_rows(a, metric))
    queries = prepare(queries)
    parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(len(queries))]
    for start, stop in _blocks(len(vectors), _BASE_BLOCK):
        base = prepare(vectors[start:stop])
        if metric == "cosine":
            dist = 1.0 - queries @ base.T
        else:
            dist = np.sqrt(np.maximum(
                np.einsum("ij,ij->i", queries, queries)[:, None]
                + np.einsum("ij,ij->i", base, base)[None, :] - 2.0 * (queries @ base.T), 0.0))
        for q, row in enumerate(dist):
            hit = np.flatnonzero(row <= radius)
            parts[q].append((hit + start, row[hit]))
    out = []
    for found in parts:
        idx = np.concatenate([f[0] for f in found]) if found else np.zeros(0, np.int64)
        dist = np.concatenate([f[1] for f in found]) if found else np.zeros(0, np.float32)
        order = np.argsort(dist, kind="stable")
        out.append((idx[order].astype(np.int64), dist[order].astype(np.float32)))
    return out
