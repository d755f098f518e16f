"""What the ingest stage stores, and the SQL of it: the data roots, the samples, the files
that could not be ingested (``ingest_issues``), the lineage of derived samples, and each
sample's first label events (origin ``ingest``, appended here in bulk within the batch's
transaction; every later change goes through :mod:`smartset.events`). The run itself
(planning, reading files, counting) is :mod:`smartset.ingest._run`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from smartset.catalog import Catalog, now, sync_ingest_tags
from smartset.ingest._sources import Entry, SourcePlan
from smartset.storage import is_url

__all__ = ["sample_id", "register_root", "targets_json", "known_samples", "known_bad_files",
           "write_batch", "insert_samples", "finish_source", "source_issues", "origin_rows",
           "insert_lineage", "taken_relpaths"]


def sample_id(root_key: str, relpath: str) -> str:
    """The stable id of the file ``relpath`` under the root stored as ``root_key``."""
    return hashlib.blake2b(f"{root_key}\0{relpath}".encode(), digest_size=8).hexdigest()


def register_root(con, root: Path | str, workspace: Path) -> tuple[int, str]:
    if is_url(root):
        key, inside = root, 0  # the URL as given: never inside the workspace
    else:
        try:
            key, inside = root.relative_to(workspace).as_posix(), 1
        except ValueError:
            key, inside = str(root), 0
    row = con.execute("SELECT id FROM roots WHERE path=?", (key,)).fetchone()
    if row:
        return row[0], key
    cur = con.execute("INSERT INTO roots(path, in_workspace, added_at) VALUES (?, ?, ?)",
                      (key, inside, now()))
    return cur.lastrowid, key


def targets_json(targets) -> str | None:
    return None if targets is None else json.dumps(list(targets))


def known_samples(catalog: Catalog, root_id: int) -> dict[str, dict]:
    """``{relpath: row}`` (``id``, ``relpath``, ``size``, ``mtime_ns``, ``status``) of the
    samples under root ``root_id``."""
    return {row["relpath"]: row for row in catalog.query(
        "SELECT id, relpath, size, mtime_ns, status FROM samples WHERE root_id=?", (root_id,))}


def known_bad_files(catalog: Catalog, source: str) -> dict[str, tuple[int, int]]:
    """``{relpath: (size, mtime_ns)}`` of the files of ``source`` that could not be ingested."""
    return {row["relpath"]: (row["size"], row["mtime_ns"]) for row in catalog.query(
        "SELECT relpath, size, mtime_ns FROM ingest_issues WHERE source=? AND kind='file'",
        (source,))}


def source_issues(catalog: Catalog, source: str) -> list[dict]:
    """What could not be ingested from ``source``: ``reason``, ``relpath``, ``detail``."""
    return [dict(row) for row in catalog.query(
        "SELECT reason, relpath, detail FROM ingest_issues WHERE source=? ORDER BY reason, "
        "relpath", (source,))]


def origin_rows(catalog: Catalog) -> dict[str, dict]:
    """``{sample id: {id, split, label, targets}}`` of every sample (what a derived sample
    inherits from its origin)."""
    return {row["id"]: row for row in catalog.query(
        "SELECT s.id, s.split, l.label, l.targets FROM samples s "
        "LEFT JOIN current_labels l ON l.sample_id = s.id")}


def insert_lineage(con, rows) -> None:
    """Inside a write: ``(sample_id, origin_id, stage, params JSON, created_at)`` rows."""
    con.executemany("INSERT INTO lineage(sample_id, origin_id, stage, params, created_at)"
                    " VALUES (?, ?, ?, ?, ?)", rows)


def write_batch(con, batch, entries, known, known_bad, source, root_id, root_key, run_id,
                 author, report):
    stamp = now()
    issues, broken, updates, new_rows, new_events = [], [], [], [], []
    for i, relpath in enumerate(batch["relpath"]):
        entry: Entry = entries[relpath]
        sid = known[relpath]["id"] if relpath in known else sample_id(root_key, relpath)
        reason = batch["reason"][i]
        if reason is not None:
            issues.append((source, root_id, relpath, reason, batch["detail"][i], entry.size,
                           entry.mtime_ns, run_id, stamp))
            if relpath in known:
                broken.append((stamp, sid))
            continue
        values = (batch["sha256"][i], entry.size, entry.mtime_ns, batch["format"][i],
                  batch["width"][i], batch["height"][i], batch["mode"][i], batch["channels"][i],
                  entry.split, source)
        if relpath in known:
            updates.append((*values, stamp, sid))
        else:
            new_rows.append((*values, sid, root_id, relpath, stamp, stamp))
            new_events.append((sid, entry.label, targets_json(entry.targets), author, stamp,
                               f"ingest run {run_id}", "ingest"))
    # Files that were bad before and were read again: their old issue goes, a new one may come.
    con.executemany("DELETE FROM ingest_issues WHERE source=? AND relpath=? AND kind='file'",
                    [(source, r) for r in batch["relpath"] if r in known_bad])
    con.executemany(
        "INSERT INTO ingest_issues(source, root_id, relpath, reason, detail, kind, size,"
        " mtime_ns, run_id, time) VALUES (?, ?, ?, ?, ?, 'file', ?, ?, ?, ?)", issues)
    con.executemany("UPDATE samples SET status='broken', updated_at=? WHERE id=?", broken)
    con.executemany(
        "UPDATE samples SET sha256=?, size=?, mtime_ns=?, format=?, width=?, height=?,"
        " mode=?, channels=?, split=?, source=?, status='ok', updated_at=? WHERE id=?", updates)
    insert_samples(con, new_rows, new_events)
    report.updated += len(updates)
    report.new += len(new_rows)


def insert_samples(con, rows, events):
    """New sample rows and their first label events (in the caller's transaction)."""
    con.executemany(
        "INSERT INTO samples(sha256, size, mtime_ns, format, width, height, mode,"
        " channels, split, source, id, root_id, relpath, added_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    con.executemany(
        "INSERT INTO label_events(sample_id, label, targets, author, time, reason, origin)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)", events)


def finish_source(con, plan: SourcePlan, entries, root_id, root_key, run_id, author, report):
    """Source-level state: plan issues, label and split changes, files gone missing."""
    stamp = now()
    con.execute("DELETE FROM ingest_issues WHERE source=? AND kind='plan'", (plan.source,))
    con.executemany(
        "INSERT OR REPLACE INTO ingest_issues(source, root_id, relpath, reason, detail, kind,"
        " size, mtime_ns, run_id, time) VALUES (?, ?, ?, ?, ?, 'plan', ?, ?, ?, ?)",
        [(plan.source, root_id, i.relpath, i.reason, i.detail, i.size, i.mtime_ns, run_id, stamp)
         for i in plan.issues])
    stale = [row[0] for row in con.execute(
        "SELECT relpath FROM ingest_issues WHERE source=? AND kind='file'", (plan.source,))
        if row[0] not in entries]
    con.executemany("DELETE FROM ingest_issues WHERE source=? AND relpath=? AND kind='file'",
                    [(plan.source, relpath) for relpath in stale])

    rows = con.execute(
        "SELECT s.id, s.relpath, s.split, s.status, s.source, e.label, e.targets, MAX(e.id)"
        " FROM samples s LEFT JOIN label_events e ON e.sample_id = s.id AND e.origin = 'ingest'"
        " WHERE s.root_id = ? GROUP BY s.id", (root_id,)).fetchall()
    tag_rows, has_tags = [], any(e.tags is not None for e in plan.entries)
    for sid, relpath, split, status, source, label, targets, _ in rows:
        entry = entries.get(relpath)
        if entry is None:
            if source == plan.source and status != "missing":
                con.execute("UPDATE samples SET status='missing', updated_at=? WHERE id=?",
                            (stamp, sid))
                report.missing += 1
            continue
        if status == "missing":
            con.execute("UPDATE samples SET status='ok', updated_at=? WHERE id=?", (stamp, sid))
        if split != entry.split or source != plan.source:
            con.execute("UPDATE samples SET split=?, source=?, updated_at=? WHERE id=?",
                        (entry.split, plan.source, stamp, sid))
        if (label, targets) != (entry.label, targets_json(entry.targets)):
            con.execute(
                "INSERT INTO label_events(sample_id, label, targets, author, time, reason, origin)"
                " VALUES (?, ?, ?, ?, ?, ?, 'ingest')",
                (sid, entry.label, targets_json(entry.targets), author, stamp,
                 f"the source changed the label (ingest run {run_id})"))
            report.relabeled += 1
        if has_tags:
            tag_rows.append((sid, entry.tags))
    # Tags of a table's tags column: an event where this source now says otherwise.
    sync_ingest_tags(con, tag_rows, author=author,
                     reason=f"the source gave these tags (ingest run {run_id})")


def taken_relpaths(con, root_id: int, relpaths: list[str]) -> list[str]:
    taken = []
    for start in range(0, len(relpaths), 500):
        chunk = relpaths[start:start + 500]
        taken += [r[0] for r in con.execute(
            f"SELECT relpath FROM samples WHERE root_id = ? AND relpath IN "
            f"({', '.join('?' * len(chunk))})", (root_id, *chunk))]
    return taken
