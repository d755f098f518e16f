"""The audit run: properties (incremental, cached by fingerprint), checks, duplicates,
outliers, imbalance and bias probes over a version, stored in the catalog."""

from __future__ import annotations

import functools
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from smartset._memory import give_back_memory, return_large_blocks
from smartset._progress import next_phase, progress_bar, progress_job
from smartset.audit._columns import ColumnStore
from smartset.audit.bias import PROBED_PROPERTIES, bias_probe, error_probe
from smartset.audit.checks import add_derived_properties, derived_properties, run_checks
from smartset.audit.features import plan_features
from smartset.audit.neighbour_phase import model_source, neighbour_findings
from smartset.neighbours import VectorFile
from smartset.audit.properties import (
    EMBEDDING_DIM,
    PROPERTIES,
    PROPERTIES_VERSION,
    RECORD,
    THUMB_SIDE,
    compute_properties,
)
from smartset.catalog import now
from smartset.engine import Engine, batches_of, get_engine
from smartset.errors import EmptyDataError

__all__ = ["AuditResult", "audit", "embeddings"]



@dataclass
class AuditResult:
    """What an audit found. ``findings`` has one row per (kind, sample) with ``kind``,
    ``sample_id`` (None for data-set-level findings), ``score``, ``threshold``,
    ``reason`` and ``group``; ``properties`` one row per audited sample: its catalog
    columns, properties and derived columns. Both are read from the catalog when first
    asked for (the audit writes its findings as it goes and keeps typed arrays), so an
    audit that nobody asks them of never holds them."""

    run_id: int
    version: str | None
    _findings: pd.DataFrame | Callable[[], pd.DataFrame]
    _properties: pd.DataFrame | Callable[[], pd.DataFrame]
    thresholds: dict
    bias: pd.DataFrame
    _duplicate_groups: list[dict] | Callable[[], list[dict]]
    summary: dict
    seconds: float
    computed: int
    report_path: Path | None = None
    json_path: Path | None = None
    skipped: dict = field(default_factory=dict)
    _counts: dict[str, int] | None = None

    @property
    def findings(self) -> pd.DataFrame:
        if callable(self._findings):
            self._findings = self._findings()
        return self._findings

    @property
    def duplicate_groups(self) -> list[dict]:
        """The duplicate sets: ``group``, ``kind``, ``scopes`` and ``members`` (ids)."""
        if callable(self._duplicate_groups):
            self._duplicate_groups = self._duplicate_groups()
        return self._duplicate_groups

    @property
    def properties(self) -> pd.DataFrame:
        if callable(self._properties):
            self._properties = self._properties()
        return self._properties

    def counts(self) -> dict[str, int]:
        """Findings per kind, most frequent first."""
        if self._counts is None:
            self._counts = {str(k): int(v)
                            for k, v in self.findings["kind"].value_counts().items()}
        return dict(self._counts)


def _vector_file(ws) -> Path:
    """Embeddings and verification thumbnails, one fixed-size record per measured image."""
    return (ws.cache_dir / "audit" /
            f"vectors-v{PROPERTIES_VERSION}-{EMBEDDING_DIM}-{THUMB_SIDE}.bin")


_TABLE = f"audit_properties_v{PROPERTIES_VERSION}"
_TEXT_PROPERTIES = {"pixel_hash"}


def _ensure_table(con) -> None:
    """The audit's own wide table of per-sample properties, one per properties version: a
    changed definition starts a new table, so no stale value is ever served."""
    columns = ", ".join(f"{name} {'TEXT' if name in _TEXT_PROPERTIES else 'REAL'}"
                        for name in PROPERTIES)
    con.execute(f"CREATE TABLE IF NOT EXISTS {_TABLE} (sample_id TEXT PRIMARY KEY "
                f"REFERENCES samples(id), sha256 TEXT NOT NULL, embedding_row INTEGER NOT NULL, "
                f"{columns}) WITHOUT ROWID")


