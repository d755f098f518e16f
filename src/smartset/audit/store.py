"""The audit's findings as other stages read them: typed readers over the tables the audit
owns (``audit_findings``, and the audit runs in ``runs``).

Which audit do later stages read? The **reference audit**: the newest finished audit that
was not an experiment. An audit is an experiment when it changes a threshold or a
neighbour setting, or writes its report outside the workspace
(:func:`smartset.audit.audit` decides, ``reference=True/False`` overrides). An experiment
is recorded and reported like any audit, but the hold-out and folds of ``learn``, the
duplicate actions of ``clean`` and the review app's queues keep reading the reference
audit, and say which run that is. Before, an experiment with a lower near-duplicate
threshold replaced the findings every stage read (the next ``clean`` proposed 794 duplicate
actions).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from smartset.audit.properties import PROPERTIES, PROPERTIES_VERSION
from smartset.catalog import now

__all__ = ["reference_run", "findings", "duplicate_sets", "write_findings", "DUPLICATE_KINDS",
           "FINDING_COLUMNS", "PROPERTIES_TABLE", "write_properties", "property_rows",
           "cached_properties", "same_value_rows", "run_findings"]

#: the columns of an ``audit_findings`` row, as :func:`write_findings` takes them
FINDING_COLUMNS = ("run_id", "version", "kind", "sample_id", "score", "threshold", "reason",
                   "grp")


def write_findings(con, rows) -> None:
    """Inside a catalog write: store findings (tuples in :data:`FINDING_COLUMNS` order;
    the annotation audit of the detection stage writes its own here too)."""
    con.executemany(f"INSERT INTO audit_findings({', '.join(FINDING_COLUMNS)}) VALUES "
                    f"({', '.join('?' * len(FINDING_COLUMNS))})", rows)

DUPLICATE_KINDS = ("exact_duplicate", "near_duplicate")


def reference_run(ws) -> int | None:
    """The id of the newest finished audit that is not an experiment, or None."""
    rows = ws.catalog.query(
        "SELECT r.id, r.config FROM runs r WHERE r.status = 'done' AND EXISTS "
        "(SELECT 1 FROM audit_findings f WHERE f.run_id = r.id) ORDER BY r.id DESC")
    for run_id, config in rows:
        try:
            settings = json.loads(config) if config else {}
        except ValueError:
            settings = {}
        if settings.get("reference", True):  # runs before this rule: all references
            return int(run_id)
    return None


def findings(ws, *, kinds=None, run: int | None = None, sample_ids=None) -> pd.DataFrame:
    """Findings of audit ``run`` (default: :func:`reference_run`) as a DataFrame with
    ``run_id``, ``kind``, ``sample_id`` (None for data-set findings), ``score``,
    ``threshold``, ``reason``, ``grp``, in the order they were found. ``kinds`` and
    ``sample_ids`` restrict the rows."""
    columns = ["run_id", "kind", "sample_id", "score", "threshold", "reason", "grp"]
    run = reference_run(ws) if run is None else int(run)
    if run is None:
        return pd.DataFrame(columns=columns)
    sql = ("SELECT run_id, kind, sample_id, score, threshold, reason, grp FROM audit_findings"
           " WHERE run_id = ?")
    params: list = [run]
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
        params += kinds
    if sample_ids is not None:
        wanted = [str(s) for s in sample_ids]
        if len(wanted) <= 500:
            sql += f" AND sample_id IN ({', '.join('?' * len(wanted))})"
            params += wanted
    frame = pd.DataFrame([tuple(r) for r in ws.catalog.query(sql + " ORDER BY id",
                                                             tuple(params))], columns=columns)
    if sample_ids is not None and len(wanted) > 500:
        frame = frame[frame["sample_id"].isin(set(wanted))].reset_index(drop=True)
    # None, never NaN, where a finding has no score or threshold (JSON has no NaN)
    return frame.astype(object).where(frame.notna(), None)


def duplicate_sets(ws, *, run: int | None = None) -> dict[tuple[str, str], list[str]]:
    """``{(kind, group): [sample ids, sorted]}``: the exact and near duplicate sets of audit
    ``run`` (default: the reference audit)."""
    found = findings(ws, kinds=DUPLICATE_KINDS, run=run)
    out: dict[tuple[str, str], list[str]] = {}
    for kind, grp, sample_id in zip(found["kind"], found["grp"], found["sample_id"]):
        if sample_id is not None:
            out.setdefault((kind, grp), []).append(sample_id)
    return {key: sorted(members) for key, members in out.items()}


# -- the per-sample properties (the measuring phase's cache) ----------------------------------
#: the audit's wide table of per-sample properties, one per properties version: a changed
#: definition starts a new table, so no stale value is ever served
PROPERTIES_TABLE = f"audit_properties_v{PROPERTIES_VERSION}"
TEXT_PROPERTIES = {"pixel_hash"}


def _ensure_properties_table(con) -> None:
    columns = ", ".join(f"{name} {'TEXT' if name in TEXT_PROPERTIES else 'REAL'}"
                        for name in PROPERTIES)
    con.execute(f"CREATE TABLE IF NOT EXISTS {PROPERTIES_TABLE} (sample_id TEXT PRIMARY KEY "
                f"REFERENCES samples(id), sha256 TEXT NOT NULL, embedding_row INTEGER NOT NULL, "
                f"{columns}) WITHOUT ROWID")


def write_properties(ws, rows, record_path: Path, record_dtype) -> None:
    """Store measured rows ``(sample_id, sha256, embedding_row, *PROPERTIES)`` and register
    the record file (embeddings and thumbnails) they point into, in one transaction."""
    marks = ", ".join("?" * (3 + len(PROPERTIES)))
    with ws.catalog.write() as con:
        _ensure_properties_table(con)
        con.executemany(f"INSERT OR REPLACE INTO {PROPERTIES_TABLE} VALUES ({marks})", rows)
        # The catalog references the embeddings file, so later stages find it by name.
        con.execute(
            "INSERT OR REPLACE INTO artifacts(name, path, kind, fingerprint, meta, created_at)"
            " VALUES (?, ?, 'records', ?, ?, ?)",
            (f"audit.vectors.v{PROPERTIES_VERSION}",
             record_path.relative_to(ws.path).as_posix(), str(PROPERTIES_VERSION),
             json.dumps({"dtype": record_dtype.descr,
                         "rows_from": PROPERTIES_TABLE + ".embedding_row"}), now()))


def property_rows(con, columns: str, chunk: int = 4096):
    """Rows of the property table (``columns``, SQL), in chunks of plain tuples; nothing
    before the first audit."""
    exists = con.execute("SELECT 1 FROM sqlite_master WHERE name = ?",
                         (PROPERTIES_TABLE,)).fetchone()
    if not exists:
        return
    con.row_factory = None
    cursor = con.execute(f"SELECT {columns} FROM {PROPERTIES_TABLE}")
    while rows := cursor.fetchmany(chunk):
        yield rows


def cached_properties(ws, columns: str = "*") -> pd.DataFrame:
    """The property table as a frame indexed by ``sample_id`` (empty before any audit)."""
    with ws.catalog.read() as con:
        exists = con.execute("SELECT 1 FROM sqlite_master WHERE name = ?",
                             (PROPERTIES_TABLE,)).fetchone()
        if not exists:
            return pd.DataFrame(columns=["sample_id", "sha256"]).set_index("sample_id")
        cursor = con.execute(f"SELECT {columns} FROM {PROPERTIES_TABLE}")
        names = [d[0] for d in cursor.description]
        # In chunks: a list of Python tuples costs ten times the frame it becomes.
        parts = [pd.DataFrame(rows, columns=names)
                 for rows in iter(lambda: cursor.fetchmany(5000), [])]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=names)
    return frame.set_index("sample_id")


def same_value_rows(con, column: str) -> list:
    """``(sample_id, value)`` of the samples whose ``column`` (``sha256``, ``pixel_hash``)
    another sample shares, ordered by value: grouped by SQL, never as per-sample strings."""
    if column not in ("sha256", "pixel_hash"):
        raise ValueError(f"no duplicate key column {column!r}")
    con.row_factory = None
    if not con.execute("SELECT 1 FROM sqlite_master WHERE name = ?",
                       (PROPERTIES_TABLE,)).fetchone():
        return []
    return con.execute(
        f"SELECT sample_id, {column} FROM {PROPERTIES_TABLE} WHERE {column} IN (SELECT {column}"
        f" FROM {PROPERTIES_TABLE} WHERE {column} IS NOT NULL GROUP BY {column}"
        f" HAVING COUNT(*) > 1) ORDER BY {column}").fetchall()


def run_findings(ws, run_id: int, *, kinds=None) -> list[dict]:
    """The findings of audit run ``run_id`` in the order they were found (``kind``,
    ``sample_id``, ``score``, ``threshold``, ``reason``, ``grp``), of ``kinds`` if given."""
    sql, params = ("SELECT kind, sample_id, score, threshold, reason, grp FROM audit_findings"
                   " WHERE run_id = ?"), [run_id]
    if kinds is not None:
        sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
        params += list(kinds)
    return [dict(r) for r in ws.catalog.query(sql + " ORDER BY id", tuple(params))]
