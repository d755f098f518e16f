"""Declarative parameter checks: each transform lists its bounds; one helper enforces them.

The conformance tests read the same table to build an out-of-range value for every bound
of every registered transform, so a new transform is checked without new test code.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

from smartset.augment.errors import AugmentParameterError


@dataclass(frozen=True)
class Bound:
    """Every number of a parameter (a number, or each number of a pair) must lie in
    ``[low, high]`` (ends open with ``low_open``/``high_open``); ``integer``: whole numbers."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False  # None allowed

    def describe(self) -> str:
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        kind = "whole numbers" if self.integer else "numbers"
        return f"{kind} in {left}{self.low:g}, {self.high:g}{right}"

    def ok(self, x: float) -> bool:
        if self.integer and x != int(x):
            return False
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return above and below and not math.isnan(x)

    def invalid_example(self) -> float:
        """A value outside the bound (for the automatic tests)."""
        if math.isfinite(self.high):
            return self.high + 1
        return self.low - 1


def numbers_of(value) -> list[float] | None:
    """The numbers in a number or a flat sequence of numbers; None if it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return [float(value)]
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = list(value)
        if all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in items):
            return [float(v) for v in items]
    return None


def check_params(owner: str, values: dict, bounds: dict[str, Bound]) -> None:
    for name, bound in bounds.items():
        value = values.get(name)
        if value is None and bound.optional:
            continue
        found = numbers_of(value)
        if found is None or not found:
            raise AugmentParameterError(
                f"{owner}: {name} must be a number or a (low, high) pair of {bound.describe()}, "
                f"got {value!r}.")
        bad = [x for x in found if not bound.ok(x)]
        if bad:
            raise AugmentParameterError(
                f"{owner}: {name} must hold {bound.describe()}, got {value!r}. "
                f"Choose a value in that range.")
        if len(found) == 2 and found[0] > found[1]:
            raise AugmentParameterError(
                f"{owner}: {name} as a (low, high) pair needs low <= high, got {value!r}.")
        if len(found) > 2 and name not in _LISTS:
            raise AugmentParameterError(
                f"{owner}: {name} must be a number or a (low, high) pair, got {value!r}.")


_LISTS = {"padding", "offset"}


def check_choice(owner: str, name: str, value, choices: Sequence[str]) -> None:
    if value not in choices:
        raise AugmentParameterError(f"{owner}: {name} must be one of {', '.join(map(str, choices))}, "
                                    f"got {value!r}.")


def as_range(value, *, symmetric: bool = False, around: float | None = None) -> tuple[float, float]:
    """A number or pair as ``(low, high)``: a number ``x`` means ``(-x, x)`` if ``symmetric``,
    ``(around - x, around + x)`` if ``around`` is given, else ``(x, x)``."""
    found = numbers_of(value)
    if len(found) == 2:
        return found[0], found[1]
    x = found[0]
    if symmetric:
        return -abs(x), abs(x)
    if around is not None:
        return around - x, around + x
    return x, x


def as_size(owner: str, name: str, value) -> tuple[int, int]:
    found = numbers_of(value)
    if found is None or len(found) not in (1, 2) or any(v < 1 or v != int(v) for v in found):
        raise AugmentParameterError(f"{owner}: {name} must be a positive whole number or an "
                                    f"(height, width) pair, got {value!r}.")
    return (int(found[0]), int(found[-1]))
