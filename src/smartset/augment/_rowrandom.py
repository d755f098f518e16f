"""Per-sample random draws for a whole batch at once: a ``numpy.random.Generator`` whose
row ``k`` of every draw depends only on ``(key, rows[k], call number)``.

Why by hand: online augmentation must give sample ``i`` of epoch ``e`` the same parameters
whatever batch it lands in. A generator per sample (``default_rng([seed, e, i])``) does
that, but costs ~35 us to build plus a Python pass through the policy per sample: at
28 x 28 it was 70 % of a DataLoader worker's time (cProfile, issue #23). NumPy has no
vectorised counter-based generator, so :class:`RowRandom` hashes ``(key, row, call,
slot)`` with SplitMix64's finaliser (a bijection on 64 bits; as a sequential generator it
passes BigCrush) and draws every sample of a batch in one array operation.

The contract a policy must keep for the batch to equal its samples drawn one by one: every
draw asks for a multiple of ``n`` values (``n`` = the batch size), sample ``k`` using the
``k``-th contiguous chunk (``size=n``, ``(n, m)`` and ``n * m`` then ``reshape(n, m)`` all
do), and the sequence of draws does not depend on ``n`` or on the values. A draw of one
value for a whole batch (a stream seed that the caller replaces) is served from row 0.
:class:`smartset.augment.AugmentedDataset` checks the contract on each policy before
using it and falls back to a generator per sample when it does not hold; distributions
other than the ones below raise :class:`NotRowwise`, which triggers the same fallback.
"""

from __future__ import annotations

import math
import operator

import numpy as np

