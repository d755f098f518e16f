"""The audit's measuring phase and the per-sample state every later phase reads.

It owns what measuring leaves behind: the properties table (through
:mod:`smartset.audit.store`), the record file of embeddings and verification thumbnails
(``cache/audit/vectors-*.bin``, rows the table points into), and the typed per-sample
arrays (:class:`_Samples`) with their scratch files. Measuring is incremental: a sample
whose content is unchanged since it was measured is read back, not measured again.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from smartset.audit._columns import ColumnStore
from smartset.audit.checks import add_derived_properties, derived_properties
from smartset.audit.properties import (EMBEDDING_DIM, PROPERTIES, PROPERTIES_VERSION, RECORD,
                                       THUMB_SIDE)
from smartset.audit.store import (PROPERTIES_TABLE, TEXT_PROPERTIES, cached_properties,
                                  property_rows, same_value_rows, write_properties)
from smartset.engine import batches_of
from smartset.errors import EmptyDataError
from smartset.neighbours import VectorFile

_TABLE = PROPERTIES_TABLE  # the name older code and tests read
_TEXT_PROPERTIES = TEXT_PROPERTIES


def _vector_file(ws) -> Path:
    """Embeddings and verification thumbnails, one fixed-size record per measured image."""
    return (ws.cache_dir / "audit" /
            f"vectors-v{PROPERTIES_VERSION}-{EMBEDDING_DIM}-{THUMB_SIDE}.bin")


def store_batch(ws, batch, embedding_path: Path) -> list[tuple[str, str]]:
    """Append a batch's embeddings to disk, then its properties to the catalog."""
    good = [i for i, error in enumerate(batch["error"]) if error is None]
    errors = [(batch["id"][i], batch["error"][i]) for i, e in enumerate(batch["error"]) if e]
    if not good:
        return errors
    embedding_path.parent.mkdir(parents=True, exist_ok=True)
    records = np.zeros(len(good), dtype=RECORD)
    records["embedding"] = np.stack([batch["embedding"][i] for i in good])
    records["thumb"] = np.stack([batch["thumb"][i] for i in good])
    with open(embedding_path, "ab") as handle:
        end = handle.tell()
        if end % RECORD.itemsize:  # a torn record from a killed run: never referenced, cut it
            handle.truncate(end - end % RECORD.itemsize)
        first_row = handle.tell() // RECORD.itemsize
        handle.write(records.tobytes())
        handle.flush()
        os.fsync(handle.fileno())  # rows on disk before the catalog points at them
    rows = [(batch["id"][i], batch["sha256"][i], first_row + offset,
             *(batch[name][i] for name in PROPERTIES)) for offset, i in enumerate(good)]
    write_properties(ws, rows, embedding_path, RECORD)
    return errors


class _RecordFile:
    """Reads the audit's record file with plain reads, not a memory map: pages of a map
    count in the process's resident memory, read pages only in the OS cache."""

    _BLOCK = 1024  # records per sequential read: 2.5 MB

    def __init__(self, path: Path):
        self.path = path

    def embeddings(self, rows: np.ndarray) -> np.ndarray:
        """float32 embeddings of ``rows``, read block by block in file order (only the
        blocks holding a row asked for)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), EMBEDDING_DIM), dtype=np.float32)
        if not len(rows):
            return out
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        blocks = ordered // self._BLOCK
        bounds = np.flatnonzero(np.diff(blocks)) + 1
        with open(self.path, "rb") as handle:
            for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(ordered)]):
                start = int(blocks[lo]) * self._BLOCK
                count = int(ordered[hi - 1]) - start + 1
                handle.seek(start * RECORD.itemsize)
                block = np.fromfile(handle, dtype=RECORD, count=count)
                out[order[lo:hi]] = block["embedding"][ordered[lo:hi] - start]
        return out

    def thumbs(self, rows: np.ndarray) -> np.ndarray:
        """Gray verification thumbnails of ``rows``: one sequential read of their span when
        they lie close together (a chunk of a fresh audit), else one read each."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), THUMB_SIDE, THUMB_SIDE), dtype=np.uint8)
        if len(rows) and int(rows.max()) - int(rows.min()) < 2 * len(rows):
            low = int(rows.min())
            with open(self.path, "rb") as handle:
                handle.seek(low * RECORD.itemsize)
                span = np.fromfile(handle, dtype=RECORD, count=int(rows.max()) - low + 1)
            out[:] = span["thumb"][rows - low]
            return out
        offset = RECORD.fields["thumb"][1]
        size = THUMB_SIDE * THUMB_SIDE
        with open(self.path, "rb") as handle:
            descriptor = handle.fileno()
            for i, row in enumerate(rows):
                data = os.pread(descriptor, size, int(row) * RECORD.itemsize + offset)
                out[i] = np.frombuffer(data, dtype=np.uint8).reshape(THUMB_SIDE, THUMB_SIDE)
        return out


