"""Nearest neighbours over embeddings, and the duplicate sets found with them.

:func:`search_neighbours` is the entry point: exact cosine kNN (FAISS flat search, or
blocked NumPy matrix products without FAISS) up to ``exact_limit`` vectors, an inverted-file
index (FAISS IVF with 8-bit scalar quantisation) above it, its recall@k measured against
exact search on a sample of queries. The vectors may be an array or a :class:`VectorFile`
on disk: they are read in blocks, so memory holds a block of vectors, the index (the
approximate one: about ``d + 8`` bytes a vector) and the ``n x k`` answer, never every
vector as float32.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smartset._memory import give_back_memory

__all__ = ["knn", "search_neighbours", "NeighbourSearch", "NeighbourTable", "recall_at_k",
           "VectorFile",
           "near_duplicate_pairs", "window_scores", "group_pairs", "group_arrays", "EXACT_LIMIT"]

EXACT_LIMIT = 200_000
"""Up to this many vectors the search is exact; above it, approximate (IVF)."""
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


def search_neighbours(vectors, k: int, *, method: str = "auto", exact_limit: int | None = None,
                      nlist: int | None = None, nprobe: int = 32, recall_queries: int = 1000,
                      seed: int = 0, out: str | Path | None = None) -> NeighbourSearch:
    """The ``k`` nearest other rows of each row of ``vectors`` by inner product (cosine
    for unit-normed rows).

    ``vectors``: an ``n x d`` array, or anything sliced the same way (:class:`VectorFile`),
    read ``16,384`` rows at a time. ``method``: ``"flat"`` (exact), ``"ivf"`` (FAISS
    ``IndexIVFScalarQuantizer``, 8-bit, ``nlist`` lists (default about ``4 sqrt(n)``, a
    power of two), ``nprobe`` of them searched), or ``"auto"``: flat up to ``exact_limit``
    rows (default :data:`EXACT_LIMIT`), IVF above. An approximate search is followed by
    :func:`recall_at_k` on ``recall_queries`` sampled rows. Without FAISS the search is
    exact, with NumPy. ``out``: a file for the answer (:class:`NeighbourTable`), so
    memory holds a block of it, not all ``n x k``; IVF keeps one shard of the database
    (:data:`_IVF_SHARD` vectors) in memory at a time.
    """
    if method not in ("auto", "flat", "ivf"):
        raise ValueError(f"method must be 'auto', 'flat' or 'ivf', got {method!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n = len(vectors)
    table = NeighbourTable(n, k, out)
    k_eff = min(k, max(n - 1, 0))
    faiss = _faiss()
    exact_limit = EXACT_LIMIT if exact_limit is None else exact_limit
    approximate = faiss is not None and (method == "ivf" or (method == "auto" and n > exact_limit))
    if k_eff == 0:
        return NeighbourSearch(table, "flat")
    dim = vectors.shape[1]
    started = time.perf_counter()
    if not approximate:
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
_CHUNK = 64  # images per verification chunk: about 10 MB of crops


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


def window_scores(indices: np.ndarray, mask: np.ndarray, read_thumbs) -> np.ndarray:
    """For each ``(i, c)`` where ``mask[i, c]``: the best correlation of a window of image i
    (centred crops at scales 1 to 0.9, and small shifts) with the whole of its neighbour
    ``indices[i, c]``, so a cropped, padded or shifted copy still lines up; NaN where not
    masked. ``read_thumbs(rows)`` returns the gray thumbnails of those images. Rows are
    done in chunks of ``_CHUNK`` (about 10 MB of crops each), so memory holds the answer
    (4 bytes an entry) and a chunk."""
    out = np.full(mask.shape, np.nan, dtype=np.float32)
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
        out[rows[local_rows], cols] = best
    return out


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


_PAIR_ROWS = 65536  # rows per block of pairs


def near_duplicate_pairs(neighbours: NeighbourTable, read_thumbs, *, candidate_similarity: float,
                         min_similarity: float, density_factor: float = 0.1,
                         density_rank: int = 5, per_image: int = 3,
                         threshold: float | None = None, scratch: str | Path | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Pairs of near copies, ``(first, second, similarity)`` arrays with ``first <
    second``, and the median threshold applied.

    Candidates are each image's ``per_image`` nearest neighbours (in the
    :class:`NeighbourTable` ``neighbours``) with embedding similarity at least
    ``candidate_similarity``, verified on thumbnails (:func:`window_scores`, the better of
    a pair's two directions); a copy is its original's nearest neighbour, or nearly. Each
    pair's threshold adapts to how crowded its neighbourhood is: at least
    ``min_similarity``, and closer to 1 than a share (``density_factor``) of the verified
    distance from each image to its ``density_rank``-th neighbour. Among many look-alikes
    (handwritten ones) only a copy far closer than the rest passes; among distinct photos,
    ``min_similarity`` rules. A given ``threshold`` replaces the rule.

    Memory: about 30 bytes an image (the candidates, their scores and each image's
    density) and the pairs kept; the thresholds of all candidate pairs, whose median is
    reported, go to a file in ``scratch`` (default: a temporary folder).
    """
    n = len(neighbours)
    per_image = min(per_image, neighbours.k)
    near = np.empty((n, per_image), dtype=neighbours.record["indices"].base)
    candidate = np.zeros((n, per_image), dtype=bool)
    for start, stop, indices, sims in neighbours.blocks():
        near[start:stop] = indices[:, :per_image]
        candidate[start:stop] = (sims[:, :per_image] >= candidate_similarity) & (near[start:stop] >= 0)
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, np.float32))
    if not candidate.any():
        return (*empty, threshold if threshold is not None else min_similarity)
    scores = window_scores(near, candidate, read_thumbs)
    verified = None
    if threshold is None:
        # Each image in a candidate pair: its verified similarity to its density_rank-th
        # neighbour (the better direction when that neighbour has it at the same rank).
        involved = candidate.any(axis=1)
        for c in range(per_image):  # a column at a time: no copy of every candidate
            involved[near[candidate[:, c], c]] = True
        rank = min(density_rank, neighbours.k) - 1
        partner = neighbours.column(rank)[:, None]
        reference = involved[:, None] & (partner >= 0)
        own = window_scores(partner, reference, read_thumbs)
        del reference
        partner = partner[:, 0]
        has = involved & (partner >= 0)
        verified = own[:, 0]
        mutual = has & (partner[partner.clip(min=0)] == np.arange(n)) & involved[partner.clip(min=0)]
        verified[mutual] = np.maximum(verified[mutual], own[partner[mutual], 0])
        verified[~has] = 0.0  # distance 1 where no partner to measure against
        del own, partner, mutual, has, involved
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    with _Scratch(scratch) as limits_file:
        for start in range(0, n, _PAIR_ROWS):
            first, second, value = _pair_values(near, candidate, scores, start,
                                                min(start + _PAIR_ROWS, n))
            if threshold is not None:
                limits = np.full(first.shape, float(threshold))
            else:
                local = ((1.0 - verified[first].astype(np.float64))
                         + (1.0 - verified[second].astype(np.float64))) / 2.0
                limits = np.maximum(min_similarity, 1.0 - density_factor * local)
                limits_file.append(limits)
            keep = value >= limits
            kept.append((first[keep], second[keep], value[keep]))
        del near, candidate, scores, verified, first, second, value, limits
        first, second, value = (np.concatenate(parts) for parts in zip(*kept))
        del kept
        give_back_memory()
        median = float(threshold) if threshold is not None else limits_file.median()
    return first, second, value, median


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
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    first, second = np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)
    outside = (first < 0) | (first >= n) | (second < 0) | (second >= n)
    if outside.any():
        at = int(np.flatnonzero(outside)[0])
        raise IndexError(f"pair ({first[at]}, {second[at]}) outside 0..{n - 1}")
    nodes = np.unique(np.concatenate([first, second]))
    if not len(nodes):
        return nodes, np.zeros(1, dtype=np.int64)
    a, b = np.searchsorted(nodes, first), np.searchsorted(nodes, second)
    graph = coo_matrix((np.ones(len(a), dtype=np.int32), (a, b)), shape=(len(nodes),) * 2)
    count, label = connected_components(graph, directed=False)
    sizes = np.bincount(label, minlength=count)
    smallest = np.full(count, len(nodes))
    np.minimum.at(smallest, label, np.arange(len(nodes)))  # nodes are sorted
    rank = np.empty(count, dtype=np.int64)
    rank[np.lexsort((smallest, -sizes))] = np.arange(count)
    order = np.lexsort((nodes, rank[label]))
    starts = np.r_[0, np.cumsum(sizes[np.argsort(rank)])]
    return nodes[order], starts
