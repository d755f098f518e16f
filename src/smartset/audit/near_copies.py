"""Near duplicates, as one phase with its own state: candidates from an embedding, each
candidate pair verified on pixels, and sets that do not chain.

1. **Candidates**: each image's nearest neighbours (a :class:`NeighbourTable` over the
   embedding the features plan chose: a pretrained backbone on photos, pixels elsewhere,
   see :mod:`smartset.audit.features`) that are at least ``candidate_similarity`` alike.
2. **Verification** on the audit's 48 x 48 gray thumbnails, by one of two rules:

   - ``windows`` (photos): every window of one image (the whole; crops of 98.75% to 90%
     of each side in steps of 1.25%, at 9 or 25 positions from edge to edge; small
     shifts) against
     the whole of the other, in both directions: a copy cropped anywhere, resized,
     re-encoded or brightened lines up with its original;
   - ``aligned`` (small gray images such as digits): both images centred on their centre
     of mass and turned to their principal axis (moments of each pixel's distance from the
     background), then correlated at 32 x 32 over shifts of up to 2 pixels: a shifted or
     rotated copy lines up.

   A pair passes when its verified similarity is at least the mode's floor and closer to
   1 than a share (``density_factor``) of the verified distance from each image to its
   ``density_rank``-th neighbour: among look-alikes (handwriting) only a copy far closer
   than the rest passes.
3. **Sets without chaining** (:func:`group_complete`): pairs are joined best first, and
   two sets merge only when every pair across them passes verification (complete
   linkage; pairs that were not candidates are verified when asked). A chain of
   look-alikes A~B~C with A and C unlike stays apart.

Memory: the candidates and their scores (about 30 bytes an image), thumbnails read a
chunk at a time, and the pairs that pass.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from smartset._memory import give_back_memory
from smartset.audit.neighbours import _pair_values, _Scratch, crop_vectors, raw_window_vectors
from smartset.neighbours import NeighbourTable

__all__ = ["MODES", "WINDOWS", "window_pair_scores", "aligned_thumbs", "aligned_vectors",
           "aligned_pair_scores", "pair_scorer", "near_copy_pairs", "group_complete",
           "MODE_FLOOR", "MODE_DENSITY"]

MODES = ("windows", "aligned")


def _offsets(scale: float) -> list[float]:
    """Window positions along one side: from one edge to the other, 5 of them where the
    window can move more than 2.5% of the side, else 3."""
    slack = (1.0 - scale) / 2.0
    return [float(v) for v in np.linspace(-slack, slack, 5 if slack >= 0.025 else 3)]


# (scale, x offset, y offset) of one image's windows, each compared with the whole of the
# other; then shifted windows compared with the other's centred window of the same scale.
# Steps of 1.25% in scale and at most 1.25% in position: a copy cropped anywhere lines up
# within a third of a pixel at the 24 x 24 of the comparison.
_SHIFT = 0.94
_SCALES = (0.9875, 0.975, 0.9625, 0.95, 0.9375, 0.925, 0.9125, 0.9)
WINDOWS = ([(1.0, 0.0, 0.0)]
           + [(s, dx, dy) for s in _SCALES for dx in _offsets(s) for dy in _offsets(s)]
           + [(_SHIFT, dx, dy) for dx in (-0.03, 0.0, 0.03) for dy in (-0.03, 0.0, 0.03)
              if dx or dy])
_REFERENCES = [(1.0, 0.0, 0.0), (_SHIFT, 0.0, 0.0)]
_REFERENCE_OF = np.array([1 if s == _SHIFT else 0 for s, _, _ in WINDOWS])
_PAIR_CHUNK = 32  # pairs per verification chunk: ~12 MB of window vectors

MODE_FLOOR = {"windows": None, "aligned": 0.9}
"""The least verified similarity a pair needs, per mode (None: the audit's
``near_duplicate_similarity``). The aligned score runs higher for look-alikes (smooth
strokes correlate well), so there the density rule decides and the floor only guards."""
MODE_DENSITY = {"windows": 0.1, "aligned": 0.3}
"""The share of the neighbourhood's verified distance a pair must beat, per mode."""