__all__ = ["RowRandom", "NotRowwise", "mix64", "row_key"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK = (1 << 64) - 1
_S24, _S27, _S30, _S31 = (np.uint64(k) for k in (24, 27, 30, 31))
_NEVER_DRAWN = np.random.PCG64(0)  # the bit generator every RowRandom holds and never uses


_SLOTS: dict[tuple[int, int], np.ndarray] = {}  # (call, values per row) -> hashed slots


def _slot_words(call: int, per: int) -> np.ndarray:
    """The hashed slot numbers of draw ``call`` with ``per`` values a row: the same for
    every batch of a policy, so kept (read-only) instead of hashed again each batch."""
    words = _SLOTS.get((call, per))
    if words is None:
        slots = np.arange(per, dtype=np.uint64) + (np.uint64(call) << _S24)
        words = mix64(slots * _GOLDEN + _M2)
        words.flags.writeable = False
        if len(_SLOTS) < 4096:
            _SLOTS[(call, per)] = words
    return words


class NotRowwise(Exception):
    """A draw that cannot be split into per-sample rows (the caller falls back)."""


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, element-wise on a ``uint64`` array (wrapping arithmetic).

    Computed in place on a 1-d copy: NumPy's integer *array* arithmetic wraps without a
    warning (only scalar arithmetic checks overflow), so no ``np.errstate`` is needed, whose
    context variable cost more than the arithmetic on a batch's few words."""
    x = np.asarray(x, dtype=np.uint64)
    z = x.reshape(-1).copy()
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z.reshape(x.shape)


def _u64(value: int) -> np.ndarray:
    return np.array([int(value) & _MASK], dtype=np.uint64)


class RowRandom(np.random.Generator):
    """Draws for the samples ``rows`` (dataset indices) under ``key`` (seed and epoch).

    Supports ``random``, ``uniform``, ``integers``, ``choice`` (with replacement),
    ``normal`` and ``standard_normal``; anything else raises :class:`NotRowwise`.
    """

    def __init__(self, key: int, rows):
        super().__init__(_NEVER_DRAWN)  # never drawn from: every method is overridden
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        self.n = len(rows)
        self._base = mix64(_u64(key) ^ mix64(rows.astype(np.uint64) * _GOLDEN + _GOLDEN))
        self._calls = 0

    def __reduce__(self):  # a Generator pickles its bit generator; this one is not needed
        raise TypeError("RowRandom is not picklable: build it where it is used")

    # -- the raw words
    def _words(self, size) -> tuple[np.ndarray, tuple]:
        if size is None:
            shape = ()
        elif isinstance(size, (tuple, list)) or np.ndim(size) != 0:
            shape = tuple(operator.index(s) for s in size)
        else:
            shape = (operator.index(size),)
        total = math.prod(shape) if shape else 1
        n = self.n
        if n == 0 or total == 0:
            self._calls += 1
            return np.empty(0, dtype=np.uint64), shape
        if total % n == 0:
            per, base = total // n, self._base
        elif total == 1:  # one value for the whole batch: row 0's
            per, base = 1, self._base[:1]
        else:
            raise NotRowwise(f"a draw of {total} values for {n} samples")
        call = self._calls
        self._calls += 1
        words = mix64(base[:, None] ^ _slot_words(call, per)[None, :])
        return words.reshape(-1), shape

    def _unit(self, size, dtype=np.float64):
        words, shape = self._words(size)
        if np.dtype(dtype) == np.float32:
            out = (words >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)
        else:
            out = (words >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)
        return out.reshape(shape) if shape else out[0]

    # -- the distributions the transforms use
    def random(self, size=None, dtype=np.float64, out=None):
        if out is not None:
            raise NotRowwise("random(out=...)")
        return self._unit(size, dtype)

    def uniform(self, low=0.0, high=1.0, size=None):
        u = self._unit(size)
        return low + (np.asarray(high, dtype=float) - low) * u

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        if high is None:
            low, high = 0, low
        if np.ndim(low) or np.ndim(high):
            raise NotRowwise("integers with array bounds")
        low, high = int(low), int(high) + (1 if endpoint else 0)
        if high <= low:
            raise ValueError(f"integers: low >= high ({low} >= {high})")
        u = np.asarray(self._unit(size))
        value = np.minimum(np.floor(u * float(high - low)), float(high - low - 1))
        out = (value.astype(np.int64) + low).astype(dtype)
        return out if out.ndim else out[()]

    def choice(self, a, size=None, replace=True, p=None, axis=0, shuffle=True):
        if not replace or axis != 0:
            raise NotRowwise("choice without replacement")
        pool = np.arange(a) if np.ndim(a) == 0 else np.asarray(a)
        if len(pool) == 0:
            raise ValueError("choice: a cannot be empty")
        u = np.asarray(self._unit(size))
        if p is None:
            pick = np.minimum((u * len(pool)).astype(np.int64), len(pool) - 1)
        else:
            cdf = np.cumsum(np.asarray(p, dtype=float))
            pick = np.minimum(np.searchsorted(cdf / cdf[-1], u, side="right"), len(pool) - 1)
        out = pool[pick]
        return out if np.ndim(out) else out[()]

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        if out is not None:
            raise NotRowwise("standard_normal(out=...)")
        u1 = np.asarray(self._unit(size))
        u2 = np.asarray(self._unit(size))
        z = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2 * np.pi * u2)  # Box-Muller
        z = z.astype(dtype)
        return z if z.ndim else z[()]

    def normal(self, loc=0.0, scale=1.0, size=None):
        return loc + np.asarray(scale, dtype=float) * self.standard_normal(size)


def _refuse(name):
    def method(self, *args, **kwargs):
        raise NotRowwise(f"Generator.{name} is not drawn per sample")
    method.__name__ = name
    return method


for _name in dir(np.random.Generator):
    if not _name.startswith("_") and _name not in RowRandom.__dict__ \
            and callable(getattr(np.random.Generator, _name)):
        setattr(RowRandom, _name, _refuse(_name))


def row_key(*parts: int) -> int:
    """One 64-bit key from integers (a seed, an epoch, a step): each part mixed in turn."""
    key = np.zeros(1, dtype=np.uint64)
    for part in parts:
        key = mix64(key * _GOLDEN ^ _u64(part))
    return int(key[0])