def embeddings(ws, sample_ids=None) -> tuple[np.ndarray, np.ndarray]:
    """The audit's pixel embeddings: ``(ids, vectors)``, vectors ``(n, EMBEDDING_DIM)``
    float32, L2-normalised, for ``sample_ids`` (default: every measured sample) that the
    audit has measured, in the order asked. Run :func:`audit` first."""
    cached = cached_properties(ws, "sample_id, embedding_row")
    if "embedding_row" not in cached or cached.empty:
        raise EmptyDataError("No audit embeddings yet: run 'smartset audit' first.")
    rows = cached["embedding_row"]
    if sample_ids is not None:
        rows = rows.reindex(list(sample_ids)).dropna()
    vectors = _RecordFile(_vector_file(ws)).embeddings(rows.to_numpy(dtype=np.int64))
    return rows.index.to_numpy(dtype=object), vectors


# -- the per-sample state: typed arrays, in the order of ws.samples(version) ----------------

_CHUNK = 4096  # rows per catalog read: the Python objects of one chunk at a time
_NUMERIC = [name for name in PROPERTIES if name not in _TEXT_PROPERTIES]
_VECTOR_BLOCK = 4096  # embeddings per block read from disk: 1.8 MB as float32
_DIMS = ("width", "height", "size")  # catalog columns the checks read, kept on disk


