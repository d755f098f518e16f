"""The dataset catalog: one SQLite file (WAL mode) per workspace.

What it holds, and the rules that keep it trustworthy:

- ``roots``: folders that sample paths are relative to. Originals are never modified or moved.
- ``samples``: one row per image file: stable id, path under a root, sha256, byte size,
  format, width, height, mode, channels, split, source, status (``ok`` or ``missing``).
- ``label_events``: append-only (a trigger refuses UPDATE and DELETE). The current label of a
  sample is the one of its newest event; undo appends an event that restores the older value.
- ``lineage``: for samples smartset made (augmented copies), the origin sample, the stage
  and the parameters that replay it.
- ``ingest_issues``: files and rows that could not be ingested, each with a named reason.
- ``column_values`` / ``columns``: per-sample values computed by later stages; ``artifacts``:
  larger outputs (embeddings) kept as files and referenced here.
- ``versions`` / ``version_members``: named, immutable selections of samples, each member
  pinned to the label event that was current when the version was made.
- ``audit_findings``: what each audit found (kind, sample, score, threshold, reason).
- ``annotations`` / ``annotation_events``: boxes, polygons and masks of detection and
  segmentation sets; each change (relabel, delete) an appended event, the current state a
  view (``current_annotations``); ``annotation_categories`` numbers the classes.
- ``tag_events``: multi-label tags (several classes per image), append-only like labels;
  read with :func:`tags_upto` (a version freezes the newest tag and mark event ids).
- ``runs``: what each command was asked, with what seed and versions, and what it measured.

Each write is one transaction, so a killed process leaves the catalog as it was before the
transaction or after it, never in between.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from smartset.errors import SmartsetError

__all__ = ["Catalog", "CATALOG_FILE", "SCHEMA_VERSION", "LOCK_FILE", "WorkspaceBusyError", "now",
           "append_tag_events", "sync_ingest_tags", "tags_upto", "newest_tag_ids"]

CATALOG_FILE = "catalog.sqlite"

_SCHEMA = [
    # 1: the foundation.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE roots (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,        -- absolute, or relative to the workspace
        in_workspace INTEGER NOT NULL DEFAULT 0,
        added_at TEXT NOT NULL
    );
    CREATE TABLE samples (
        id TEXT PRIMARY KEY,
        root_id INTEGER NOT NULL REFERENCES roots(id),
        relpath TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        format TEXT,
        width INTEGER,
        height INTEGER,
        mode TEXT,
        channels INTEGER,
        split TEXT NOT NULL,
        source TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'ok',  -- ok, missing (file gone), broken (now unreadable)
        added_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (root_id, relpath)
    );
    CREATE INDEX samples_sha ON samples(sha256);
    CREATE INDEX samples_source ON samples(source);
    CREATE TABLE label_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sample_id TEXT NOT NULL REFERENCES samples(id),
        label TEXT,                       -- NULL: no label (unlabeled, or removed)
        targets TEXT,                     -- JSON list of floats, for regression
        author TEXT NOT NULL,
        time TEXT NOT NULL,
        reason TEXT,
        origin TEXT NOT NULL,             -- ingest, review, clean, api, undo, ...
        reverts INTEGER REFERENCES label_events(id)
    );
    CREATE INDEX label_events_sample ON label_events(sample_id, id);
    CREATE TRIGGER label_events_no_update BEFORE UPDATE ON label_events
        BEGIN SELECT RAISE(ABORT, 'label events are append-only: add an event instead'); END;
    CREATE TRIGGER label_events_no_delete BEFORE DELETE ON label_events
        BEGIN SELECT RAISE(ABORT, 'label events are append-only: add an event instead'); END;
    CREATE VIEW current_labels AS
        SELECT sample_id, label, targets, MAX(id) AS event_id FROM label_events GROUP BY sample_id;
    CREATE TABLE lineage (
        sample_id TEXT PRIMARY KEY REFERENCES samples(id),
        origin_id TEXT NOT NULL REFERENCES samples(id),
        stage TEXT NOT NULL,              -- what made it: augment, ...
        params TEXT NOT NULL,             -- JSON: enough to replay it from the origin
        created_at TEXT NOT NULL
    );
    CREATE INDEX lineage_origin ON lineage(origin_id);
    CREATE TABLE ingest_issues (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        root_id INTEGER REFERENCES roots(id),
        relpath TEXT NOT NULL DEFAULT '',  -- '' for issues of the whole source
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        kind TEXT NOT NULL,               -- 'plan': found listing the source; 'file': reading it
        size INTEGER,
        mtime_ns INTEGER,
        run_id INTEGER,
        time TEXT NOT NULL,
        UNIQUE (source, relpath, reason)
    );
    CREATE TABLE columns (
        name TEXT PRIMARY KEY,
        stage TEXT NOT NULL,
        fingerprint TEXT,
        description TEXT,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE column_values (
        column_name TEXT NOT NULL REFERENCES columns(name),
        sample_id TEXT NOT NULL REFERENCES samples(id),
        value,
        PRIMARY KEY (column_name, sample_id)
    ) WITHOUT ROWID;
    CREATE TABLE artifacts (
        name TEXT PRIMARY KEY,
        path TEXT NOT NULL,               -- relative to the workspace
        kind TEXT NOT NULL,
        fingerprint TEXT,
        meta TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE versions (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        parent_id INTEGER REFERENCES versions(id),
        created_at TEXT NOT NULL,
        description TEXT,
        params TEXT,
        n_samples INTEGER NOT NULL,
        fingerprint TEXT NOT NULL
    );
    CREATE TABLE version_members (
        version_id INTEGER NOT NULL REFERENCES versions(id),
        sample_id TEXT NOT NULL REFERENCES samples(id),
        label_event_id INTEGER REFERENCES label_events(id),
        PRIMARY KEY (version_id, sample_id)
    ) WITHOUT ROWID;
    CREATE TRIGGER versions_no_update BEFORE UPDATE ON versions
        BEGIN SELECT RAISE(ABORT, 'versions are immutable: create a new version'); END;
    CREATE TRIGGER version_members_no_update BEFORE UPDATE ON version_members
        BEGIN SELECT RAISE(ABORT, 'versions are immutable: create a new version'); END;
    CREATE TRIGGER version_members_no_delete BEFORE DELETE ON version_members
        BEGIN SELECT RAISE(ABORT, 'versions are immutable: create a new version'); END;
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        command TEXT NOT NULL,
        config TEXT NOT NULL,
        seed INTEGER,
        software TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        status TEXT NOT NULL,
        metrics TEXT
    );
    """,
    # 2: audit findings, one row per issue kind and sample (or per data set, sample_id NULL).
    """
    CREATE TABLE audit_findings (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        version TEXT,                     -- the audited version; NULL for the live catalog
        kind TEXT NOT NULL,               -- dark, blurry, near_duplicate, bias, ...
        sample_id TEXT REFERENCES samples(id),
        score REAL,
        threshold REAL,
        reason TEXT NOT NULL,
        grp TEXT                          -- duplicate set, or the property of a bias probe
    );
    CREATE INDEX audit_findings_run ON audit_findings(run_id, kind);
    CREATE INDEX audit_findings_sample ON audit_findings(sample_id);
    """,
    # 3: model predictions, sample marks (exclude, multi-label, duplicate-of), label issues.
    """
    CREATE TABLE predictions (
        run_id INTEGER NOT NULL REFERENCES runs(id),
        sample_id TEXT NOT NULL REFERENCES samples(id),
        kind TEXT NOT NULL,               -- oof (held out by fold), eval (held-out set), train
        fold INTEGER,                     -- for oof: the fold that held this sample out
        label TEXT,                       -- the given label when predicted
        predicted TEXT,
        probs BLOB,                       -- float32, in the order of the run's classes
        target REAL,                      -- regression: the prediction
        PRIMARY KEY (run_id, sample_id)
    ) WITHOUT ROWID;
    CREATE INDEX predictions_sample ON predictions(sample_id);
    CREATE TABLE sample_marks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sample_id TEXT NOT NULL REFERENCES samples(id),
        kind TEXT NOT NULL,               -- exclude, multi_label, duplicate_of
        value TEXT,                       -- JSON: class list (multi_label), sample id (duplicate_of)
        active INTEGER NOT NULL,          -- 1 sets the mark, 0 clears it
        author TEXT NOT NULL,
        time TEXT NOT NULL,
        reason TEXT,
        origin TEXT NOT NULL,
        reverts INTEGER REFERENCES sample_marks(id)
    );
    CREATE INDEX sample_marks_sample ON sample_marks(sample_id, kind, id);
    CREATE TRIGGER sample_marks_no_update BEFORE UPDATE ON sample_marks
        BEGIN SELECT RAISE(ABORT, 'sample marks are append-only: add a mark instead'); END;
    CREATE TRIGGER sample_marks_no_delete BEFORE DELETE ON sample_marks
        BEGIN SELECT RAISE(ABORT, 'sample marks are append-only: add a mark instead'); END;
    CREATE VIEW current_marks AS
        SELECT m.* FROM sample_marks m
        JOIN (SELECT MAX(id) AS id FROM sample_marks GROUP BY sample_id, kind) last ON last.id = m.id
        WHERE m.active = 1;
    CREATE TABLE label_issues (
        run_id INTEGER NOT NULL REFERENCES runs(id),
        sample_id TEXT NOT NULL REFERENCES samples(id),
        kind TEXT NOT NULL,               -- wrong_label, ambiguous, ...
        score REAL NOT NULL,              -- higher: more suspicious
        label TEXT,                       -- the given label
        suggested TEXT,                   -- suggested label (or JSON list for multi-label)
        detectors TEXT,                   -- JSON: which detectors flagged it
        reason TEXT NOT NULL,
        evidence TEXT,                    -- JSON
        PRIMARY KEY (run_id, sample_id, kind)
    ) WITHOUT ROWID;
    CREATE INDEX label_issues_sample ON label_issues(sample_id);
    """,
    # 4: detection and segmentation annotations (boxes, polygons, masks) as append-only events.
    """
    CREATE TABLE annotation_categories (
        name TEXT PRIMARY KEY,
        number INTEGER NOT NULL UNIQUE,   -- COCO category id, YOLO index, mask pixel value
        supercategory TEXT,
        added_at TEXT NOT NULL
    );
    CREATE TABLE annotations (
        id TEXT PRIMARY KEY,              -- stable: hash of the source and its annotation key
        sample_id TEXT NOT NULL REFERENCES samples(id),
        kind TEXT NOT NULL,               -- box, polygon, mask
        source TEXT NOT NULL,             -- annotations:FILE, augment, api, ...
        source_key TEXT,                  -- the annotation's id in its source
        created_at TEXT NOT NULL
    );
    CREATE INDEX annotations_sample ON annotations(sample_id);
    CREATE TRIGGER annotations_no_update BEFORE UPDATE ON annotations
        BEGIN SELECT RAISE(ABORT, 'annotations change by events: add an annotation event'); END;
    CREATE TRIGGER annotations_no_delete BEFORE DELETE ON annotations
        BEGIN SELECT RAISE(ABORT, 'annotations change by events: add an annotation event'); END;
    CREATE TABLE annotation_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        annotation_id TEXT NOT NULL REFERENCES annotations(id),
        category TEXT,                    -- the class name
        x REAL, y REAL, w REAL, h REAL,   -- the box in pixels (top-left, size)
        segmentation TEXT,                -- JSON: polygons [[x, y, ...]] or COCO RLE; NULL: box
        attributes TEXT,                  -- JSON: iscrowd, difficult, truncated, score, ...
        deleted INTEGER NOT NULL DEFAULT 0,
        author TEXT NOT NULL,
        time TEXT NOT NULL,
        reason TEXT,
        origin TEXT NOT NULL,             -- import, review, api, augment, undo, ...
        reverts INTEGER REFERENCES annotation_events(id)
    );
    CREATE INDEX annotation_events_annotation ON annotation_events(annotation_id, id);
    CREATE TRIGGER annotation_events_no_update BEFORE UPDATE ON annotation_events
        BEGIN SELECT RAISE(ABORT, 'annotation events are append-only: add an event instead'); END;
    CREATE TRIGGER annotation_events_no_delete BEFORE DELETE ON annotation_events
        BEGIN SELECT RAISE(ABORT, 'annotation events are append-only: add an event instead'); END;
    CREATE VIEW current_annotations AS
        SELECT a.id, a.sample_id, a.kind, a.source, a.source_key, e.category, e.x, e.y, e.w,
               e.h, e.segmentation, e.attributes, e.id AS event_id
        FROM annotations a
        JOIN (SELECT annotation_id, MAX(id) AS id FROM annotation_events GROUP BY annotation_id)
             last ON last.annotation_id = a.id
        JOIN annotation_events e ON e.id = last.id
        WHERE e.deleted = 0;
    CREATE TABLE annotation_images (
        sample_id TEXT PRIMARY KEY REFERENCES samples(id),
        source TEXT NOT NULL,
        image_key TEXT,                   -- the image's id in its source (COCO image id)
        meta TEXT                         -- JSON: the source's other image fields
    );
    """,
    # 5: which process runs a run (host, pid and the process's start time), so a run whose
    # process is gone (killed, timed out) reads as 'interrupted', not 'running' for ever.
    """
    ALTER TABLE runs ADD COLUMN process TEXT;
    """,
    # 6: multi-label tags, append-only like labels (a sample's current tags: its newest event).
    """
    CREATE TABLE tag_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sample_id TEXT NOT NULL REFERENCES samples(id),
        tags TEXT,                        -- JSON sorted list of class names; NULL: none
        author TEXT NOT NULL,
        time TEXT NOT NULL,
        reason TEXT,
        origin TEXT NOT NULL,             -- ingest, review, api, undo, ...
        reverts INTEGER REFERENCES tag_events(id)
    );
    CREATE INDEX tag_events_sample ON tag_events(sample_id, id);
    CREATE TRIGGER tag_events_no_update BEFORE UPDATE ON tag_events
        BEGIN SELECT RAISE(ABORT, 'tag events are append-only: add an event instead'); END;
    CREATE TRIGGER tag_events_no_delete BEFORE DELETE ON tag_events
        BEGIN SELECT RAISE(ABORT, 'tag events are append-only: add an event instead'); END;
    """,
]
SCHEMA_VERSION = len(_SCHEMA)
LOCK_FILE = ".smartset.lock"
_HELD: dict[str, list] = {}  # resolved catalog path -> [fd, depth] of locks this process holds


