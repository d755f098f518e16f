"""One place where seeds become generators: no global seeding anywhere in smartset."""

from __future__ import annotations

import numbers

import numpy as np

SeedLike = int | np.random.Generator | None


def resolve_rng(seed: SeedLike) -> np.random.Generator:
    """Return a ``numpy.random.Generator`` for ``seed`` (an int, a Generator, or None)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool)):
        return np.random.default_rng(seed)
    raise TypeError(
        f"seed must be an int, a numpy.random.Generator or None, got {type(seed).__name__}"
    )