class _Samples:
    """The audit's per-sample columns as NumPy arrays, read from the catalog in chunks: no
    per-sample Python object outlives a chunk. Ids are kept once, sorted (fixed-width
    bytes), with the permutation both ways (4 bytes each below 2**31 samples); contents
    as the first 64 bits of their SHA-256; labels and splits as integer codes."""

    def __init__(self, ws, version, scratch: Path):
        ids, sha, label, split = [], [], [], []
        self.label_names: list[str] = []
        self.split_names: list[str] = []
        label_code: dict[str, int] = {}
        split_code: dict[str, int] = {}
        scratch.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(dir=scratch, prefix="dims-", suffix=".f8")
        self.dims_path = Path(name)
        with os.fdopen(descriptor, "wb") as dims:  # width, height, size: row-major, on disk
            for chunk in ws.iter_samples(version, chunk_size=_CHUNK):
                ids.append(_encode(chunk["id"]))
                sha.append(_sha_key(chunk["sha256"]))
                dims.write(np.column_stack([
                    chunk[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in _DIMS
                ]).tobytes())
                label.append(_codes(chunk["label"], label_code, self.label_names))
                split.append(_codes(chunk["split"], split_code, self.split_names))
        self.sha = np.concatenate(sha)
        self.label, self.split = np.concatenate(label), np.concatenate(split)
        del sha, label, split
        ids = np.concatenate(ids)
        small = self.index_dtype = np.int32 if len(ids) < 2**31 else np.int64
        self._order = np.argsort(ids, kind="stable").astype(small)  # sorted -> position
        ids.sort()  # in place: ids are unique, so this is ids[self._order]
        self._sorted = ids
        self._rank = np.empty(len(self._order), dtype=small)  # position -> sorted
        self._rank[self._order] = np.arange(len(self._order), dtype=small)

    def remove_scratch(self) -> None:
        self.dims_path.unlink(missing_ok=True)

    def spill_ids(self, path: Path) -> None:
        """Move the ids to ``path`` for a phase that does not read them (:meth:`load_ids`
        brings them back)."""
        with open(path, "wb") as handle:
            for array in (self._sorted, self._order, self._rank):
                np.save(handle, array)
        self._sorted = self._order = self._rank = None
        self._spilled = path

    def load_ids(self) -> None:
        with open(self._spilled, "rb") as handle:
            self._sorted, self._order, self._rank = (np.load(handle) for _ in range(3))
        self._spilled.unlink()

    def __len__(self) -> int:
        return len(self._order)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Position of each id (bytes) in this table, -1 where absent."""
        if not len(self._sorted):
            return np.full(len(ids), -1, dtype=np.int64)
        at = np.searchsorted(self._sorted, ids).clip(max=len(self._sorted) - 1)
        return np.where(self._sorted[at] == ids, self._order[at], -1)

    def ids(self, positions: np.ndarray) -> np.ndarray:
        """The ids (bytes) at ``positions``."""
        return self._sorted[self._rank[positions]]

    def id(self, position: int) -> str:
        return self._sorted[self._rank[position]].decode()


def _sha_key(values) -> np.ndarray:
    """The first 64 bits of each hex SHA-256 (0 where missing): enough to tell a changed
    file from the one measured."""
    return np.array([int(v[:16], 16) if isinstance(v, str) and v else 0 for v in values],
                    dtype=np.uint64)


def _encode(values) -> np.ndarray:
    return np.array([v.encode() for v in values], dtype=np.bytes_)


def _codes(values: pd.Series, code_of: dict, names: list) -> np.ndarray:
    """Integer codes (-1 for missing) of a chunk of strings, against codes so far."""
    local, uniques = pd.factorize(values, use_na_sentinel=True)
    mapping = np.empty(len(uniques) + 1, dtype=np.int32)
    mapping[-1] = -1
    for i, name in enumerate(uniques):
        if name not in code_of:
            code_of[name] = len(names)
            names.append(name)
        mapping[i] = code_of[name]
    return mapping[local]


def _todo_mask(ws, table: _Samples) -> np.ndarray:
    """True for samples without cached properties of their current content."""
    fresh = np.zeros(len(table), dtype=bool)
    with ws.catalog.read() as con:
        for rows in property_rows(con, "sample_id, sha256"):
            ids = _encode([r[0] for r in rows])
            sha = _sha_key([r[1] for r in rows])
            at = table.positions(ids)
            known = at >= 0
            fresh[at[known]] = table.sha[at[known]] == sha[known]
    return ~fresh


def _todo_batches(ws, version, table: _Samples, todo: np.ndarray):
    """Batches (id, path, sha256) of the samples to measure, streamed from the catalog."""
    for chunk in ws.iter_samples(version, chunk_size=_CHUNK):
        at = table.positions(_encode(chunk["id"]))
        pick = np.flatnonzero(at >= 0)
        pick = pick[todo[at[pick]]]
        if not len(pick):
            continue
        part = chunk.iloc[pick]
        mean_size = float(part["size"].mean())
        batch_size = int(min(512, max(16, 2_000_000 / max(mean_size, 1.0))))
        yield from batches_of({"id": part["id"].tolist(), "path": part["path"].tolist(),
                               "sha256": part["sha256"].tolist()}, batch_size)


def _load_properties(ws, table: _Samples, rows_path: Path) -> np.ndarray:
    """Write the cached numeric properties to ``rows_path``, row-major (``n x
    len(_NUMERIC)`` float64, one row per sample in table order, NaN where missing), and
    return the embedding rows (-1 where unmeasured: their rows are left unwritten). The
    catalog's rows come in its own order: each chunk lands at its positions through a
    memory map opened for that chunk only, so at most a chunk's pages are resident."""
    rows = np.full(len(table), -1, dtype=np.int64)
    shape = (len(table), len(_NUMERIC))
    with open(rows_path, "wb") as handle:
        handle.truncate(shape[0] * shape[1] * 8)
    with ws.catalog.read() as con:
        for chunk in property_rows(con, "sample_id, embedding_row, " + ", ".join(_NUMERIC)):
            at = table.positions(_encode([r[0] for r in chunk]))
            known = at >= 0
            numbers = np.array([r[1:] for r in chunk], dtype=np.float64)  # None reads NaN
            rows[at[known]] = numbers[known, 0].astype(np.int64)
            values = np.memmap(rows_path, dtype=np.float64, mode="r+", shape=shape)
            values[at[known]] = numbers[known, 1:]
            values.flush()
            del values
    return rows


def _exact_duplicate_pairs(ws, table: _Samples, audited: np.ndarray) -> list[tuple[int, int]]:
    """Pairs ``(first, member)`` of audited samples with the same bytes or decoded pixels,
    as positions in ``audited``: grouped by SQL, never as per-sample strings."""
    position = np.full(len(table), -1, dtype=np.int64)
    position[audited] = np.arange(len(audited))
    pairs = []
    with ws.catalog.read() as con:
        for column in ("sha256", "pixel_hash"):
            groups: dict[str, list[int]] = {}
            for sample_id, key in same_value_rows(con, column):
                at = int(table.positions(_encode([sample_id]))[0])
                if at >= 0 and position[at] >= 0:
                    groups.setdefault(key, []).append(int(position[at]))
            for members in groups.values():
                members.sort()
                pairs.extend((members[0], m) for m in members[1:])
    return pairs


def _properties_frame(ws, version, audited_ids: np.ndarray) -> pd.DataFrame:
    """The wide per-sample table of :attr:`AuditResult.properties`: the version's samples
    that were audited (``audited_ids``, bytes), their catalog columns, cached properties and
    the derived ones the checks read."""
    samples = ws.samples(version)
    props = samples.join(cached_properties(ws).drop(columns=["sha256"]), on="id")
    props = props[np.isin(_encode(props["id"]), audited_ids)].reset_index(drop=True)
    for name in _NUMERIC:
        props[name] = pd.to_numeric(props[name], errors="coerce")
    props = add_derived_properties(props)
    props["file_bytes"] = props["size"]
    return props.drop(columns=["embedding_row"])


def _check_columns(table: _Samples, audited: np.ndarray, rows_path: Path,
                   path: Path) -> ColumnStore:
    """The columns the checks and probes read, one value per audited sample, on disk:
    the cached properties, width, height, size and the derived ones; ``id`` holds the
    row's position (findings get their sample ids afterwards)."""
    store = ColumnStore(path, len(audited))
    store.add_rows(rows_path, len(table), _NUMERIC, audited)
    store.add_rows(table.dims_path, len(table), list(_DIMS), audited)
    store.add("id", np.arange(len(audited)))
    width, height = store.values("width"), store.values("height")
    for name, values in derived_properties(width, height).items():
        store.add(name, values)
    del width, height
    store.add("file_bytes", store.values("size"))
    return store


def _embedding_file(ws, record_rows: np.ndarray, run_id: int) -> VectorFile:
    """The audited images' embeddings, in audit order, as a compact float16 file for the
    neighbour search (read block by block; removed after the audit)."""
    path = ws.cache_dir / "audit" / f"knn-run{run_id}.f16"
    records = _RecordFile(_vector_file(ws))
    blocks = (records.embeddings(record_rows[start:start + _VECTOR_BLOCK])
              for start in range(0, len(record_rows), _VECTOR_BLOCK))
    return VectorFile.write(path, blocks, EMBEDDING_DIM, np.float16)


def _label_series(table: _Samples, audited: np.ndarray) -> pd.Series:
    """The audited samples' labels as an object Series (None where unlabeled), as the
    probes and the imbalance count read them; the strings are shared, one per class."""
    names = np.array([*table.label_names, None], dtype=object)
    return pd.Series(names[table.label[audited]], dtype=object)