def _load_cached(ws, columns: str = "*") -> pd.DataFrame:
    with ws.catalog.read() as con:
        exists = con.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (_TABLE,)).fetchone()
        if not exists:
            return pd.DataFrame(columns=["sample_id", "sha256"]).set_index("sample_id")
        cursor = con.execute(f"SELECT {columns} FROM {_TABLE}")
        names = [d[0] for d in cursor.description]
        # In chunks: a list of Python tuples costs ten times the frame it becomes.
        parts = [pd.DataFrame(rows, columns=names)
                 for rows in iter(lambda: cursor.fetchmany(5000), [])]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=names)
    return frame.set_index("sample_id")


def _store(ws, batch, embedding_path: Path) -> list[tuple[str, str]]:
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
    marks = ", ".join("?" * (3 + len(PROPERTIES)))
    with ws.catalog.write() as con:
        _ensure_table(con)
        con.executemany(f"INSERT OR REPLACE INTO {_TABLE} VALUES ({marks})", rows)
        # The catalog references the embeddings file, so later stages find it by name.
        con.execute(
            "INSERT OR REPLACE INTO artifacts(name, path, kind, fingerprint, meta, created_at)"
            " VALUES (?, ?, 'records', ?, ?, ?)",
            (f"audit.vectors.v{PROPERTIES_VERSION}",
             embedding_path.relative_to(ws.path).as_posix(), str(PROPERTIES_VERSION),
             json.dumps({"dtype": RECORD.descr, "rows_from": _TABLE + ".embedding_row"}),
             now()))
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
        """Gray verification thumbnails of ``rows`` (one read each)."""
        out = np.empty((len(rows), THUMB_SIDE, THUMB_SIDE), dtype=np.uint8)
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
    cached = _load_cached(ws, "sample_id, embedding_row")
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


def _cached_rows(con, columns: str):
    """Rows of the audit's property table, in chunks of plain tuples."""
    exists = con.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (_TABLE,)).fetchone()
    if not exists:
        return
    con.row_factory = None
    cursor = con.execute(f"SELECT {columns} FROM {_TABLE}")
    while rows := cursor.fetchmany(_CHUNK):
        yield rows


def _todo_mask(ws, table: _Samples) -> np.ndarray:
    """True for samples without cached properties of their current content."""
    fresh = np.zeros(len(table), dtype=bool)
    with ws.catalog.read() as con:
        for rows in _cached_rows(con, "sample_id, sha256"):
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
        for chunk in _cached_rows(con, "sample_id, embedding_row, " + ", ".join(_NUMERIC)):
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
        con.row_factory = None
        if not con.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (_TABLE,)).fetchone():
            return []
        for column in ("sha256", "pixel_hash"):
            cursor = con.execute(
                f"SELECT sample_id, {column} FROM {_TABLE} WHERE {column} IN (SELECT {column}"
                f" FROM {_TABLE} WHERE {column} IS NOT NULL GROUP BY {column}"
                f" HAVING COUNT(*) > 1) ORDER BY {column}")
            groups: dict[str, list[int]] = {}
            for sample_id, key in cursor:
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
    props = samples.join(_load_cached(ws).drop(columns=["sha256"]), on="id")
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


def _is_experiment(ws, thresholds, neighbours, near_duplicate_similarity,
                   candidate_similarity, outlier_fence, out_dir) -> bool:
    """An audit that changes a setting, or writes its report outside the workspace."""
    if thresholds or candidate_similarity is not None or neighbours != 10:
        return True
    if near_duplicate_similarity != 0.98 or outlier_fence != 4.0:
        return True
    if out_dir is not None:
        try:
            Path(out_dir).resolve().relative_to(Path(ws.path).resolve())
        except ValueError:
            return True
    return False