def _read_only(path: Path) -> bool:
    """True when the catalog cannot be written: the file or its folder is not writable
    (for root too: ``access`` reports a read-only mount)."""
    try:
        return path.exists() and not (os.access(path, os.W_OK)
                                      and os.access(path.parent, os.W_OK))
    except OSError:
        return False


def _describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
        return (f"PID {info['pid']} ('smartset {info['command']}', on {info['host']} since "
                f"{info['since'][:19]})")
    except (ValueError, KeyError, TypeError):
        return "another smartset process"


class WorkspaceBusyError(SmartsetError, RuntimeError):
    """Another process holds the workspace's write lock (see :meth:`Catalog.exclusive`)."""


def process_token(pid: int | None = None) -> str:
    """``host:pid:start``: this process (or ``pid``) told apart from a later one that reuses
    its pid (the start time comes from /proc where there is one, else it is empty)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


def process_alive(token: str | None) -> bool | None:
    """True/False when ``token``'s process is / is not running on this host; None when it
    cannot be told (another host, or no token: runs recorded before schema 5)."""
    if not token:
        return None
    host, _, rest = token.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return not start or _start_time(pid) == start


def now() -> str:
    """UTC time as ISO 8601 with microseconds: sorts as text, reads as time."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


class Catalog:
    """Connections to a workspace's SQLite catalog.

    One writer connection, used through :meth:`write` (a transaction per call); reads may
    use :meth:`read`, their own connection, so a long read never blocks the writer.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._writer: sqlite3.Connection | None = None
        self.read_only = _read_only(self.path)

    # -- connections -----------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            return self._connect_read_only()
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA foreign_keys = ON")
        con.execute("PRAGMA busy_timeout = 30000")
        con.execute("PRAGMA synchronous = NORMAL")
        return con

    def _connect_read_only(self) -> sqlite3.Connection:
        """A read-only workspace (file or folder not writable, a read-only mount): SQLite
        reads a WAL database read-only when its -shm and -wal files exist and are readable;
        when they cannot be created (the folder is not writable) nobody can write it either,
        so it is opened ``immutable`` (no -shm needed). See sqlite.org/wal.html#readonly."""
        from urllib.parse import quote

        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        shm = self.path.with_name(self.path.name + "-shm")
        if not shm.exists() and not os.access(self.path.parent, os.W_OK):
            uri += "&immutable=1"
        con = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA busy_timeout = 30000")
        return con

    def check_writable(self) -> None:
        """Raise :class:`~smartset.errors.WorkspaceError` (one line, with the fix) when the
        workspace cannot be written."""
        if self.read_only:
            from smartset.errors import WorkspaceError

            raise WorkspaceError(
                f"The workspace '{self.path.parent}' is read-only (its folder or "
                f"{self.path.name} cannot be written): reading works, writing does not. Make "
                f"it writable (chmod -R u+w, or mount it read-write) or copy it elsewhere.")

    @contextlib.contextmanager
    def exclusive(self, command: str) -> Iterator[None]:
        """Hold the workspace's write lock for ``command`` (ingest, augment, ...): a second
        process that asks for it meanwhile gets :class:`WorkspaceBusyError` at once, naming
        the process that holds it. Re-entrant within one process; released by the kernel
        when the holder dies (kill -9 leaves no stale lock)."""
        self.check_writable()
        key = str(self.path.resolve())
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
            try:
                yield
            finally:
                held[1] -= 1
            return
        import fcntl

        lock_path = self.path.with_name(LOCK_FILE)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
                raise WorkspaceBusyError(
                    f"The workspace '{self.path.parent}' is busy: "
                    f"{_describe_holder(holder)} is writing it. Wait for it to finish (or "
                    f"stop it), then run this again; nothing was changed.") from None
            try:  # who holds it, for the message a second process gets (best effort)
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": command,
                                          "host": socket.gethostname(),
                                          "since": now()}).encode(), 0)
            except OSError:
                pass
            _HELD[key] = [fd, 1]
            try:
                yield
            finally:
                del _HELD[key]
                try:
                    os.ftruncate(fd, 0)
                except OSError:
                    pass
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @classmethod
    def create(cls, path: str | Path) -> Catalog:
        catalog = cls(path)
        con = catalog._connect()
        con.execute("PRAGMA journal_mode = WAL")
        con.close()
        catalog.migrate()
        return catalog

    def migrate(self) -> None:
        """Bring the schema up to :data:`SCHEMA_VERSION`, one transaction per step (a
        read-only catalog is only checked: it must be current)."""
        if self.read_only:
            with self.read() as con:
                row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            current = int(row[0]) if row else 0
            if current != SCHEMA_VERSION:
                from smartset.errors import WorkspaceError

                raise WorkspaceError(
                    f"The workspace '{self.path.parent}' is read-only and its catalog has "
                    f"schema {current}, not {SCHEMA_VERSION}: open it writable once (chmod -R "
                    f"u+w) so smartset can upgrade it, then it reads read-only too.")
            return
        with self.write() as con:
            has_meta = con.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
            ).fetchone()
            current = 0
            if has_meta:
                row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"catalog {self.path} has schema {current}, newer than this smartset "
                    f"({SCHEMA_VERSION}): upgrade smartset"
                )
            for step in range(current, SCHEMA_VERSION):
                for statement in _split_sql(_SCHEMA[step]):
                    con.execute(statement)
                con.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                    (str(step + 1),),
                )

    @property
    def writer(self) -> sqlite3.Connection:
        if self._writer is None:
            self._writer = self._connect()
        return self._writer

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed whole on success, rolled back whole on error."""
        self.check_writable()
        con = self.writer
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            if con.in_transaction:  # SQLite may have rolled back itself (disk full, I/O)
                try:
                    con.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise
        con.execute("COMMIT")

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        con = self._connect()
        try:
            yield con
        finally:
            con.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- small helpers used by several stages -----------------------------------------
    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        with self.read() as con:
            return con.execute(sql, params).fetchall()

    def start_run(self, command: str, config: dict, *, seed: int | None = None) -> int:
        from smartset._software import software_versions

        with self.write() as con:
            cur = con.execute(
                "INSERT INTO runs(command, config, seed, software, started_at, status, process)"
                " VALUES (?, ?, ?, ?, ?, 'running', ?)",
                (command, json.dumps(config, default=str), seed,
                 json.dumps(software_versions()), now(), process_token()),
            )
            return int(cur.lastrowid)

    @contextlib.contextmanager
    def failing_run(self, run_id: int) -> Iterator[None]:
        """Mark run ``run_id`` failed, with the error, if the block raises."""
        try:
            yield
        except BaseException as error:
            try:  # best effort: a full disk must not hide the error that stopped the run
                self.finish_run(run_id, {"error": f"{type(error).__name__}: {error}"},
                                status="failed")
            except (sqlite3.Error, OSError):
                pass
            raise

    def mark_interrupted_runs(self) -> list[int]:
        """Mark ``interrupted`` every ``running`` run whose process is gone (killed, timed
        out, the machine restarted); returns their ids. A read-only catalog is left as it
        is (the ids are still returned, so readers can show them as interrupted)."""
        gone = [int(r[0]) for r in self.query("SELECT id, process FROM runs WHERE status = "
                                               "'running'") if process_alive(r[1]) is False]
        if gone and not self.read_only:
            try:
                with self.write() as con:
                    con.executemany("UPDATE runs SET status = 'interrupted' WHERE id = ? AND "
                                    "status = 'running'", [(i,) for i in gone])
            except sqlite3.OperationalError:  # read-only workspace: only shown
                pass
        return gone

    def run(self, run_id: int) -> dict | None:
        """Run ``run_id`` as a dict (``config``, ``metrics`` and ``software`` decoded), or
        None: the typed reader every stage uses instead of its own query."""
        rows = self.query("SELECT * FROM runs WHERE id = ?", (int(run_id),))
        if not rows:
            return None
        run = dict(rows[0])
        for key in ("config", "metrics", "software"):
            if key in run:
                run[key] = json.loads(run[key]) if run[key] else ({} if key != "metrics" else None)
        return run

    def newest_run_id(self, command: str | None = None, *, status: str | None = None
                      ) -> int | None:
        """The id of the newest run (of ``command``, with ``status``), or None."""
        found = self.run_ids(command, status=status, limit=1)
        return found[0] if found else None

    def run_ids(self, command: str | None = None, *, status: str | None = None,
                limit: int | None = None) -> list[int]:
        """Ids of the runs (of ``command``, with ``status``), newest first, at most ``limit``."""
        sql, params = "SELECT id FROM runs", []
        clauses = []
        if command is not None:
            clauses.append("command = ?")
            params.append(command)
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY id DESC" + ("" if limit is None else f" LIMIT {int(limit)}")
        return [int(r[0]) for r in self.query(sql, tuple(params))]

    def finish_run(self, run_id: int, metrics: dict, *, status: str = "done") -> None:
        with self.write() as con:
            con.execute(
                "UPDATE runs SET finished_at=?, status=?, metrics=? WHERE id=?",
                (now(), status, json.dumps(metrics, default=str), run_id),
            )


def _split_sql(script: str) -> list[str]:
    """Split a schema script into statements (``executescript`` would commit mid-migration)."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    return statements


