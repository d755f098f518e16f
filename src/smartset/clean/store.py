"""What the cleaning stage stores, and its typed readers: the ``label_issues`` rows of each
``smartset clean`` run (one per labeled sample, most suspicious first), the ``tag_issues``
rows of each ``smartset clean --multi-label`` run (one per flagged cell: a sample and a
class whose tag is missing or extra) and the registry of plan files (catalog ``artifacts``
of kind ``clean_plan``). Other stages (review, learn's
reports) read these through the functions here, never by SQL of their own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["ISSUE_COLUMNS", "write_issues", "newest_clean_run", "label_issues",
           "register_plan", "plan_names", "plan_path", "PLAN_ARTIFACT", "TAG_ISSUE_COLUMNS",
           "write_tag_issues", "newest_tag_run", "tag_issues", "TAG_RUN"]

#: the columns of a ``label_issues`` row, in table order
ISSUE_COLUMNS = ("run_id", "sample_id", "kind", "score", "label", "suggested", "detectors",
                 "reason", "evidence")
#: the kind of the catalog's ``artifacts`` rows that register a plan under its name
PLAN_ARTIFACT = "clean_plan"
_CHUNK = 500
#: the command of a ``smartset clean --multi-label`` run
TAG_RUN = "clean tags"
#: the columns of a ``tag_issues`` row: ``kind`` missing or extra, ``score`` how sure the
#: model is (p of a missing tag, 1 - p of an extra one), ``tags`` the JSON list the run saw,
#: ``action_id`` the plan item that proposes the fix
TAG_ISSUE_COLUMNS = ("run_id", "sample_id", "class", "kind", "score", "probability", "tags",
                     "action_id", "reason")


def _ensure_tag_issues(con) -> None:
    # the cleaning stage's own table, made on its first write (as the audit's property
    # table): a workspace that never cleaned multi-label data does not carry it
    con.execute("CREATE TABLE IF NOT EXISTS tag_issues (run_id INTEGER NOT NULL REFERENCES "
                "runs(id), sample_id TEXT NOT NULL REFERENCES samples(id), class TEXT NOT "
                "NULL, kind TEXT NOT NULL, score REAL NOT NULL, probability REAL NOT NULL, "
                "tags TEXT NOT NULL, action_id TEXT, reason TEXT NOT NULL, PRIMARY KEY "
                "(run_id, sample_id, class)) WITHOUT ROWID")


def write_tag_issues(con, rows: Iterable[Sequence]) -> None:
    """Inside a catalog write: store ``tag_issues`` rows (tuples in
    :data:`TAG_ISSUE_COLUMNS` order, ``tags`` a JSON list)."""
    _ensure_tag_issues(con)
    con.executemany(f"INSERT OR REPLACE INTO tag_issues({', '.join(TAG_ISSUE_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(TAG_ISSUE_COLUMNS))})", rows)


def _has_tag_issues(ws) -> bool:
    return bool(ws.catalog.query("SELECT 1 FROM sqlite_master WHERE name = 'tag_issues'"))


def newest_tag_run(ws) -> int | None:
    """The run of the newest ``smartset clean --multi-label`` that stored its findings
    (flagged cells or none), or None."""
    return ws.catalog.newest_run_id(TAG_RUN, status="done")


def tag_issues(ws, run: int | None = None) -> list[dict]:
    """The flagged cells of ``smartset clean --multi-label`` run ``run`` (default: the
    newest), most confident first: dicts of :data:`TAG_ISSUE_COLUMNS` with ``tags``
    decoded to a list."""
    run = newest_tag_run(ws) if run is None else run
    if run is None or not _has_tag_issues(ws):
        return []
    rows = ws.catalog.query(f"SELECT {', '.join(TAG_ISSUE_COLUMNS)} FROM tag_issues WHERE "
                            f"run_id = ? ORDER BY score DESC, sample_id, class", (run,))
    out = [dict(r) for r in rows]
    for row in out:
        row["tags"] = json.loads(row["tags"])
    return out


def write_issues(con, rows: Iterable[Sequence]) -> None:
    """Inside a catalog write: store ``label_issues`` rows (tuples in
    :data:`ISSUE_COLUMNS` order), replacing a run's earlier row of the same sample and kind."""
    con.executemany(f"INSERT OR REPLACE INTO label_issues({', '.join(ISSUE_COLUMNS)}) VALUES "
                    f"({', '.join('?' * len(ISSUE_COLUMNS))})", rows)