def audit(ws, version: str | None = None, *, thresholds: dict[str, float] | None = None,
          neighbours: int = 10, near_duplicate_similarity: float = 0.98,
          candidate_similarity: float | None = None, outlier_fence: float = 4.0,
          engine: str | Engine | None = None, workers: int | None = None,
          show_progress: bool | None = None, report: bool = True,
          out_dir: str | Path | None = None, seed: int = 0,
          embedding_model=None, features: str = "auto",
          reference: bool | None = None) -> AuditResult:
    """Audit the samples of ``version`` (default: the live catalog); see :mod:`smartset.audit`.

    ``features``: what near duplicates, outliers and class outliers read (see
    :mod:`smartset.audit.features`): ``"auto"`` (a pretrained backbone on photos, pixels on
    small gray images and when the backbone is unavailable), ``"pixels"``, or a backbone
    name. Near-duplicate candidates are always verified on pixels. ``candidate_similarity``:
    the least embedding similarity of a candidate (default: per embedding).
    ``embedding_model``: a fitted model whose ``transform(images)`` features replace the
    embedding for outliers and class outliers (its ``input_shape_`` says the size and
    channels it reads): ``smartset.learn.load_model(ws, RUN)`` gives a training run's or a
    checkpoint's (the audit is below learn, so it takes the model, not its run id; the CLI's
    ``--embedding-model RUN`` resolves it). The summary's ``features`` (also in the
    run config, the report and issues.json) says what each check read. The backbone runs
    in this process (on CUDA when present), or on ``engine`` when one is given.

    ``reference``: whether later stages (learn's splits, clean's duplicate actions, the
    review queues) read this audit's findings. Default: yes, unless it is an experiment: a
    threshold, ``candidate_similarity``, ``near_duplicate_similarity``, ``neighbours`` or
    ``outlier_fence`` changed, or ``out_dir`` outside the workspace; an experiment is
    recorded and reported, and the summary says which audit the other stages keep reading
    (:mod:`smartset.audit.store`).

    Memory follows the per-sample columns only: samples and cached properties are read
    from the catalog in chunks into typed arrays, embeddings stay on disk and are read
    block by block, exact duplicates are grouped by SQL, and the property table is gone
    before the neighbour search (the checks and probes that read it run first).
    """
    started = time.perf_counter()
    if not 0.0 < near_duplicate_similarity <= 1.0:
        raise ValueError(f"near_duplicate_similarity must be in (0, 1], got {near_duplicate_similarity}")
    if candidate_similarity is not None and not -1.0 <= candidate_similarity <= 1.0:
        raise ValueError(f"candidate_similarity must be in [-1, 1], got {candidate_similarity}")
    if neighbours < 1:
        raise ValueError(f"neighbours must be at least 1, got {neighbours}")
    return_large_blocks()
    table = _Samples(ws, version, ws.cache_dir / "audit")
    give_back_memory()
    if not len(table):
        table.remove_scratch()
        raise EmptyDataError(
            f"Nothing to audit: {'version ' + repr(version) if version else 'the catalog'} has "
            f"no available samples. Add images with 'smartset ingest', or check "
            f"'smartset issues' for files that could not be ingested.")
    model_name = model_source(embedding_model)
    plan = plan_features(ws, version, features, embedding_model=model_name)
    if reference is None:
        reference = not _is_experiment(ws, thresholds, neighbours, near_duplicate_similarity,
                                       candidate_similarity, outlier_fence, out_dir)
    config = {"version": version, "reference": bool(reference),
              "thresholds": thresholds or {}, "neighbours": neighbours,
              "near_duplicate_similarity": near_duplicate_similarity,
              "candidate_similarity": candidate_similarity, "outlier_fence": outlier_fence,
              "embedding_model": model_name,
              "features": plan.describe()}
    run_id = ws.catalog.start_run("audit", config, seed=seed)
    knn_file, scratch_files = None, []
    writer = _FindingWriter(ws, run_id, version)
    # One bar for the whole audit, its phase named; the units are images measured, with
    # rough weights for the phases after measuring (_PHASE_WEIGHTS).
    with ws.catalog.failing_run(run_id), progress_job("audit", 1, enabled=show_progress) as job:
        try:
            todo = _todo_mask(ws, table)
            table.sha = None  # only needed to find what changed
            n_todo = int(todo.sum())
            job.set_total(n_todo + _AFTER_MEASURING * len(table))
            next_phase("measuring images", n_todo)
            embedding_path = _vector_file(ws)
            results = get_engine(engine, workers=workers).map_batches(
                compute_properties, _todo_batches(ws, version, table, todo))
            errors = []
            with progress_bar(n_todo, "measured") as advance:
                for batch in results:
                    errors.extend(_store(ws, batch, embedding_path))
                    advance(len(batch["id"]))
            del todo, results
            give_back_memory()

            scratch = ws.cache_dir / "audit"
            scratch.mkdir(parents=True, exist_ok=True)
            rows_path = scratch / f"properties-run{run_id}.f8"
            scratch_files += [rows_path, scratch / f"columns-run{run_id}.f8"]
            record_rows = _load_properties(ws, table, rows_path)
            failed = table.positions(_encode([sid for sid, _ in errors]))
            record_rows[failed[failed >= 0]] = -1
            audited = np.flatnonzero(record_rows >= 0).astype(table.index_dtype)
            props = _check_columns(table, audited, rows_path, scratch_files[-1])
            rows_path.unlink()
            table.remove_scratch()  # in props now
            record_rows = record_rows[audited]
            check_thresholds = dict(thresholds or {})
            near_given = check_thresholds.pop("near_duplicate", None)
            next_phase("checks and bias probes", _PHASE_WEIGHTS["checks"] * len(table))
            findings, used, skipped = _check_findings(ws, table, audited, props,
                                                      thresholds=check_thresholds, errors=errors)
            writer.extend(findings)
            del findings
            # The probes read the properties; the neighbour stages do not: run the probes
            # now, so the property table is gone before the kNN search (their findings and
            # skips are listed last all the same).
            probe_skipped: dict[str, str] = {}
            bias, probe_findings = _probe_findings(ws, table, audited, props, seed=seed,
                                                   skipped=probe_skipped)
            props.remove()
            del props
            give_back_memory()
            knn_file = _embedding_file(ws, record_rows, run_id) if len(audited) else None
            give_back_memory()
            vectors = _RecordFile(embedding_path)

            def thumbs(positions: np.ndarray) -> np.ndarray:
                return vectors.thumbs(record_rows[positions])

            next_phase("neighbours", _PHASE_WEIGHTS["neighbours"] * len(table))
            exact_pairs = _exact_duplicate_pairs(ws, table, audited) if len(audited) > 1 else []
            sets, search, used_features = neighbour_findings(
                ws, version, table, audited, knn_file, thumbs, writer, plan=plan, engine=engine,
                exact_pairs=exact_pairs, near_given=near_given,
                neighbours=neighbours, candidate_similarity=candidate_similarity,
                near_duplicate_similarity=near_duplicate_similarity,
                outlier_fence=outlier_fence, embedding_model=embedding_model, used=used,
                skipped=skipped, scratch=scratch)
            writer.extend(probe_findings)
            writer.flush()
            skipped.update(probe_skipped)
            del probe_findings
        finally:
            table.remove_scratch()
            for path in scratch_files + ([knn_file.path] if knn_file is not None else []):
                path.unlink(missing_ok=True)

        audited_ids, n_samples = table.ids(audited), len(table)
        del table
        result = AuditResult(run_id, version, functools.partial(_findings_frame, ws, run_id),
                             functools.partial(_properties_frame, ws, version, audited_ids), used,
                             bias, functools.partial(_duplicate_groups, ws, run_id), {}, 0.0,
                             computed=n_todo, skipped=skipped,
                             _counts=writer.sorted_counts())
        result.summary = {"n_samples": int(n_samples), "n_audited": int(len(audited_ids)),
                          "computed": n_todo, "cached": int(n_samples - n_todo),
                          "findings": result.counts(), "skipped": skipped,
                          "duplicate_groups": {k: sets[k]
                                               for k in ("exact_duplicate", "near_duplicate")},
                          "label_conflicts": sets["label conflict"],
                          "split_leakage": sets["split leakage"], "features": used_features}
        if search is not None and search.approximate:
            result.summary["neighbour_search"] = {"index": search.index,
                                                  "recall_at_k": round(search.recall, 4),
                                                  **search.params}
        result.summary["reference"] = bool(reference)
        if not reference:  # an experiment: the other stages keep reading the reference
            from smartset.audit.store import reference_run

            result.summary["reference_run"] = reference_run(ws)
        if report:
            from smartset.audit.report import write_report

            next_phase("report", _PHASE_WEIGHTS["report"] * n_samples)

            target = Path(out_dir) if out_dir else ws.reports_dir / "audit" / (version or "live")
            result.report_path, result.json_path = write_report(ws, result, target)
        result.seconds = round(time.perf_counter() - started, 3)
    ws.catalog.finish_run(run_id, {**result.summary, "seconds": result.seconds})
    return result