# -- multi-label tags: the SQL of tag_events (read by smartset.Workspace.tags) ---------------
def append_tag_events(con: sqlite3.Connection, rows, *, author: str, origin: str,
                      reason: str | None, stamp: str | None = None) -> list[int]:
    """Append one tag event per ``(sample_id, tags)`` (``tags`` an iterable of class names,
    or None to clear) in the caller's transaction; returns the event ids."""
    stamp = stamp or now()
    return [con.execute(
        "INSERT INTO tag_events(sample_id, tags, author, time, reason, origin)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (sid, None if tags is None else json.dumps(sorted(set(tags))), author, stamp, reason,
         origin)).lastrowid for sid, tags in rows]


def sync_ingest_tags(con: sqlite3.Connection, rows, *, author: str, reason: str) -> int:
    """Ingest's tags for ``(sample_id, tags)``: an event only where the newest ingest event
    of that sample says otherwise (re-ingesting an unchanged table writes nothing).
    Returns the number of events appended."""
    changed = []
    for sid, tags in rows:
        wanted = None if tags is None else json.dumps(sorted(set(tags)))
        last = con.execute("SELECT tags FROM tag_events WHERE sample_id=? AND origin='ingest'"
                           " ORDER BY id DESC LIMIT 1", (sid,)).fetchone()
        if (last[0] if last else None) != wanted and not (last is None and wanted is None):
            changed.append((sid, tags))
    append_tag_events(con, changed, author=author, origin="ingest", reason=reason)
    return len(changed)


