"""Per-sample parameters, stored by column, read as plain JSON dicts per sample.

A transform draws its parameters for a whole batch as NumPy columns (fast to draw and to
apply); :meth:`Params.record` gives one sample's parameters as a plain dict of Python
scalars and lists, the form recorded in the catalog and accepted back by
:meth:`Params.from_records`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["Params"]


class Params:
    """Columns of per-sample parameters: ``name -> array`` with ``n`` rows each.

    Every set has an ``applied`` column (bool): the probability gate of the transform.
    A sample whose transform was not applied records as ``{"applied": False}``.
    """

    __slots__ = ("n", "columns")

    def __init__(self, n: int, columns: Mapping[str, np.ndarray] | None = None):
        self.n = int(n)
        self.columns: dict[str, np.ndarray] = {}
        for name, values in (columns or {}).items():
            array = np.asarray(values)
            if array.shape[:1] != (self.n,):
                raise ValueError(f"parameter column {name!r} has {array.shape[:1]} rows, "
                                 f"expected {self.n}")
            self.columns[name] = array
        if "applied" not in self.columns:
            self.columns["applied"] = np.ones(self.n, dtype=bool)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    def __repr__(self) -> str:
        return f"Params(n={self.n}, columns={sorted(self.columns)})"

    def __eq__(self, other) -> bool:
        return (isinstance(other, Params) and self.n == other.n
                and self.columns.keys() == other.columns.keys()
                and all(np.array_equal(v, other.columns[k], equal_nan=v.dtype.kind == "f")
                        for k, v in self.columns.items()))

    @property
    def applied(self) -> np.ndarray:
        return self.columns["applied"]

    def record(self, index: int) -> dict:
        """Sample ``index``'s parameters as a dict of Python scalars and lists."""
        if not self.columns["applied"][index]:
            return {"applied": False}
        return {name: values[index].tolist() for name, values in self.columns.items()
                if name != "applied"}

    def records(self) -> list[dict]:
        return [self.record(i) for i in range(self.n)]

    @classmethod
    def from_records(cls, records: Sequence[Mapping], defaults: Mapping[str, object]) -> Params:
        """Rebuild columns from per-sample dicts; ``defaults`` gives every column's value
        (and dtype) for samples recorded as not applied."""
        n = len(records)
        applied = np.array([bool(r.get("applied", True)) for r in records], dtype=bool)
        columns: dict[str, np.ndarray] = {"applied": applied}
        for name, default in defaults.items():
            sample = np.asarray(default)
            column = np.empty((n, *sample.shape), dtype=sample.dtype)
            for i, r in enumerate(records):
                column[i] = r[name] if applied[i] and name in r else default
            columns[name] = column
        return cls(n, columns)

    def subset(self, rows: np.ndarray | Sequence[int]) -> Params:
        rows = np.asarray(rows, dtype=np.int64)
        return Params(len(rows), {k: v[rows] for k, v in self.columns.items()})

    @staticmethod
    def concat(parts: Sequence[Params]) -> Params:
        if not parts:
            raise ValueError("nothing to concatenate")
        names = parts[0].columns.keys()
        return Params(sum(p.n for p in parts),
                      {k: np.concatenate([p.columns[k] for p in parts]) for k in names})

    def repeat(self, n: int) -> Params:
        """Row 0 repeated ``n`` times (``same_on_batch``)."""
        return Params(n, {k: np.repeat(v[:1], n, axis=0) for k, v in self.columns.items()})
