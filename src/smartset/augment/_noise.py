"""Random fields that replay: per-sample noise addressed by (stream, index).

A batch draws one stream seed; sample ``i`` of it reads the values at ``i * m`` onwards of
that stream (``m`` values per sample, an even number). The whole batch is one fast call of
a PCG64 generator, and a single sample is replayed by advancing a fresh generator of the
same stream to its offset, so the values are bit-identical either way. Seeds stay below
``2**53`` so the recorded parameters survive JSON readers that use doubles.
"""

from __future__ import annotations

import numpy as np
import torch

STREAM_LIMIT = 2**53


def draw_streams(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    """``n`` stream seeds (int64) drawn from ``rng``."""
    return rng.integers(0, STREAM_LIMIT, size=n, dtype=np.int64)


def stream_uniform(streams: np.ndarray, indices: np.ndarray, n: int) -> np.ndarray:
    """Uniform ``float32`` values in ``[0, 1)``, shape ``(len(streams), n)``.

    Row ``k`` is the ``indices[k]``-th slot of ``n`` values (rounded up to an even count) of
    stream ``streams[k]``; any subset of rows, drawn alone, gives the same values.
    """
    streams = np.asarray(streams, dtype=np.int64).reshape(-1)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    slot = n + (n & 1)
    out = np.empty((len(streams), slot), dtype=np.float32)
    if len(streams) == 0 or n == 0:
        return out[:, :n]
    if (streams == streams[0]).all() and (np.diff(indices) == 1).all():
        # the common case, a whole batch of one stream: one call, no copies
        bits = np.random.PCG64(int(streams[0]))
        bits.advance(int(indices[0]) * slot // 2)  # a float32 draw takes half a 64-bit step
        out = np.random.Generator(bits).random(len(streams) * slot, dtype=np.float32)
        return out.reshape(len(streams), slot)[:, :n]
    for stream in np.unique(streams):
        rows = np.flatnonzero(streams == stream)
        wanted = indices[rows]
        low, high = int(wanted.min()), int(wanted.max())
        if high - low + 1 <= 2 * len(rows) + 8:  # dense: one call for the span
            bits = np.random.PCG64(int(stream))
            bits.advance(low * slot // 2)
            span = np.random.Generator(bits).random((high - low + 1) * slot, dtype=np.float32)
            out[rows] = span.reshape(-1, slot)[wanted - low]
        else:
            for row, index in zip(rows, wanted):
                bits = np.random.PCG64(int(stream))
                bits.advance(int(index) * slot // 2)
                out[row] = np.random.Generator(bits).random(slot, dtype=np.float32)
    return out[:, :n]


def stream_words(streams: np.ndarray, indices: np.ndarray, words: int) -> np.ndarray:
    """Raw 64-bit words, shape ``(len(streams), words)``: row ``k`` is the ``indices[k]``-th
    slot of ``words`` words of stream ``streams[k]`` (one generator step per word)."""
    streams = np.asarray(streams, dtype=np.int64).reshape(-1)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    out = np.empty((len(streams), words), dtype=np.uint64)
    if len(streams) == 0 or words == 0:
        return out
    if (streams == streams[0]).all() and (np.diff(indices) == 1).all():
        bits = np.random.PCG64(int(streams[0]))
        bits.advance(int(indices[0]) * words)
        return bits.random_raw(len(streams) * words).reshape(len(streams), words)
    for stream in np.unique(streams):
        rows = np.flatnonzero(streams == stream)
        wanted = indices[rows]
        low, high = int(wanted.min()), int(wanted.max())
        if high - low + 1 <= 2 * len(rows) + 8:
            bits = np.random.PCG64(int(stream))
            bits.advance(low * words)
            out[rows] = bits.random_raw((high - low + 1) * words).reshape(-1, words)[wanted - low]
        else:  # sparse (a shuffled batch): one generator walked up the sorted indices
            bits, at = np.random.PCG64(int(stream)), 0
            for row in rows[np.argsort(wanted, kind="stable")]:
                start = int(indices[row]) * words
                bits.advance((start - at) % (1 << 128))  # a repeated index steps back
                out[row] = bits.random_raw(words)
                at = start + words
    return out


def stream_odd11(streams: np.ndarray, indices: np.ndarray, n: int) -> np.ndarray:
    """Uniform noise as odd integers in ``[-2047, 2047]`` (``float32``, exact), shape
    ``(len(streams), n)``: four 11-bit values from each 64-bit word."""
    words = (n + 3) // 4
    w = stream_words(streams, indices, words)
    # the four 16-bit lanes of each word, low lane first on every platform; top 11 bits each
    lanes = w.astype("<u8", copy=False).view("<u2").reshape(len(w), 4 * words)[:, :n]
    out = (lanes >> np.uint16(5)).astype(np.float32)
    out *= np.float32(2)
    out -= np.float32(2047)
    return out


def stream_normal(streams: np.ndarray, indices: np.ndarray, n: int,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normal ``float32`` values, shape ``(len(streams), n)`` (Box-Muller on
    :func:`stream_uniform`, so the count of values drawn never depends on their values)."""
    half = (n + 1) // 2
    u = torch.from_numpy(stream_uniform(streams, indices, 2 * half)).to(device)
    u1, u2 = u[:, :half], u[:, half:]
    radius = torch.sqrt(-2.0 * torch.log1p(-u1))  # 1 - u1 lies in (0, 1]
    angle = (2.0 * np.pi) * u2
    return torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)[:, :n]