def _one_direction(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Best correlation of a window of ``a[p]`` with the whole (or the centred shift
    window) of ``b[p]``, for each pair ``p``."""
    crops = crop_vectors(a, WINDOWS)                 # P x W x 576
    reference = crop_vectors(b, _REFERENCES)         # P x 2 x 576
    best = np.full(len(a), -1.0, dtype=np.float32)
    for r in (0, 1):
        columns = np.flatnonzero(_REFERENCE_OF == r)
        if not len(columns):
            continue
        scores = np.einsum("pwd,pd->pw", crops[:, columns], reference[:, r])
        np.maximum(best, scores.max(axis=1), out=best)
    return best


def window_pair_scores(first_thumbs: np.ndarray, second_thumbs: np.ndarray) -> np.ndarray:
    """Verified similarity of each pair of gray thumbnails (``P x s x s`` each, pair ``p``
    is ``(first_thumbs[p], second_thumbs[p])``): the better of both directions of
    :func:`_one_direction`, so the crop may be either image, at any position."""
    out = np.empty(len(first_thumbs), dtype=np.float32)
    for start in range(0, len(out), _PAIR_CHUNK):
        a = first_thumbs[start:start + _PAIR_CHUNK]
        b = second_thumbs[start:start + _PAIR_CHUNK]
        out[start:start + len(a)] = np.maximum(_one_direction(a, b), _one_direction(b, a))
    return out


_ALL_WINDOWS = WINDOWS + [(_SHIFT, 0.0, 0.0)]  # the windows, then the centred shift window
_POSITION_CHUNK = 48  # distinct pairs per chunk: at most 96 images' windows, 36 MB


def _verify_threads(chunks: int) -> int:
    """Threads for the window verification: the free cores (NumPy's products release the
    GIL), 1 for a single chunk or inside an engine worker."""
    if chunks < 2:
        return 1
    from smartset._threads import choose_threads

    return max(1, min(chunks, choose_threads()))


def _chunk_scores(thumbs: np.ndarray, at_a: np.ndarray, at_b: np.ndarray) -> np.ndarray:
    """The verified similarity of the pairs ``(thumbs[at_a[p]], thumbs[at_b[p]])`` of one
    chunk, the better of both directions."""
    count = len(WINDOWS)
    references = [0, count]  # the whole image and the centred shift window
    vectors, norms = raw_window_vectors(thumbs, _ALL_WINDOWS)           # U x (W+1) x 576
    safe = np.where(norms > 1e-6, norms, 1.0)
    unit = vectors[:, references] / safe[:, references, None]
    unit -= unit.mean(axis=2, keepdims=True)                          # U x 2 x 576

    def one_direction(x, y):  # as _one_direction: x's windows against y's references
        scores = np.einsum("pwd,prd->pwr", vectors[x, :count], unit[y]) / safe[x, :count, None]
        return np.maximum(scores[:, _REFERENCE_OF == 0, 0].max(axis=1),
                          scores[:, _REFERENCE_OF == 1, 1].max(axis=1))

    return np.maximum(one_direction(at_a, at_b), one_direction(at_b, at_a))


def _window_scores_of_positions(first: np.ndarray, second: np.ndarray, read_thumbs
                                ) -> np.ndarray:
    """:func:`window_pair_scores` of pairs of positions, with less work: each unordered
    pair is scored once (the score is symmetric, and kNN candidates come in both
    directions), pairs sorted so that a chunk shares images, each image of a chunk read
    and cut into windows once (:func:`raw_window_vectors`: not centred or normed, the
    norms divide the scores instead), and each pair's windows correlated with its
    partner's two references only."""
    first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
    out = np.empty(len(first), dtype=np.float32)
    if not len(first):
        return out
    low, high = np.minimum(first, second), np.maximum(first, second)
    base = int(high.max()) + 1
    keys, back = np.unique(low * base + high, return_inverse=True)
    low, high = keys // base, keys % base
    order = _local_order(low, high)
    low, high = low[order], high[order]
    values = np.empty(len(keys), dtype=np.float32)
    chunks = range(0, len(keys), _POSITION_CHUNK)

    def read(start):  # in the calling thread: the thumbnail reader need not be thread-safe
        a, b = low[start:start + _POSITION_CHUNK], high[start:start + _POSITION_CHUNK]
        rows, at = np.unique(np.r_[a, b], return_inverse=True)
        return start, read_thumbs(rows), at[:len(a)], at[len(a):]

    def scored(start, thumbs, at_a, at_b):
        values[start:start + len(at_a)] = _chunk_scores(thumbs, at_a, at_b)

    threads = _verify_threads(len(chunks))
    from smartset._threads import blas_threads

    with blas_threads(1):  # the chunks are the parallelism (see blas_threads)
        _score_chunks(chunks, threads, read, scored)
    unsorted = np.empty_like(values)
    unsorted[order] = values
    out[:] = unsorted[back.reshape(-1)]
    return out


def _score_chunks(chunks, threads: int, read, scored) -> None:
    """``scored(*read(start))`` for every chunk start, on ``threads`` threads."""
    if threads == 1:
        for start in chunks:
            scored(*read(start))
    else:
        # a pool of its own, shut down on return: no thread outlives the call (the engine
        # forks its workers only while the process has one thread)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads, thread_name_prefix="smartset-verify") as pool:
            pending = []
            for start in chunks:  # at most `threads` chunks in memory at once
                pending.append(pool.submit(scored, *read(start)))
                if len(pending) >= threads:
                    pending.pop(0).result()
            for future in pending:
                future.result()


_LOCAL_ORDER_LIMIT = 1 << 18


def _local_order(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """An order of the pairs ``(low[p], high[p])`` in which pairs that share images come
    close together, so that a chunk cuts fewer images into windows: the images numbered
    breadth-first over the pair graph (neighbours of neighbours next to each other), the
    pairs sorted by their two numbers. A third fewer window cuts than sorting by position
    on the photos. Above ``_LOCAL_ORDER_LIMIT`` pairs, position order (the walk is Python)."""
    if len(low) > _LOCAL_ORDER_LIMIT or len(low) < 2:
        return np.arange(len(low))
    nodes, at = np.unique(np.r_[low, high], return_inverse=True)
    a, b = at[:len(low)], at[len(low):]
    ends = np.r_[a, b]
    partners = np.r_[b, a]
    by_node = np.argsort(ends, kind="stable")
    starts = np.searchsorted(ends[by_node], np.arange(len(nodes) + 1))
    adjacency = partners[by_node].tolist()
    starts = starts.tolist()
    rank = np.full(len(nodes), -1, dtype=np.int64)
    number = 0
    for root in range(len(nodes)):
        if rank[root] >= 0:
            continue
        rank[root] = number
        number += 1
        queue = [root]
        for node in queue:  # grows while walked: breadth first
            for other in adjacency[starts[node]:starts[node + 1]]:
                if rank[other] < 0:
                    rank[other] = number
                    number += 1
                    queue.append(other)
    first, second = np.minimum(rank[a], rank[b]), np.maximum(rank[a], rank[b])
    return np.lexsort((second, first))


_ALIGN_SIDE = 32
_ALIGN_SHIFT = 2
_VECTOR_SIDE = 16


def _alignments(thumbs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For gray thumbnails ``n x h x w``: each one's background (the median level), the
    2 x 3 affine matrix that moves its centre of mass to the centre and turns its
    principal axis upright (moments, in float64, of each pixel's distance from the
    background; the identity for a flat image) and whether it moves (not flat). All
    images at once: no per-image
    moments, histograms or medians in Python."""
    n, height, width = thumbs.shape
    flat = thumbs.reshape(n, -1)
    if thumbs.dtype == np.uint8:  # the median level: the (size+1)//2-th smallest
        middle = (flat.shape[1] + 1) // 2 - 1
        background = np.partition(flat, middle, axis=1)[:, middle].astype(np.float64)
    else:
        background = np.median(flat.astype(np.float32), axis=1).astype(np.float64)
    weight = np.abs(thumbs.astype(np.float64) - background[:, None, None])
    x, y = np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)
    columns, rows = weight.sum(axis=1), weight.sum(axis=2)  # n x w, n x h
    m00 = columns.sum(axis=1)
    ok = m00 > 1e-6
    safe = np.where(ok, m00, 1.0)
    cx, cy = columns @ x / safe, rows @ y / safe
    mu20 = columns @ (x * x) / safe - cx * cx
    mu02 = rows @ (y * y) / safe - cy * cy
    mu11 = (weight @ x) @ y / safe - cx * cy
    axis = 0.5 * np.degrees(np.arctan2(2 * mu11, mu20 - mu02))
    tilt = np.where(axis > 0, axis - 90.0, axis + 90.0)  # from the vertical, in (-90, 90]
    angle = np.radians(tilt)
    alpha, beta = np.cos(angle), np.sin(angle)  # cv2.getRotationMatrix2D, scale 1
    matrices = np.zeros((n, 2, 3))
    matrices[:, 0, 0], matrices[:, 0, 1] = alpha, beta
    matrices[:, 1, 0], matrices[:, 1, 1] = -beta, alpha
    matrices[:, 0, 2] = (1 - alpha) * cx - beta * cy + width / 2.0 - cx
    matrices[:, 1, 2] = beta * cx + (1 - alpha) * cy + height / 2.0 - cy
    matrices[~ok] = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return background, matrices, ok


def aligned_thumbs(thumbs: np.ndarray, side: int = _ALIGN_SIDE) -> np.ndarray:
    """Each gray thumbnail centred on its centre of mass and turned so that its principal
    axis is upright (moments of each pixel's distance from the median, the background),
    resized to ``side``: float32 ``n x side x side``. A shifted or rotated copy of an image
    comes out nearly the same as the image. The geometry of a chunk is computed at once
    (:func:`_alignments`); each image is then one warp and one resize."""
    import cv2

    out = np.empty((len(thumbs), side, side), dtype=np.float32)
    for start in range(0, len(thumbs), 1024):
        chunk = np.asarray(thumbs[start:start + 1024])
        if chunk.ndim != 3:
            raise ValueError(f"thumbnails must be n x h x w gray images, got shape {chunk.shape}")
        background, matrices, moved = _alignments(chunk)
        height, width = chunk.shape[1:]
        for i, thumb in enumerate(chunk):
            image = thumb.astype(np.float32)
            if moved[i]:
                image = cv2.warpAffine(image, matrices[i], (width, height),
                                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                       borderValue=float(background[i]))
            out[start + i] = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    return out


def aligned_vectors(thumbs: np.ndarray, *, with_images: bool = False):
    """Candidate embedding for the ``aligned`` mode: :func:`aligned_thumbs` at 16 x 16,
    centred and unit-normed (float32 ``n x 256``). With ``with_images``, also the aligned
    images at 32 x 32 (uint8), from the same alignment."""
    import cv2

    images = aligned_thumbs(thumbs)
    small = np.stack([cv2.resize(image, (_VECTOR_SIDE, _VECTOR_SIDE),
                                 interpolation=cv2.INTER_AREA) for image in images]
                     ).reshape(len(images), -1) if len(images) else np.zeros((0, 256), np.float32)
    small -= small.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(small, axis=1, keepdims=True)
    vectors = small / np.where(norms > 1e-6, norms, 1.0)
    if with_images:
        return vectors, np.clip(np.rint(images), 0, 255).astype(np.uint8)
    return vectors


def aligned_pair_scores(first_thumbs: np.ndarray, second_thumbs: np.ndarray) -> np.ndarray:
    """Verified similarity of each pair in the ``aligned`` mode: the best normalised
    correlation of the aligned images over shifts of up to 2 pixels at 32 x 32."""
    return _aligned_scores(aligned_thumbs(first_thumbs), aligned_thumbs(second_thumbs))


def _aligned_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For pairs of aligned images (``P x s x s`` each): the best normalised correlation
    (OpenCV's ``TM_CCOEFF_NORMED``) of ``a[p]`` with the windows of ``b[p]`` padded by its
    edge pixels, shifted by up to ``_ALIGN_SHIFT`` pixels."""
    a = np.asarray(a)
    return _aligned_scores_at(np.concatenate([a, np.asarray(b, a.dtype)]),
                              np.arange(len(a)), np.arange(len(a), 2 * len(a)))


def _aligned_scores_at(images: np.ndarray, first: np.ndarray, second: np.ndarray
                       ) -> np.ndarray:
    """:func:`_aligned_scores` of the pairs ``(images[first[p]], images[second[p]])``:
    each image converted and padded once, however many pairs it is in, then one small
    OpenCV call a pair (faster here than NumPy, or FFTs, over all pairs at once)."""
    import cv2

    images = np.asarray(images, np.float32)
    pad = _ALIGN_SHIFT
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad)), mode="edge")  # = REPLICATE
    match, method = cv2.matchTemplate, cv2.TM_CCOEFF_NORMED
    out = np.empty(len(first), dtype=np.float32)
    for p, (a, b) in enumerate(zip(np.asarray(first).tolist(), np.asarray(second).tolist())):
        out[p] = match(padded[b], images[a], method).max()
    return out


def pair_scorer(mode: str, read_thumbs: Callable[[np.ndarray], np.ndarray],
                read_aligned: Callable[[np.ndarray], np.ndarray] | None = None
                ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``score(first, second) -> similarities`` of pairs of positions, for ``mode``,
    reading the thumbnails with ``read_thumbs(positions)`` a chunk at a time (in the
    ``aligned`` mode, ``read_aligned(positions)``, when given, returns them aligned
    already: :func:`aligned_vectors` made them once)."""
    if mode not in MODES:
        raise ValueError(f"verification mode must be one of {MODES}, got {mode!r}")
    chunk = 1024

    def score(first: np.ndarray, second: np.ndarray) -> np.ndarray:
        first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
        if mode == "windows":  # chunks of its own, each pair once
            return _window_scores_of_positions(first, second, read_thumbs)
        out = np.empty(len(first), dtype=np.float32)
        for start in range(0, len(first), chunk):
            stop = min(start + chunk, len(first))
            # each image of the chunk read and aligned once, however many pairs it is in
            rows, at = np.unique(np.r_[first[start:stop], second[start:stop]],
                                 return_inverse=True)
            aligned = (read_aligned(rows) if read_aligned is not None
                       else aligned_thumbs(read_thumbs(rows)))
            out[start:stop] = _aligned_scores_at(aligned, at[:stop - start],
                                                 at[stop - start:])
        return out

    return score


def _scores_of(near: np.ndarray, mask: np.ndarray, score) -> np.ndarray:
    """``score`` of each masked ``(row, near[row, c])``, NaN elsewhere, done in blocks."""
    return _scores_of_many([(near, mask)], score)[0]


def _scores_of_many(tables, score) -> list[np.ndarray]:
    """:func:`_scores_of` of several ``(near, mask)`` tables over the same rows, each
    block of rows scored in one call: a pair or an image in two tables is verified (cut
    into windows) once, not once per table."""
    outs = [np.full(mask.shape, np.nan, dtype=np.float32) for _, mask in tables]
    block = 16384
    for start in range(0, len(tables[0][0]), block):
        found = []
        for near, mask in tables:
            rows, cols = np.nonzero(mask[start:start + block])
            found.append((rows + start, cols, near))
        if not sum(rows.size for rows, _, _ in found):
            continue
        values = score(np.concatenate([rows for rows, _, _ in found]),
                       np.concatenate([near[rows, cols] for rows, cols, near in found]))
        at = 0
        for out, (rows, cols, _) in zip(outs, found):
            out[rows, cols] = values[at:at + rows.size]
            at += rows.size
    return outs


def near_copy_pairs(neighbours, score, *, candidate_similarity, min_similarity: float,
                    density_factor: float = 0.1, density_rank: int = 5, per_image: int = 3,
                    threshold: float | None = None, scratch: str | Path | None = None):
    """Candidate pairs verified with ``score`` (see :func:`pair_scorer`).

    ``neighbours``: a :class:`NeighbourTable`, or several (one per embedding; their
    candidates are pooled, each pair once), with ``candidate_similarity`` a number or one
    per table. Each image's ``per_image`` nearest of each table at least that alike are
    candidates; the first table's ``density_rank``-th neighbour measures how crowded an
    image's neighbourhood is.

    Returns ``(first, second, value, median_limit, limit_of)``: the pairs that pass
    (``first < second``), their verified similarity, the median of every candidate
    pair's limit, and ``limit_of(a, b)``: the limit pairs of positions must reach (for
    pairs that were no candidates, asked by :func:`group_complete`).
    """
    tables = [neighbours] if isinstance(neighbours, NeighbourTable) else list(neighbours)
    floors = (list(candidate_similarity) if isinstance(candidate_similarity, (list, tuple))
              else [candidate_similarity] * len(tables))
    n = len(tables[0])
    width = sum(min(per_image, t.k) for t in tables)
    near = np.full((n, width), -1, dtype=np.int64 if n >= 2**31 else np.int32)
    candidate = np.zeros((n, width), dtype=bool)
    column = 0
    for table, floor in zip(tables, floors):
        take = min(per_image, table.k)
        for start, stop, indices, sims in table.blocks():
            part = indices[:, :take]
            fresh = (sims[:, :take] >= floor) & (part >= 0)
            for c in range(column):  # a partner an earlier table proposed: once
                fresh &= ~(candidate[start:stop, c:c + 1] & (near[start:stop, c:c + 1] == part))
            near[start:stop, column:column + take] = part
            candidate[start:stop, column:column + take] = fresh
        column += take
    neighbours = tables[0]
    verified = scores = None
    if threshold is None:
        # each image in a candidate pair: its verified similarity to its density_rank-th
        # neighbour (the better direction when that neighbour has it at the same rank)
        involved = candidate.any(axis=1)
        for c in range(width):
            involved[near[candidate[:, c], c]] = True
        rank = min(density_rank, neighbours.k) - 1
        partner = neighbours.column(rank)[:, None]
        # with the candidates' own scores in the same calls: an image in both is cut into
        # windows once
        own, scores = _scores_of_many([(partner, involved[:, None] & (partner >= 0)),
                                       (near, candidate)], score)
        own = own[:, 0]
        partner = partner[:, 0]
        has = involved & (partner >= 0)
        safe = partner.clip(min=0)
        mutual = has & (partner[safe] == np.arange(n)) & involved[safe]
        own[mutual] = np.maximum(own[mutual], own[partner[mutual]])
        own[~has] = 0.0  # distance 1 where there is no partner to measure against
        verified = own
        del partner, has, mutual, involved

    def limits_for(first: np.ndarray, second: np.ndarray) -> np.ndarray:
        if threshold is not None:
            return np.full(len(first), float(threshold))
        local = ((1.0 - verified[first].astype(np.float64))
                 + (1.0 - verified[second].astype(np.float64))) / 2.0
        return np.maximum(min_similarity, 1.0 - density_factor * local)

    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if not candidate.any():
        median = threshold if threshold is not None else min_similarity
        return (*empty, float(median), limits_for)
    if scores is None:
        scores = _scores_of(near, candidate, score)
    kept = []
    with _Scratch(scratch) as limits_file:
        for start in range(0, n, 65536):
            first, second, value = _pair_values(near, candidate, scores, start,
                                                min(start + 65536, n))
            limits = limits_for(first, second)
            if threshold is None:
                limits_file.append(limits)
            keep = value >= limits
            kept.append((first[keep].astype(np.int64), second[keep].astype(np.int64),
                         value[keep]))
        del near, candidate, scores
        first, second, value = (np.concatenate(parts) for parts in zip(*kept))
        give_back_memory()
        median = float(threshold) if threshold is not None else limits_file.median()
    return first, second, value, median, limits_for


def group_complete(first: np.ndarray, second: np.ndarray, value: np.ndarray,
                   passes: Callable[[int, int], float | None] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sets of near copies from verified pairs, by complete linkage: pairs are taken best
    first, and two sets merge only when every pair across them is a verified pair, or
    ``passes(a, b)`` (called for the others) returns its similarity (None: it fails).
    Without ``passes`` only the given pairs count.

    Returns ``(members, starts, best)`` as :func:`smartset.audit.neighbours.group_arrays`
    (sets largest first, then by first member; members ascending), and ``best``: each
    member's best similarity inside its set (aligned with ``members``).
    """
    known: dict[tuple[int, int], float] = {}
    for a, b, v in zip(first.tolist(), second.tolist(), value.tolist()):
        key = (a, b) if a < b else (b, a)
        known[key] = max(v, known.get(key, -np.inf))
    failed: set[tuple[int, int]] = set()
    group_of: dict[int, int] = {}
    members: dict[int, list[int]] = {}

    def similarity(x: int, y: int) -> float | None:
        key = (x, y) if x < y else (y, x)
        if key in known:
            return known[key]
        if key in failed or passes is None:
            return None
        found = passes(*key)
        if found is None:
            failed.add(key)
        else:
            known[key] = float(found)
        return None if found is None else float(found)

    for p in np.argsort(-np.asarray(value, dtype=np.float64), kind="stable"):
        a, b = int(first[p]), int(second[p])
        ga, gb = group_of.get(a), group_of.get(b)
        if ga is not None and ga == gb:
            continue
        left = members[ga] if ga is not None else [a]
        right = members[gb] if gb is not None else [b]
        if not all(similarity(x, y) is not None for x in left for y in right):
            continue
        target = ga if ga is not None else (gb if gb is not None else a)
        joined = left + right
        for old in (ga, gb):
            if old is not None and old != target:
                members.pop(old)
        members[target] = joined
        for m in joined:
            group_of[m] = target
    sets = sorted((sorted(m) for m in members.values()), key=lambda m: (-len(m), m[0]))
    flat = [m for s in sets for m in s]
    starts = np.r_[0, np.cumsum([len(s) for s in sets])].astype(np.int64)
    best = np.array([max(known[(min(m, o), max(m, o))] for o in s if o != m and
                         (min(m, o), max(m, o)) in known) for s in sets for m in s],
                    dtype=np.float32)
    return np.array(flat, dtype=np.int64), starts, best


@functools.lru_cache(maxsize=1)
def _describe_windows() -> str:
    return (f"{len(WINDOWS)} windows (crops of 98.75-90% of each side at up to 25 "
            f"positions, shifts) against the whole, both directions, 24 x 24 correlation")


def describe(mode: str) -> str:
    """A line for the report: how candidate pairs are verified in ``mode``."""
    if mode == "windows":
        return "pixels: " + _describe_windows()
    return ("pixels: centred on the centre of mass, turned to the principal axis, "
            "32 x 32 correlation over shifts of up to 2 px")