# The audit's bar after measuring, in images' worth of measuring time per image: the
# neighbour phase embeds (when the backbone is not cached) and verifies candidates.
_PHASE_WEIGHTS = {"checks": 0.05, "neighbours": 0.5, "report": 0.1}
_AFTER_MEASURING = sum(_PHASE_WEIGHTS.values())

_FINDING_COLUMNS = ["kind", "sample_id", "score", "threshold", "reason", "group"]


class _FindingWriter:
    """Findings go to the catalog in batches as they are found, so memory holds a batch,
    not every finding of a large data set. They are rows of the audit's run, which stays
    'failed' if the audit stops: readers take the newest finished run."""

    _BATCH = 4096

    def __init__(self, ws, run_id: int, version: str | None):
        self.ws, self.run_id, self.version = ws, run_id, version
        self.pending: list[dict] = []
        self.counts: dict[str, int] = {}

    def add(self, finding: dict) -> None:
        self.pending.append(finding)
        self.counts[finding["kind"]] = self.counts.get(finding["kind"], 0) + 1
        if len(self.pending) >= self._BATCH:
            self.flush()

    def extend(self, findings) -> None:
        for finding in findings:
            self.add(finding)

    def flush(self) -> None:
        if not self.pending:
            return
        with self.ws.catalog.write() as con:
            con.executemany(
                "INSERT INTO audit_findings(run_id, version, kind, sample_id, score, threshold,"
                " reason, grp) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ((self.run_id, self.version, f["kind"], f["sample_id"], _number(f["score"]),
                  _number(f["threshold"]), f["reason"], f.get("group"))
                 for f in self.pending))
        self.pending = []

    def sorted_counts(self) -> dict[str, int]:
        return dict(sorted(self.counts.items(), key=lambda kv: -kv[1]))


