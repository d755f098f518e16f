"""A workspace: a folder holding a catalog, a cache and what smartset writes.

``smartset.init(DIR)`` makes one, ``smartset.open(DIR)`` opens it. The façade, one rule:
the workspace holds the data (samples, labels, marks, versions, columns, predictions, runs,
``dataset``) and ``ingest``, which fills it; every other stage is a function taking the
workspace first (``audit.audit(ws)``, ``learn.train(ws)``, ``clean.make_plan(ws)``), never a
method here: this module sits below the stages and imports none above ingest (a test pins
it). The CLI is a thin layer over both.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path


from smartset._names import InvalidNameError, check_name
from smartset.catalog import CATALOG_FILE, Catalog, newest_tag_ids, now
from smartset.errors import LabelError, VersionError, WorkspaceError
from smartset.events import LABELS, MARKS

__all__ = ["Workspace", "init", "open_workspace", "find_workspace"]


class _Pandas:
    """pandas, imported on first use: opening a workspace and reading it as plain rows
    (``smartset samples --json``, :meth:`Workspace.sample_records`) does not import it."""

    def __getattr__(self, name: str):
        import pandas

        return getattr(pandas, name)


pd = _Pandas()

_SUBDIRS = ("cache", "data", "reports")
MARK_KINDS = ("exclude", "multi_label", "duplicate_of")


class Workspace:
    """A smartset workspace. Create with :func:`smartset.init`, open with :func:`smartset.open`."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()
        db = self.path / CATALOG_FILE
        if not db.is_file():
            raise WorkspaceError(
                f"'{self.path}' is not a smartset workspace (no {CATALOG_FILE}). Create one with "
                f"'smartset init {path}'.")
        self.catalog = Catalog(db)
        self.catalog.migrate()

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.catalog.close()

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    @property
    def reports_dir(self) -> Path:
        return self.path / "reports"

    # -- ingest ------------------------------------------------------------------------
    def ingest(self, source: str | Path, **options):
        """Add the images of ``source`` to the catalog; re-running reads only what changed.

        ``source`` is a folder (class folders, optionally under ``train/``/``val/``/``test/``;
        labels in file names; or unlabeled), a ``.csv``/``.tsv`` table, or a ``.npz`` archive.
        The layout is detected unless ``layout`` is one of ``folders``, ``split-folders``,
        ``filenames``, ``csv``, ``numpy``, ``unlabeled``. Other keyword options:
        ``pattern`` (a regex with a ``label`` group, or a preset: ``prefix``, ``dot``,
        ``suffix-number``), ``split``, ``root``, ``path_column``, ``label_column``,
        ``target_columns``, ``split_column``, ``classes`` (names for integer labels),
        ``max_pixels`` (default 100 million), ``engine``, ``workers``, ``batch_size``,
        ``author``, ``show_progress``. Returns an :class:`~smartset.ingest.IngestReport`;
        files that cannot be ingested are recorded with a reason (see :meth:`issues`).
        """
        from smartset.ingest import ingest

        return ingest(self.catalog, self.path, source, **options)

    def add_derived_samples(self, folder: str | Path, relpaths: Sequence[str], *,
                            origin_ids: Sequence[str], params: Sequence[dict], stage: str,
                            labels: Sequence[str | None] | None = None,
                            targets: Sequence | None = None, splits: Sequence[str] | None = None,
                            author: str = "smartset") -> list[str]:
        """Register image files a stage wrote under ``folder`` (inside the workspace) as new
        samples, each derived from an origin sample with the ``params`` that replay it.

        Labels, targets and splits default to the origin's. Returns the new sample ids, in
        the order of ``relpaths``; see :meth:`lineage`.
        """
        from smartset.ingest import add_derived

        return add_derived(self.catalog, self.path, folder, list(relpaths),
                           origin_ids=list(origin_ids), params=list(params), stage=stage,
                           labels=None if labels is None else list(labels),
                           targets=None if targets is None else list(targets),
                           splits=None if splits is None else list(splits), author=author)

    def lineage(self) -> pd.DataFrame:
        """Derived samples: ``sample_id``, ``origin_id``, ``stage``, ``params`` (a dict)."""
        rows = [dict(r) for r in self.catalog.query("SELECT * FROM lineage ORDER BY rowid")]
        for row in rows:
            row["params"] = json.loads(row["params"])
        return pd.DataFrame(rows, columns=["sample_id", "origin_id", "stage", "params",
                                           "created_at"])

    def origins(self) -> dict[str, str]:
        """``{derived sample id: the sample it was made from}`` (one step of the lineage),
        without pandas."""
        return {str(s): str(o) for s, o in self.catalog.query(
            "SELECT sample_id, origin_id FROM lineage")}

    def version_names(self) -> list[str]:
        """The names of the data set versions, oldest first."""
        return [r[0] for r in self.catalog.query("SELECT name FROM versions ORDER BY id")]

    def issues(self, *, source: str | None = None) -> pd.DataFrame:
        """Ingest issues: one row per file or table row that could not be taken as it is."""
        sql = ("SELECT i.source, i.reason, i.relpath, i.detail, i.kind, i.time, r.path AS root"
               " FROM ingest_issues i LEFT JOIN roots r ON r.id = i.root_id")
        params: tuple = ()
        if source is not None:
            sql, params = sql + " WHERE i.source = ?", (source,)
        return pd.DataFrame([dict(r) for r in self.catalog.query(sql + " ORDER BY i.id", params)],
                            columns=["source", "reason", "relpath", "detail", "kind", "time", "root"])

    # -- samples -----------------------------------------------------------------------
    def _root_paths(self) -> dict[str, str]:
        return {row["path"]: str(self.path / row["path"]) if row["in_workspace"] else row["path"]
                for row in self.catalog.query("SELECT path, in_workspace FROM roots")}

    def samples(self, version: str | None = None, *, split: str | Sequence[str] | None = None,
                include_unavailable: bool = False, include_excluded: bool = False,
                columns: Sequence[str] = ()) -> pd.DataFrame:
        """The samples of ``version`` (default: the live catalog) as a DataFrame.

        Columns: ``id``, ``path`` (absolute), ``relpath``, ``root``, ``sha256``, ``size``,
        ``format``, ``width``, ``height``, ``mode``, ``channels``, ``split``, ``source``,
        ``status``, ``label``, ``targets`` (list of floats or None), ``label_event_id``,
        ``origin_id`` (the sample a derived sample was made from, else None), plus any
        computed ``columns`` asked for. Samples whose file went missing or broke
        are left out unless ``include_unavailable``; in the live catalog, samples marked
        ``exclude`` (see :meth:`mark`) are left out unless ``include_excluded``. A version
        gives the members and labels it pinned.
        """
        chunks = list(self.iter_samples(version, split=split, include_unavailable=include_unavailable,
                                        include_excluded=include_excluded))
        frame = chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)
        for name in frame.columns:  # a column all None in one chunk: infer as one frame would
            if name != "label" and len({str(chunk[name].dtype) for chunk in chunks}) > 1:
                frame[name] = pd.Series(frame[name].to_numpy(dtype=object).tolist())
        for name in columns:
            frame[name] = frame["id"].map(self.read_column(name))
        return frame

    def _samples_sql(self, version, split, include_unavailable, include_excluded):
        """The query of :meth:`iter_samples`: ``(sql, params, column names)``."""
        params: list = []
        if version is None:
            labels = "LEFT JOIN current_labels l ON l.sample_id = s.id"
            label_cols = "l.label, l.targets, l.event_id AS label_event_id"
        else:
            info = self.version(version)
            labels = ("JOIN version_members m ON m.sample_id = s.id AND m.version_id = ? "
                      "LEFT JOIN label_events l ON l.id = m.label_event_id")
            label_cols = "l.label, l.targets, m.label_event_id"
            params.append(info["id"])
        where = [] if include_unavailable else ["s.status = 'ok'"]
        if version is None and not include_excluded:
            where.append("s.id NOT IN (SELECT sample_id FROM current_marks WHERE kind='exclude')")
        if split is not None:
            splits = [split] if isinstance(split, str) else list(split)
            where.append(f"s.split IN ({', '.join('?' * len(splits))})")
            params.extend(splits)
        sql = (f"SELECT s.id, r.path AS root, s.relpath, s.sha256, s.size, s.format, s.width,"
               f" s.height, s.mode, s.channels, s.split, s.source, s.status, {label_cols},"
               f" g.origin_id FROM samples s JOIN roots r ON r.id = s.root_id"
               f" LEFT JOIN lineage g ON g.sample_id = s.id {labels}"
               f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY s.root_id, s.relpath")
        names = ["id", "root", "relpath", "sha256", "size", "format", "width", "height", "mode",
                 "channels", "split", "source", "status", "label", "targets", "label_event_id",
                 "origin_id"]
        return sql, params, names

    def sample_records(self, version: str | None = None, *,
                       split: str | Sequence[str] | None = None,
                       limit: int | None = None) -> tuple[int, list[dict]]:
        """:meth:`samples` as plain dicts, the same columns, without pandas (a fast
        ``smartset samples``): ``(total, the first limit rows)``; ``limit`` None: all."""
        sql, params, names = self._samples_sql(version, split, False, False)
        roots = self._root_paths()
        with self.catalog.read() as con:
            con.row_factory = None  # plain tuples
            rows = con.execute(sql, tuple(params)).fetchall()
        records = []
        for row in rows if limit is None else rows[:limit]:
            record = dict(zip(names, row))
            record = {"id": record["id"],
                      "path": os.path.join(roots[record["root"]], record["relpath"]), **record}
            record["targets"] = (json.loads(record["targets"])
                                 if isinstance(record["targets"], str) else None)
            if not isinstance(record["label"], str):
                record["label"] = None
            records.append(record)
        return len(rows), records

    def iter_samples(self, version: str | None = None, *, split: str | Sequence[str] | None = None,
                     include_unavailable: bool = False, include_excluded: bool = False,
                     chunk_size: int = 20_000):
        """:meth:`samples` as consecutive DataFrames of at most ``chunk_size`` rows (at least
        one, maybe empty), read from one snapshot of the catalog: stages that stream over
        the samples never hold every row as Python objects at once."""
        sql, params, names = self._samples_sql(version, split, include_unavailable,
                                               include_excluded)
        roots = self._root_paths()
        with self.catalog.read() as con:
            con.row_factory = None  # plain tuples
            con.execute("BEGIN")  # one snapshot for every chunk
            cursor = con.execute(sql, tuple(params))
            first = True
            while True:
                rows = cursor.fetchmany(chunk_size)
                if not rows and not first:
                    break
                first = False
                frame = pd.DataFrame(rows, columns=names)
                del rows
                frame.insert(1, "path", [os.path.join(roots[r], p)
                                         for r, p in zip(frame["root"], frame["relpath"])])
                frame["targets"] = [json.loads(t) if isinstance(t, str) else None
                                    for t in frame["targets"]]
                # None, not NaN, marks a missing label: `label is None` reads as meant.
                frame["label"] = pd.Series([v if isinstance(v, str) else None
                                            for v in frame["label"]], index=frame.index,
                                           dtype=object)
                yield frame
                if len(frame) < chunk_size:
                    break
            con.execute("COMMIT")

    def records_of(self, sample_ids: Sequence[str]) -> dict[str, dict]:
        """Per known sample id: ``relpath``, ``split``, ``width``, ``height``, ``format``,
        ``status``, ``sha256``, ``origin_id`` (of a derived sample), ``label`` and
        ``label_event_id`` (its version), ``marks`` (kind -> ``{"id", "active", "value"}``
        of the newest mark event, value decoded). Unknown ids are left out."""
        records: dict[str, dict] = {}
        ids = list(dict.fromkeys(sample_ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            for r in self.catalog.query(
                    f"SELECT s.id, s.relpath, s.split, s.width, s.height, s.format, s.status,"
                    f" s.sha256, g.origin_id, e.id AS event_id, e.label"
                    f" FROM samples s LEFT JOIN lineage g ON g.sample_id = s.id"
                    f" LEFT JOIN label_events e ON e.id = (SELECT MAX(x.id) FROM label_events x"
                    f"  WHERE x.sample_id = s.id)"
                    f" WHERE s.id IN ({marks})", tuple(chunk)):
                records[r["id"]] = {
                    "relpath": r["relpath"], "split": r["split"], "width": r["width"],
                    "height": r["height"], "format": r["format"], "status": r["status"],
                    "sha256": r["sha256"], "origin_id": r["origin_id"], "label": r["label"],
                    "label_event_id": r["event_id"], "marks": {}}
            for r in self.catalog.query(
                    f"SELECT m.sample_id, m.kind, m.id, m.value, m.active FROM sample_marks m"
                    f" JOIN (SELECT MAX(id) AS id FROM sample_marks WHERE sample_id IN"
                    f" ({marks}) GROUP BY sample_id, kind) last ON last.id = m.id", tuple(chunk)):
                if r["sample_id"] in records:
                    records[r["sample_id"]]["marks"][r["kind"]] = {
                        "id": r["id"], "active": bool(r["active"]),
                        "value": json.loads(r["value"]) if r["value"] else None}
        return records

    def labels_of(self, sample_ids: Sequence[str]) -> dict[str, str | None]:
        """The current label of each of ``sample_ids`` that has one."""
        found: dict[str, str | None] = {}
        ids = list(sample_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found.update({r[0]: r[1] for r in self.catalog.query(
                f"SELECT sample_id, label FROM current_labels WHERE sample_id IN "
                f"({', '.join('?' * len(chunk))})", tuple(chunk))})
        return found

    def origin_of(self, sample_id: str) -> dict | None:
        """Where a derived sample comes from: ``origin_id``, ``stage``, ``params``
        (decoded), ``created_at``, ``origin_relpath``, ``origin_label``; None for an
        original."""
        rows = self.catalog.query(
            "SELECT g.origin_id, g.stage, g.params, g.created_at, s.relpath, l.label"
            " FROM lineage g JOIN samples s ON s.id = g.origin_id"
            " LEFT JOIN current_labels l ON l.sample_id = g.origin_id WHERE g.sample_id = ?",
            (sample_id,))
        if not rows:
            return None
        r = rows[0]
        return {"origin_id": r["origin_id"], "stage": r["stage"],
                "params": json.loads(r["params"]), "created_at": r["created_at"],
                "origin_relpath": r["relpath"], "origin_label": r["label"]}

    def class_counts(self) -> dict[str, int]:
        """How many available samples carry each label (unlabeled ones are not counted)."""
        return {r[0]: r[1] for r in self.catalog.query(
            "SELECT l.label, COUNT(*) FROM current_labels l JOIN samples s ON s.id = l.sample_id"
            " WHERE s.status = 'ok' AND l.label IS NOT NULL GROUP BY l.label")}

    def labeled_as(self, labels: Sequence[str]) -> list[dict]:
        """Every sample whose current label is one of ``labels``: ``sample_id``, ``label``,
        ``event_id``."""
        labels = list(labels)
        if not labels:
            return []
        return [dict(r) for r in self.catalog.query(
            f"SELECT sample_id, label, event_id FROM current_labels WHERE label IN "
            f"({', '.join('?' * len(labels))})", tuple(labels))]

    def file_record(self, sample_id: str) -> dict | None:
        """What ingest saw of a sample's file, to check it before serving it: ``relpath``,
        ``sha256``, ``format``, ``size``, ``mtime_ns``, ``status``, ``root`` (its data root:
        an absolute folder or an fsspec URL); None for an unknown id."""
        rows = self.catalog.query(
            "SELECT s.relpath, s.sha256, s.format, s.size, s.mtime_ns, s.status, r.path AS root,"
            " r.in_workspace FROM samples s JOIN roots r ON r.id = s.root_id WHERE s.id = ?",
            (sample_id,))
        if not rows:
            return None
        record = dict(rows[0])
        if record.pop("in_workspace"):
            record["root"] = str(self.path / record["root"])
        return record

    def content_hashes(self, *, available_only: bool = True) -> dict[str, str]:
        """``{sample id: sha256}`` of every available sample (every sample, whatever its
        status, with ``available_only=False``)."""
        where = " WHERE status = 'ok'" if available_only else ""
        return {r[0]: r[1] for r in self.catalog.query(f"SELECT id, sha256 FROM samples{where}")}

    def sample_count(self) -> int:
        """How many samples the catalog holds (every status)."""
        return int(self.catalog.query("SELECT COUNT(*) FROM samples")[0][0])

    def current_labels(self) -> dict[str, str | None]:
        """The current label (None: unlabeled) of every available sample, in catalog order
        (root, then relative path): a light reader for the review queues."""
        return {r[0]: r[1] for r in self.catalog.query(
            "SELECT s.id, l.label FROM samples s LEFT JOIN current_labels l"
            " ON l.sample_id = s.id WHERE s.status = 'ok' ORDER BY s.root_id, s.relpath")}

    def classes(self, version: str | None = None) -> list[str]:
        """Sorted class names of the labeled samples."""
        labels = self.samples(version)["label"].dropna()
        return sorted(labels.unique().tolist())

    # -- labels ------------------------------------------------------------------------
    def _check_samples(self, con, sample_ids: Sequence[str]) -> None:
        unknown = [s for s in sample_ids
                   if con.execute("SELECT 1 FROM samples WHERE id=?", (s,)).fetchone() is None]
        if unknown:
            raise LabelError(f"Unknown sample id(s): {', '.join(unknown[:5])}"
                             f"{' ...' if len(unknown) > 5 else ''}. List ids with "
                             f"'smartset samples'.")

    def relabel(self, sample_ids: str | Sequence[str], label: str | None, *,
                targets: Sequence[float] | None = None, author: str | None = None,
                reason: str | None = None, origin: str = "api",
                expected: dict[str, int | None] | None = None) -> list[int]:
        """Give samples a new label (or ``targets``): appends one event per sample.

        Returns the new event ids. Nothing is overwritten: :meth:`undo` reverts an event
        and :meth:`history` shows every change. ``expected`` maps sample ids to the label
        event the change is based on (``label_event_id`` of :meth:`samples`; None: no label
        yet); if another event came since, nothing is written and :class:`ConflictError`
        carries the newer value.
        """
        if label is not None:
            from smartset._names import label_problem

            problem = label_problem(label)
            if problem:
                shown = label if len(label) <= 60 else label[:60] + "..."
                raise LabelError(f"Label {shown!r} cannot be a class name: {problem}. Use "
                                 f"printable text of at most 200 characters.")
        ids = [sample_ids] if isinstance(sample_ids, str) else list(sample_ids)
        author = author or _default_author()
        encoded = None if targets is None else json.dumps([float(t) for t in targets])
        with self.catalog.write() as con:
            self._check_samples(con, ids)
            for sid, based_on in (expected or {}).items():
                LABELS.check_expected(con, (sid,), based_on)
            stamp = now()
            return [LABELS.append(con, (sid,), {"label": label, "targets": encoded},
                                  author=author, time=stamp, reason=reason, origin=origin)
                    for sid in ids]

    def rename_label(self, old: str, new: str, *, author: str | None = None,
                     reason: str | None = None, origin: str = "api") -> list[int]:
        """Relabel every sample now labeled ``old`` as ``new`` (merges classes if ``new`` exists)."""
        ids = [r[0] for r in self.catalog.query(
            "SELECT sample_id FROM current_labels WHERE label = ?", (old,))]
        if not ids:
            raise LabelError(f"No sample is labeled {old!r}. Known labels: "
                             f"{', '.join(self.classes()) or 'none'}.")
        return self.relabel(ids, new, author=author, origin=origin,
                            reason=reason or f"rename label {old!r} to {new!r}")

    def undo(self, event_id: int, *, author: str | None = None, reason: str | None = None) -> int:
        """Revert label event ``event_id`` by appending an event with the value it replaced."""
        with self.catalog.write() as con:
            return LABELS.undo(con, event_id, author=author or _default_author(), reason=reason)

    def history(self, sample_id: str | None = None) -> pd.DataFrame:
        """Every label event (of one sample, or all), oldest first."""
        rows = LABELS.history(self.catalog, None if sample_id is None else {"sample_id": sample_id})
        return pd.DataFrame(rows,
                            columns=["id", "sample_id", "label", "targets", "author", "time",
                                     "reason", "origin", "reverts"])

    # -- marks: exclude, multi-label, duplicate-of ---------------------------------------
    def mark(self, sample_ids: str | Sequence[str], kind: str, value=None, *,
             author: str | None = None, reason: str | None = None,
             origin: str = "api", expected: dict[str, int | None] | None = None) -> list[int]:
        """Mark samples: ``exclude`` (left out of new versions), ``multi_label`` (``value``:
        the list of classes it shows), or ``duplicate_of`` (``value``: the sample id it
        repeats). Appends one event per sample; :meth:`unmark` or :meth:`undo_mark` revert.
        ``expected`` maps sample ids to the newest mark event of this ``kind`` the change is
        based on (None: none yet); if another came since, :class:`ConflictError` is raised.
        """
        ids = [sample_ids] if isinstance(sample_ids, str) else list(sample_ids)
        encoded = self._check_mark(kind, value)
        return self._append_marks(ids, kind, encoded, 1, author, reason, origin, expected)

    def unmark(self, sample_ids: str | Sequence[str], kind: str, *, author: str | None = None,
               reason: str | None = None, origin: str = "api",
               expected: dict[str, int | None] | None = None) -> list[int]:
        """Clear mark ``kind`` of samples (appends a clearing event); ``expected`` as for
        :meth:`mark`."""
        ids = [sample_ids] if isinstance(sample_ids, str) else list(sample_ids)
        self._check_mark(kind, None, clearing=True)
        return self._append_marks(ids, kind, None, 0, author, reason or f"clear {kind}", origin,
                                  expected)

    def undo_mark(self, mark_id: int, *, author: str | None = None,
                  reason: str | None = None) -> int:
        """Revert mark event ``mark_id``: restores the state of its sample and kind before it."""
        with self.catalog.write() as con:
            return MARKS.undo(con, mark_id, author=author or _default_author(),
                              reason=reason or f"undo mark event {mark_id}")

    def marks(self, kind: str | None = None) -> pd.DataFrame:
        """The marks in force: ``sample_id``, ``kind``, ``value`` (decoded), ``id`` and who set
        them, when and why."""
        sql, params = "SELECT * FROM current_marks", ()
        if kind is not None:
            self._check_mark(kind, None, clearing=True)
            sql, params = sql + " WHERE kind = ?", (kind,)
        return self._marks_frame(self.catalog.query(sql + " ORDER BY id", params))

    def mark_history(self, sample_id: str | None = None) -> pd.DataFrame:
        """Every mark event (of one sample, or all), oldest first."""
        return self._marks_frame(MARKS.history(
            self.catalog, None if sample_id is None else {"sample_id": sample_id}))

    @staticmethod
    def _marks_frame(rows) -> pd.DataFrame:
        records = [dict(r) for r in rows]
        for record in records:
            record["value"] = json.loads(record["value"]) if record["value"] else None
        return pd.DataFrame(records, columns=["id", "sample_id", "kind", "value", "active",
                                              "author", "time", "reason", "origin", "reverts"])

    def _check_mark(self, kind: str, value, *, clearing: bool = False) -> str | None:
        if kind not in MARK_KINDS:
            raise LabelError(f"Unknown mark {kind!r}; marks: {', '.join(MARK_KINDS)}.")
        if clearing or kind == "exclude":
            return None
        if kind == "multi_label":
            if (isinstance(value, str) or not isinstance(value, Sequence) or len(value) < 2
                    or not all(isinstance(v, str) and v for v in value)):
                raise LabelError(f"multi_label needs the list of (two or more) classes the "
                                 f"image shows, e.g. ['bar', 'restaurant']; got {value!r}.")
            return json.dumps(sorted(set(value)))
        if not isinstance(value, str) or not self.catalog.query(
                "SELECT 1 FROM samples WHERE id=?", (value,)):
            raise LabelError(f"duplicate_of needs the id of the sample it repeats; {value!r} "
                             f"is not a sample id.")
        return json.dumps(value)

    def _append_marks(self, ids, kind, encoded, active, author, reason, origin,
                      expected=None) -> list[int]:
        author = author or _default_author()
        with self.catalog.write() as con:
            self._check_samples(con, ids)
            for sid, based_on in (expected or {}).items():
                MARKS.check_expected(con, (sid, kind), based_on)
            if kind == "duplicate_of" and active and json.loads(encoded) in ids:
                raise LabelError("A sample cannot be marked a duplicate of itself.")
            stamp = now()
            return [MARKS.append(con, (sid, kind), {"value": encoded, "active": active},
                                 author=author, time=stamp, reason=reason, origin=origin)
                    for sid in ids]

    # -- multi-label tags (see smartset.tags) --------------------------------------------
    def tags(self, version: str | None = None, *, merge_copies: bool = True
             ) -> dict[str, frozenset[str]]:
        """Sample id -> set of tags (classes the image shows) for every sample of ``version``
        (default: the live catalog; a version's tags are frozen when it is made): a
        reviewer's multi_label mark, else tag events, else the label; see :mod:`smartset.tags`."""
        from smartset.tags import read_tags  # numpy: not for opening a workspace

        return read_tags(self, version, merge_copies=merge_copies)

    def set_tags(self, sample_ids: str | Sequence[str], tags: Sequence[str] | None, *,
                 author: str | None = None, reason: str | None = None,
                 origin: str = "api") -> list[int]:
        """Give samples several classes (``tags``; None clears them): one tag event each."""
        from smartset.tags import set_tags

        return set_tags(self, sample_ids, tags, author=author or _default_author(),
                        reason=reason, origin=origin)

    # -- versions ----------------------------------------------------------------------
    def create_version(self, name: str, *, sample_ids: Sequence[str] | None = None,
                       split: str | Sequence[str] | None = None, parent: str | None = None,
                       description: str | None = None, params: dict | None = None) -> dict:
        """Freeze a selection of samples and their current labels as version ``name``.

        The selection is ``sample_ids`` if given, else the samples of ``parent`` (or of the
        live catalog), restricted to ``split``. Versions never change; make a new one.
        """
        check_version_name(name)
        self.catalog.check_writable()
        if any(r[0] == name for r in self.catalog.query("SELECT name FROM versions")):
            raise _version_exists(name)
        frame = self.samples(parent, split=split)
        if sample_ids is not None:
            wanted = set(sample_ids)
            missing = wanted - set(frame["id"])
            if missing:
                raise VersionError(f"{len(missing)} sample id(s) are not available "
                                   f"{'in version ' + repr(parent) if parent else 'in the catalog'}: "
                                   f"{', '.join(sorted(missing)[:5])}")
            frame = frame[frame["id"].isin(wanted)]
        if parent is None:
            current = frame["label_event_id"]
        else:  # a child pins today's labels of the parent's members
            live = self.samples(None, include_unavailable=True).set_index("id")["label_event_id"]
            current = frame["id"].map(live)
        members = sorted(zip(frame["id"], frame["sha256"],
                             [None if pd.isna(e) else int(e) for e in current]))
        parent_id = self.version(parent)["id"] if parent else None
        with self.catalog.write() as con:
            _insert_version(con, name, members, parent_id=parent_id, description=description,
                            params=params)
        return self.version(name)

    def add_derived_version(self, name: str, folder: str | Path, relpaths: Sequence[str], *,
                            origin_ids: Sequence[str], params: Sequence[dict], stage: str,
                            sample_ids: Sequence[str], description: str | None = None,
                            version_params: dict | None = None, engine=None,
                            before_version=None, parent: str | None = None
                            ) -> tuple[list[str], dict]:
        """Register files a stage wrote under ``folder`` as derived samples (see
        :meth:`add_derived_samples`) and create version ``name`` of ``sample_ids`` (samples
        of the live catalog) plus the new ones, in one catalog transaction: a failure or a
        kill at any point leaves no sample that belongs to no version.

        ``before_version(con, new_ids)``: more writes in the same transaction before the
        version is made (annotations of the new samples); a dict it returns joins the
        version's params. Returns ``(new sample ids, the version's info)``.
        """
        from smartset.ingest import add_derived

        check_version_name(name)
        self.catalog.check_writable()
        if any(r[0] == name for r in self.catalog.query("SELECT name FROM versions")):
            raise _version_exists(name)
        parent_id = self.version(parent)["id"] if parent else None  # shown by 'version list'
        wanted = set(sample_ids)
        available = set(self.samples(None)["id"])
        missing = wanted - available
        if missing:
            raise VersionError(f"{len(missing)} sample id(s) are not available in the catalog: "
                               f"{', '.join(sorted(missing)[:5])}")

        def then(con, new_ids):
            extra = before_version(con, new_ids) if before_version is not None else None
            members = _members_in(con, list(wanted) + list(new_ids))
            _insert_version(con, name, members, parent_id=parent_id, description=description,
                            params={**(version_params or {}), **(extra or {})})

        new_ids = add_derived(self.catalog, self.path, folder, list(relpaths),
                              origin_ids=list(origin_ids), params=list(params), stage=stage,
                              engine=engine, then=then)
        return new_ids, self.version(name)

    def version(self, name: str) -> dict:
        rows = self.catalog.query(
            "SELECT v.*, p.name AS parent FROM versions v LEFT JOIN versions p ON p.id = v.parent_id"
            " WHERE v.name = ?", (name,))
        if not rows:
            known = [r[0] for r in self.catalog.query("SELECT name FROM versions ORDER BY id")]
            raise VersionError(f"No version {name!r}. Versions: {', '.join(known) or 'none yet'} "
                               f"(create one with 'smartset version create').")
        info = dict(rows[0])
        info["params"] = json.loads(info["params"] or "{}")
        return info

    def versions(self) -> pd.DataFrame:
        rows = self.catalog.query(
            "SELECT v.id, v.name, p.name AS parent, v.created_at, v.n_samples, v.description,"
            " v.fingerprint FROM versions v LEFT JOIN versions p ON p.id = v.parent_id ORDER BY v.id")
        return pd.DataFrame([dict(r) for r in rows],
                            columns=["id", "name", "parent", "created_at", "n_samples",
                                     "description", "fingerprint"])

    # -- computed columns and artifacts --------------------------------------------------
    def write_column(self, name: str, sample_ids: Sequence[str], values: Sequence, *,
                     stage: str, fingerprint: str | None = None,
                     description: str | None = None) -> None:
        """Store a per-sample value (a number or text) computed by ``stage``."""
        if len(sample_ids) != len(values):
            raise ValueError(f"column {name!r}: {len(sample_ids)} sample ids but "
                             f"{len(values)} values")
        rows = [(name, sid, v.item() if hasattr(v, "item") else v)
                for sid, v in zip(sample_ids, values)]
        with self.catalog.write() as con:
            con.execute("INSERT OR REPLACE INTO columns(name, stage, fingerprint, description,"
                        " updated_at) VALUES (?, ?, ?, ?, ?)",
                        (name, stage, fingerprint, description, now()))
            con.executemany("INSERT OR REPLACE INTO column_values(column_name, sample_id, value)"
                            " VALUES (?, ?, ?)", rows)

    def read_column(self, name: str) -> dict[str, object]:
        if not self.catalog.query("SELECT 1 FROM columns WHERE name=?", (name,)):
            known = [r[0] for r in self.catalog.query("SELECT name FROM columns ORDER BY name")]
            raise KeyError(f"No computed column {name!r}; columns: {', '.join(known) or 'none'}")
        return {r[0]: r[1] for r in self.catalog.query(
            "SELECT sample_id, value FROM column_values WHERE column_name=?", (name,))}

    # -- predictions ----------------------------------------------------------------------
    def predictions(self, *, run: int | None = None, kind: str = "oof"):
        """Stored predictions (default: the newest out-of-fold ones); see
        :class:`smartset.predictions.Predictions`."""
        from smartset.predictions import read_predictions

        return read_predictions(self.catalog, run=run, kind=kind)

    # -- runs, stats, data -------------------------------------------------------------
    def runs(self) -> pd.DataFrame:
        """Every run; one whose process is gone without finishing reads ``interrupted``."""
        gone = set(self.catalog.mark_interrupted_runs())
        rows = [dict(r) for r in self.catalog.query("SELECT * FROM runs ORDER BY id")]
        for row in rows:
            if row["id"] in gone:
                row["status"] = "interrupted"
            for key in ("config", "software", "metrics"):
                row[key] = json.loads(row[key]) if row[key] else None
        return pd.DataFrame(rows, columns=["id", "command", "config", "seed", "software",
                                           "started_at", "finished_at", "status", "metrics"])

    def stats(self, version: str | None = None) -> dict:
        """Counts per class and split, imbalance, sizes, formats; see :mod:`smartset.stats`."""
        from smartset.stats import compute_stats

        return compute_stats(self.samples(version), self.issues())

    def dataset(self, version: str | None = None, *, split: str | Sequence[str] | None = None,
                size: int | Sequence[int] | None = None, transform=None, **options):
        """A ``torch.utils.data.Dataset`` of ``(image, target)`` over ``version``.

        ``size`` (``int`` or ``(H, W)``) resizes every image on access, so a plain
        ``DataLoader(ws.dataset(size=128), batch_size=32)`` batches photos of mixed sizes;
        ``transform`` is any callable applied to the ``uint8`` ``C x H x W`` tensor after
        that (a function, a smartset augmentation policy). Other options (``mode``,
        ``fit``, ``classes``): see :class:`smartset.data.ImageDataset`.
        """
        from smartset.data import ImageDataset

        return ImageDataset.from_workspace(self, version, split=split, size=size,
                                           transform=transform, **options)


def check_version_name(name) -> str:
    """A version name becomes a folder name (``data/augment-NAME``): checked by
    :func:`smartset._names.check_name` before anything is written or deleted."""
    return check_name(name, "version name", example="v2-augmented", error=InvalidVersionName)


class InvalidVersionName(VersionError, InvalidNameError):
    """A version name that cannot name a folder (see :func:`smartset._names.check_name`)."""


def _version_exists(name: str) -> VersionError:
    return VersionError(f"Version {name!r} exists already; versions are immutable, so choose "
                        f"a new name.")


def _members_in(con, sample_ids) -> list[tuple]:
    """``(id, sha256, current label event)`` of ``sample_ids``, sorted, read inside the
    caller's transaction (so samples it inserted count)."""
    ids = sorted(set(sample_ids))
    members = []
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        members += [tuple(r) for r in con.execute(
            f"SELECT s.id, s.sha256, (SELECT MAX(e.id) FROM label_events e WHERE e.sample_id ="
            f" s.id) FROM samples s WHERE s.id IN ({', '.join('?' * len(chunk))})", chunk)]
    if len(members) != len(ids):
        found = {m[0] for m in members}
        lost = [i for i in ids if i not in found]
        raise VersionError(f"{len(lost)} sample id(s) are not in the catalog: "
                           f"{', '.join(lost[:5])}")
    return sorted(members)


def _insert_version(con, name: str, members, *, parent_id, description, params) -> int:
    """Insert version ``name`` of ``members`` (sorted ``(id, sha256, event)``) in the
    caller's write transaction; a name taken meanwhile (another process) is refused, not an
    IntegrityError."""
    if con.execute("SELECT 1 FROM versions WHERE name = ?", (name,)).fetchone():
        raise _version_exists(name)
    digest = hashlib.sha256()
    for sid, sha, event in members:
        digest.update(f"{sid}:{sha}:{event}\n".encode())
    tags_upto = newest_tag_ids(con)  # the version's tags stay as they are now (smartset.tags)
    if any(tags_upto):  # none yet: a version without the key reads (0, 0), the same
        digest.update(f"tags:{tags_upto[0]}:{tags_upto[1]}\n".encode())
        params = {**(params or {}), "tags_upto": list(tags_upto)}
    version_id = con.execute(
        "INSERT INTO versions(name, parent_id, created_at, description, params, n_samples,"
        " fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (name, parent_id, now(), description, json.dumps(params or {}, default=str),
         len(members), digest.hexdigest())).lastrowid
    con.executemany("INSERT INTO version_members(version_id, sample_id, label_event_id)"
                    " VALUES (?, ?, ?)", [(version_id, s, e) for s, _, e in members])
    return version_id


def _default_author() -> str:
    return os.environ.get("SMARTSET_AUTHOR") or os.environ.get("USER") or "unknown"


def init(path: str | Path) -> Workspace:
    """Create a workspace at ``path`` (a new or empty folder, or an existing workspace)."""
    path = Path(path).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise WorkspaceError(f"'{path}' exists and is not a folder; choose another path.")
    if not (path / CATALOG_FILE).exists() and path.is_dir() and any(path.iterdir()):
        raise WorkspaceError(f"'{path}' is not empty and not a workspace; choose a new or "
                             f"empty folder so nothing of yours is mixed with smartset's files.")
    path.mkdir(parents=True, exist_ok=True)
    for name in _SUBDIRS:
        (path / name).mkdir(exist_ok=True)
    if not (path / CATALOG_FILE).exists():
        Catalog.create(path / CATALOG_FILE).close()
    return Workspace(path)


def open_workspace(path: str | Path | None = None) -> Workspace:
    """Open the workspace at ``path``, ``$SMARTSET_WORKSPACE``, or the current folder."""
    return Workspace(find_workspace(path))


def find_workspace(path: str | Path | None = None) -> Path:
    if path is not None:
        return Path(path)
    if os.environ.get("SMARTSET_WORKSPACE"):
        return Path(os.environ["SMARTSET_WORKSPACE"])
    if (Path.cwd() / CATALOG_FILE).is_file():
        return Path.cwd()
    raise WorkspaceError("No workspace given: pass one, set SMARTSET_WORKSPACE, or run from "
                         "inside a workspace folder (create one with 'smartset init DIR').")