def newest_clean_run(ws) -> int | None:
    """The run of the newest ``label_issues`` rows (the newest ``smartset clean``), or None."""
    return ws.catalog.query("SELECT MAX(run_id) FROM label_issues")[0][0]


def label_issues(ws, run: int | None = None, *, kinds: Sequence[str] | None = None,
                 sample_ids: Sequence[str] | None = None, evidence: bool | Sequence[str] = True,
                 decode: bool = True) -> list[dict]:
    """The ``label_issues`` rows of clean run ``run`` (default: the newest), most suspicious
    first (score, then sample id): dicts of :data:`ISSUE_COLUMNS`. ``kinds`` and
    ``sample_ids`` filter; ``evidence`` False leaves the (large) evidence out, or names the
    kinds whose evidence is read; ``decode`` parses ``detectors`` and ``evidence`` JSON."""
    run = newest_clean_run(ws) if run is None else run
    if run is None:
        return []
    if evidence is True:
        ev = "evidence"
    elif not evidence:
        ev = "NULL AS evidence"
    else:
        kinds_with = ", ".join("'" + k.replace("'", "''") + "'" for k in evidence)
        ev = f"CASE WHEN kind IN ({kinds_with}) THEN evidence END AS evidence"
    columns = ", ".join(c for c in ISSUE_COLUMNS if c != "evidence") + ", " + ev
    base, params = f"SELECT {columns} FROM label_issues WHERE run_id = ?", [run]
    if kinds is not None:
        base += f" AND kind IN ({', '.join('?' * len(kinds))})"
        params += list(kinds)
    order = " ORDER BY score DESC, sample_id"
    if sample_ids is None:
        rows = ws.catalog.query(base + order, tuple(params))
    else:
        rows, ids = [], list(sample_ids)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            rows += ws.catalog.query(base + f" AND sample_id IN ({', '.join('?' * len(chunk))})"
                                     + order, (*params, *chunk))
        rows.sort(key=lambda r: (-r["score"], r["sample_id"]))
    out = [dict(r) for r in rows]
    if decode:
        for row in out:
            row["detectors"] = json.loads(row["detectors"]) if row["detectors"] else []
            row["evidence"] = json.loads(row["evidence"]) if row["evidence"] else {}
    return out


def register_plan(con, name: str, relpath: str, meta: dict, created_at: str) -> None:
    """Inside a catalog write: register plan file ``relpath`` (relative to the workspace)
    under ``name``."""
    con.execute("INSERT OR REPLACE INTO artifacts(name, path, kind, fingerprint, meta,"
                " created_at) VALUES (?, ?, ?, NULL, ?, ?)",
                (name, relpath, PLAN_ARTIFACT, json.dumps(meta), created_at))


def plan_names(ws) -> list[str]:
    """Names of the plans registered in the workspace, newest first."""
    return [r[0] for r in ws.catalog.query(
        "SELECT name FROM artifacts WHERE kind = ? ORDER BY created_at DESC, name",
        (PLAN_ARTIFACT,))]


def plan_path(ws, name: str) -> Path | None:
    """The file of the plan registered under ``name`` (absolute), or None."""
    rows = ws.catalog.query("SELECT path FROM artifacts WHERE kind = ? AND name = ?",
                            (PLAN_ARTIFACT, name))
    if not rows:
        return None
    path = Path(rows[0][0])
    return path if path.is_absolute() else ws.path / path