def _number(value) -> float | None:
    return None if value is None or np.isnan(value) else float(value)  # NaN: None


def _findings_frame(ws, run_id: int) -> pd.DataFrame:
    """The findings of ``run_id`` in the order they were found."""
    rows = [tuple(r) for r in ws.catalog.query(
        "SELECT kind, sample_id, score, threshold, reason, grp FROM audit_findings"
        " WHERE run_id = ? ORDER BY id", (run_id,))]
    frame = pd.DataFrame(rows, columns=_FINDING_COLUMNS)
    return frame.astype({"group": object}).where(frame.notna(), None)


def _label_series(table: _Samples, audited: np.ndarray) -> pd.Series:
    """The audited samples' labels as an object Series (None where unlabeled), as the
    probes and the imbalance count read them; the strings are shared, one per class."""
    names = np.array([*table.label_names, None], dtype=object)
    return pd.Series(names[table.label[audited]], dtype=object)


def _check_findings(ws, table: _Samples, audited: np.ndarray, props: ColumnStore, *,
                    thresholds, errors) -> tuple[list[dict], dict, dict]:
    """Unreadable files and the per-image checks: ``(findings, used, skipped)``."""
    skipped: dict[str, str] = {}
    findings = [{"kind": "unreadable", "sample_id": sid_, "score": 1.0, "threshold": None,
                 "reason": f"could not be decoded for the audit: {error}"} for sid_, error in errors]
    for issue in ws.issues().itertuples():
        findings.append({"kind": "unreadable", "sample_id": None, "score": 1.0, "threshold": None,
                         "reason": f"{issue.relpath}: {issue.reason} ({issue.detail})",
                         "group": issue.reason})
    check_findings, used = run_checks(props, thresholds)
    # A flat image has no edges, and a tiny one too few pixels to tell: "blurry" would only
    # repeat "low information" or "odd size" there.
    larger = props["larger"].to_numpy()
    explained = {int(f["sample_id"]) for f in check_findings
                 if f["kind"] == "low_information"
                 or (f["kind"] == "odd_size" and not larger[int(f["sample_id"])])}
    for f in check_findings:
        if not (f["kind"] == "blurry" and int(f["sample_id"]) in explained):
            findings.append({**f, "sample_id": table.id(audited[int(f["sample_id"])])})
    for name, info in used.items():
        if "skipped" in info:
            skipped[name] = info["skipped"]
    return findings, used, skipped


