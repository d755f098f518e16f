"""The audit's per-sample property columns on disk: one column-major scratch file of
float64, read a column at a time, so the checks and probes hold one or two columns of
``n`` values, never the whole ``n x columns`` table."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

_ROW_BLOCK = 32768  # rows per block when a row-major file is turned into columns


class ColumnStore:
    """Named float64 columns of ``n`` values each, in one raw file (column after column),
    read with plain reads (pages of a memory map would count in the process's resident
    memory). It answers the few DataFrame calls the checks and probes make:
    ``store[name]`` (a Series), ``name in store``, ``len(store)``, ``store.columns``,
    ``store.index`` and ``store.take(rows)`` (a DataFrame of those rows, every column)."""

    def __init__(self, path: str | Path, n: int, names: list[str] | None = None):
        self.path, self.n = Path(path), int(n)
        self._layout: list[str] = list(names or [])  # column i starts at byte i * n * 8
        self._names = self._layout  # the columns shown: all, or a select()ed few
        if not self.path.exists():
            self.path.touch()

    def add_rows(self, rows_path: str | Path, n_rows: int, names: list[str],
                 keep: np.ndarray) -> None:
        """Append the columns ``names`` of a row-major ``n_rows x len(names)`` float64 file,
        its rows ``keep`` (ascending, one per row of this store), a block of rows at a
        time."""
        keep = np.asarray(keep, dtype=np.int64)
        if len(keep) != self.n:
            raise ValueError(f"{len(keep)} rows kept for a store of {self.n}")
        width, first = len(names), len(self._layout)
        with open(rows_path, "rb") as source, open(self.path, "r+b") as target:
            target.truncate((first + width) * self.n * 8)
            done = 0
            for start in range(0, n_rows, _ROW_BLOCK):
                stop = min(start + _ROW_BLOCK, n_rows)
                lo, hi = np.searchsorted(keep, [start, stop])
                if lo == hi:
                    continue
                source.seek(start * width * 8)
                block = np.fromfile(source, dtype=np.float64, count=(stop - start) * width)
                block = block.reshape(stop - start, width)[keep[lo:hi] - start]
                for c in range(width):
                    os.pwrite(target.fileno(), np.ascontiguousarray(block[:, c]).tobytes(),
                              ((first + c) * self.n + done) * 8)
                done += hi - lo
        self._layout.extend(names)

    def __len__(self) -> int:
        return self.n

    def __contains__(self, name) -> bool:
        return name in self._names

    @property
    def columns(self) -> list[str]:
        return list(self._names)

    @property
    def index(self) -> pd.RangeIndex:
        return pd.RangeIndex(self.n)

    def add(self, name: str, values) -> None:
        """Append (or replace) the column ``name``."""
        values = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
        if len(values) != self.n:
            raise ValueError(f"column {name!r} has {len(values)} values, the store {self.n}")
        at = self._layout.index(name) if name in self._layout else len(self._layout)
        with open(self.path, "r+b") as handle:
            os.pwrite(handle.fileno(), values.tobytes(), at * self.n * 8)
        if at == len(self._layout):
            self._layout.append(name)

    def values(self, name: str) -> np.ndarray:
        """The column ``name`` as a float64 array."""
        if name not in self._names:
            raise KeyError(name)
        with open(self.path, "rb") as handle:
            handle.seek(self._layout.index(name) * self.n * 8)
            return np.fromfile(handle, dtype=np.float64, count=self.n)

    def __getitem__(self, name: str) -> pd.Series:
        return pd.Series(self.values(name), name=name, copy=False)

    def select(self, names) -> ColumnStore:
        """A view of the columns ``names`` (those present), sharing the file."""
        view = ColumnStore.__new__(ColumnStore)
        view.path, view.n, view._layout = self.path, self.n, self._layout
        view._names = [name for name in names if name in self._names]
        return view

    def take(self, rows) -> pd.DataFrame:
        """Every column of ``rows`` (positions), as a DataFrame indexed by them."""
        rows = np.asarray(rows, dtype=np.int64)
        return pd.DataFrame({name: self.values(name)[rows] for name in self._names},
                            index=rows)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