def newest_tag_ids(con: sqlite3.Connection) -> tuple[int, int]:
    """``(newest tag event id, newest multi_label mark event id)``, 0 when none: a version
    records them, so its tags stay as they were when it was made."""
    tag = con.execute("SELECT COALESCE(MAX(id), 0) FROM tag_events").fetchone()[0]
    mark = con.execute("SELECT COALESCE(MAX(id), 0) FROM sample_marks WHERE kind='multi_label'"
                       ).fetchone()[0]
    return int(tag), int(mark)


def tags_upto(con: sqlite3.Connection, tag_id: int | None = None,
              mark_id: int | None = None) -> tuple[dict[str, list[str] | None],
                                                   dict[str, list[str]]]:
    """``(tag events, multi_label marks)`` in force after events ``tag_id`` and ``mark_id``
    (None: all): sample id -> the newest tag event's classes (None: cleared), and sample id
    -> the classes of its active multi_label mark."""
    tag_id = 2**62 if tag_id is None else int(tag_id)
    mark_id = 2**62 if mark_id is None else int(mark_id)
    tags = {sid: (None if value is None else json.loads(value)) for sid, value in con.execute(
        "SELECT t.sample_id, t.tags FROM tag_events t JOIN (SELECT MAX(id) AS id FROM tag_events"
        " WHERE id <= ? GROUP BY sample_id) last ON last.id = t.id", (tag_id,))}
    marks = {sid: json.loads(value) for sid, value, active in con.execute(
        "SELECT m.sample_id, m.value, m.active FROM sample_marks m JOIN (SELECT MAX(id) AS id"
        " FROM sample_marks WHERE kind='multi_label' AND id <= ? GROUP BY sample_id) last"
        " ON last.id = m.id", (mark_id,)) if active and value}
    return tags, marks