def _probe_findings(ws, table: _Samples, audited: np.ndarray, props: ColumnStore, *,
                    seed, skipped: dict) -> tuple[pd.DataFrame, list[dict]]:
    """The bias probes (properties that predict the label) and the error-bias probes
    (properties that predict the model's errors): ``(bias table, findings)``."""
    findings = []
    labels = _label_series(table, audited)
    if labels.notna().sum() >= 10 and labels.dropna().nunique() >= 2:
        bias = bias_probe(props.select(PROBED_PROPERTIES), labels, seed=seed)
        for row in bias[bias["flagged"]].itertuples():
            best = max(row.lift_by_class.items(), key=lambda kv: kv[1], default=None)
            extra = f"; predicts '{best[0]}' {best[1]:.1f}x better than chance" if best else ""
            findings.append({"kind": "bias", "sample_id": None, "score": row.skill,
                             "threshold": 0.2, "group": row.property,
                             "reason": (f"'{row.property}' alone predicts the label: accuracy "
                                        f"{row.accuracy:.2f} vs {row.baseline:.2f} for always "
                                        f"guessing the majority class{extra}")})
    else:
        bias = bias_probe(props.select([]), labels)
        skipped["bias"] = "needs at least 10 labeled images in 2 or more classes"
    del labels
    findings.extend(_error_bias(ws, table, audited, props, skipped))
    return bias, findings


def _duplicate_scopes(reason: str) -> list[str]:
    inner = reason.split(" (", 1)[1]
    return (inner.split(": ", 1)[0] if ": " in inner else inner[:-1]).split(", ")


def _duplicate_groups(ws, run_id: int) -> list[dict]:
    """The duplicate sets of ``run_id``, from its findings: ``group``, ``kind``, ``scopes``
    and ``members``, in the order found."""
    groups: dict[tuple[str, str], dict] = {}
    for row in ws.catalog.query(
            "SELECT kind, sample_id, grp, reason FROM audit_findings WHERE run_id = ? AND kind"
            " IN ('exact_duplicate', 'near_duplicate') ORDER BY id", (run_id,)):
        group = groups.get((row["kind"], row["grp"]))
        if group is None:
            group = groups[(row["kind"], row["grp"])] = {
                "group": row["grp"], "kind": row["kind"],
                "scopes": _duplicate_scopes(row["reason"]), "members": []}
        group["members"].append(row["sample_id"])
    return list(groups.values())


def _error_bias(ws, table: _Samples, audited: np.ndarray, props: ColumnStore,
                skipped: dict) -> list[dict]:
    """Properties that predict the model's out-of-fold errors (when predictions exist)."""
    from smartset.predictions import PredictionsNotFoundError

    try:
        predictions = ws.predictions(kind="oof")
    except PredictionsNotFoundError:
        skipped["error_bias"] = "no out-of-fold predictions yet ('smartset predict --oof')"
        return []
    position = np.full(len(table), -1, dtype=np.int64)
    position[audited] = np.arange(len(audited))
    at = table.positions(_encode(predictions.sample_ids))
    at = np.where(at >= 0, position[at.clip(min=0)], -1)
    correct = np.zeros(len(audited), dtype=bool)
    known = np.zeros(len(audited), dtype=bool)
    found = at >= 0
    correct[at[found]] = (np.asarray(predictions.predicted) == np.asarray(predictions.labels))[found]
    known[at[found]] = True
    if known.sum() < 50:
        skipped["error_bias"] = "fewer than 50 audited samples have out-of-fold predictions"
        return []
    table_ = error_probe(props.select(PROBED_PROPERTIES),
                         np.where(known, correct, np.nan))  # NaN: no prediction, left out
    findings = []
    for row in table_[table_["flagged"]].itertuples():
        findings.append({
            "kind": "error_bias", "sample_id": None, "score": row.ratio, "threshold": 2.0,
            "group": row.property,
            "reason": (f"'{row.property}' between {row.low:.3g} and {row.high:.3g}: the model "
                       f"(run {predictions.run_id}, out-of-fold) is wrong on {row.error_rate:.1%}"
                       f" of {row.n} images vs {row.overall:.1%} overall ({row.ratio:.1f}x)")})
    return findings
