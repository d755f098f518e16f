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
    for stream in np.unique(streams):
        rows = np.flatnonzero(streams == stream)
        wanted = indices[rows]
        low, high = int(wanted.min()), int(wanted.max())
        if high - low + 1 <= 2 * len(rows) + 8:  # dense: one call for the span
            bits = np.random.PCG64(int(stream))
            bits.advance(low * slot // 2)  # float32 draws take half a 64-bit step each
            span = np.random.Generator(bits).random((high - low + 1) * slot, dtype=np.float32)
            out[rows] = span.reshape(-1, slot)[wanted - low]
        else:
            for row, index in zip(rows, wanted):
                bits = np.random.PCG64(int(stream))
                bits.advance(int(index) * slot // 2)
                out[row] = np.random.Generator(bits).random(slot, dtype=np.float32)
    return out[:, :n]


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
