"""Annotations in the catalog: import, the current (or a version's) annotations, and every
change (relabel, delete, add, undo) as an appended, audited event.

Images are ingested as ordinary samples by the ingest machinery (a listing of the files the
annotations name, kept under ``WORKSPACE/data/annotations/``), so re-importing reads only
changed files; annotations attach to the sample ids. An annotation's id is stable (a hash of
its source and its key there): importing again adds what is new and appends an event for
what changed. A version's annotations are those current at its annotation pin: the
``annotation_event_id`` in its params (set by :func:`create_version`), else the newest
event made before the version.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from smartset._atomic import write_text
from smartset.catalog import now
from smartset.detection import _rle
from smartset.detection._model import Annotation, AnnotationSet
from smartset.detection.formats_in import read_annotations
from smartset.detection.validation import _polygon_area, check_paths, validate
from smartset.errors import LabelError
from smartset.events import ANNOTATIONS

__all__ = ["ImportReport", "import_annotations", "import_set", "annotations", "categories",
           "relabel_box", "delete_box", "add_box", "undo_annotation", "annotation_history",
           "create_version", "annotation_pin", "add_annotations"]

COLUMNS = ["id", "sample_id", "kind", "category", "x", "y", "w", "h", "segmentation",
           "attributes", "event_id", "source", "source_key"]


@dataclass
class ImportReport:
    """What :func:`import_annotations` found and did (``to_dict()`` for ``--json``)."""

    source: str
    format: str
    root: str
    run_id: int
    images: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    categories: dict[str, int] = field(default_factory=dict)
    issues: dict[str, int] = field(default_factory=dict)
    issue_examples: list[dict] = field(default_factory=list)
    ingest: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _default_author() -> str:
    return os.environ.get("SMARTSET_AUTHOR") or os.environ.get("USER") or "unknown"


def _annotation_id(source: str, key: str) -> str:
    return hashlib.blake2b(f"{source}\0{key}".encode(), digest_size=8).hexdigest()


def import_annotations(ws, path: str | Path, *, format: str | None = None,
                       root: str | Path | None = None, split: str | None = None,
                       engine=None, author: str = "import",
                       show_progress: bool | None = None) -> ImportReport:
    """Import the images and annotations of ``path`` into workspace ``ws``.

    ``format``: ``coco``, ``yolo``, ``voc``, ``masks`` or ``pairs`` (detected if None; see
    :mod:`smartset.detection.formats_in`); ``root``: the folder image paths are relative
    to; ``split``: the split of images whose source does not say (default ``train``).
    The images are ingested as samples (files that cannot be read become ingest issues);
    every annotation that cannot be taken as it is becomes an issue with a named reason
    (``ws.issues(source=report.source)``), and the valid rest is imported.
    """
    started = time.perf_counter()
    aset = read_annotations(path, format=format, root=root)
    return import_set(ws, aset, split=split, engine=engine, author=author,
                      show_progress=show_progress, started=started)


def import_set(ws, aset: AnnotationSet, *, split: str | None = None, engine=None,
               author: str = "import", show_progress: bool | None = None,
               started: float | None = None) -> ImportReport:
    """Import an :class:`AnnotationSet` already read (see :func:`import_annotations`)."""
    started = started or time.perf_counter()
    timings = {"read": time.perf_counter() - started}
    source = f"annotations:{aset.source}"
    run_id = ws.catalog.start_run("annotations import", {"source": aset.source,
                                                          "format": aset.format,
                                                          "root": aset.root})
    report = ImportReport(source, aset.format, aset.root, run_id)
    with ws.catalog.failing_run(run_id):
        check_paths(aset)
        # 1. the images, through ingest (incremental, issues recorded by reason)
        t0 = time.perf_counter()
        listing = ws.path / "data" / "annotations" / (
            hashlib.blake2b(aset.source.encode(), digest_size=6).hexdigest() + ".csv")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "split"])
        for image in aset.images:
            writer.writerow([image.file, image.split or split or "train"])
        write_text(listing, buffer.getvalue())
        ingest = ws.ingest(listing, layout="csv", root=aset.root, path_column="path",
                           split_column="split", engine=engine, show_progress=show_progress)
        report.ingest = {k: v for k, v in ingest.to_dict().items() if k != "issue_examples"}
        timings["ingest"] = time.perf_counter() - t0
        # 2. sample ids and real sizes
        t0 = time.perf_counter()
        root_key = _root_key(ws, Path(aset.root))
        rows = ws.catalog.query(
            "SELECT s.id, s.relpath, s.width, s.height, s.status FROM samples s JOIN roots r"
            " ON r.id = s.root_id WHERE r.path = ?", (root_key,))
        samples = {r["relpath"]: r for r in rows if r["status"] == "ok"}
        unreadable = {i["relpath"]: i["reason"] for i in ws.catalog.query(
            "SELECT relpath, reason FROM ingest_issues WHERE source = ?", (ingest.source,))}
        images = []
        for image in aset.images:
            if image.file in samples:
                images.append(image)
            else:
                aset.issue("image_missing", f"image '{image.file}'",
                           f"the image could not be ingested "
                           f"({unreadable.get(image.file, 'not readable')}); its annotations "
                           f"are dropped. See 'smartset issues'.")
        aset.images = images
        known = {im.file for im in images}
        aset.annotations = [a for a in aset.annotations if a.file in known]
        validate(aset, {f: (r["width"], r["height"]) for f, r in samples.items()})
        timings["validate"] = time.perf_counter() - t0
        # 3. categories, annotations, image metadata, issues: one transaction
        t0 = time.perf_counter()
        sample_of = {f: samples[f]["id"] for f in known}
        with ws.catalog.write() as con:
            _merge_categories(con, aset)
            counts = _write_annotations(con, aset.annotations, sample_of, source, author,
                                        origin="import", reason=f"import run {run_id}")
            con.executemany(
                "INSERT OR REPLACE INTO annotation_images(sample_id, source, image_key, meta)"
                " VALUES (?, ?, ?, ?)",
                [(sample_of[im.file], source, im.key, json.dumps(im.meta) if im.meta else None)
                 for im in aset.images])
            con.execute("DELETE FROM ingest_issues WHERE source = ?", (source,))
            stamp = now()
            con.executemany(
                "INSERT OR REPLACE INTO ingest_issues(source, root_id, relpath, reason, detail,"
                " kind, run_id, time) VALUES (?, NULL, ?, ?, ?, 'plan', ?, ?)",
                [(source, i.where, i.reason, i.detail, run_id, stamp) for i in aset.issues])
        timings["write"] = time.perf_counter() - t0
    report.images = len(aset.images)
    report.new, report.updated, report.unchanged = counts
    report.categories = dict(Counter(a.category for a in aset.annotations).most_common())
    report.issues = dict(Counter(i.reason for i in aset.issues).most_common())
    report.issue_examples = [i.to_dict() for i in aset.issues[:20]]
    timings["total"] = time.perf_counter() - started
    report.seconds = {k: round(v, 4) for k, v in timings.items()}
    ws.catalog.finish_run(run_id, {k: v for k, v in report.to_dict().items()
                                   if k != "issue_examples"})
    return report


def _root_key(ws, root: Path) -> str:
    root = root.resolve()
    try:
        return root.relative_to(ws.path).as_posix()
    except ValueError:
        return str(root)


def _merge_categories(con, aset: AnnotationSet) -> None:
    existing = {r[0]: r[1] for r in con.execute("SELECT name, number FROM annotation_categories")}
    taken = set(existing.values())
    names = dict(sorted(aset.categories.items(), key=lambda kv: (not isinstance(kv[0], int), str(kv[0]))))
    wanted = list(names.items()) + [(None, a.category) for a in aset.annotations
                                    if a.category not in existing]
    stamp = now()
    for number, name in wanted:
        if name in existing:
            continue
        if not isinstance(number, int) or number in taken:
            number = max(taken, default=0) + 1
        existing[name] = number
        taken.add(number)
        con.execute("INSERT INTO annotation_categories(name, number, supercategory, added_at)"
                    " VALUES (?, ?, ?, ?)", (name, number, aset.supercategories.get(name), stamp))


def _state(ann: Annotation) -> tuple:
    x, y, w, h = (round(float(v), 4) for v in ann.bbox)
    return (ann.category, x, y, w, h,
            None if ann.segmentation is None else json.dumps(ann.segmentation),
            json.dumps(ann.attributes, sort_keys=True) if ann.attributes else None)


def _write_annotations(con, anns: Sequence[Annotation], sample_of: dict, source: str,
                       author: str, *, origin: str, reason: str) -> tuple[int, int, int]:
    """Insert annotations (or events for changed ones) in the caller's transaction."""
    stamp = now()
    ids = [_annotation_id(source, a.key if a.key is not None else f"{a.file}#{i}")
           for i, a in enumerate(anns)]
    current = {}
    if ids:
        for row in con.execute(
                "SELECT id, category, x, y, w, h, segmentation, attributes FROM "
                "current_annotations WHERE source = ?", (source,)):
            current[row[0]] = tuple(row[1:])
        present = {r[0] for r in con.execute("SELECT id FROM annotations WHERE source = ?",
                                             (source,))}
    else:
        present = set()
    new_rows, events, updated, unchanged = [], [], 0, 0
    for aid, ann in zip(ids, anns):
        state = _state(ann)
        if aid in present:
            if current.get(aid) == state:
                unchanged += 1
                continue
            updated += 1
        else:
            present.add(aid)
            new_rows.append((aid, sample_of[ann.file], ann.kind, source, ann.key, stamp))
        events.append((aid, *state, author, stamp, reason, origin))
    con.executemany("INSERT INTO annotations(id, sample_id, kind, source, source_key, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)", new_rows)
    con.executemany(
        "INSERT INTO annotation_events(annotation_id, category, x, y, w, h, segmentation,"
        " attributes, author, time, reason, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        events)
    return len(new_rows), updated, unchanged


def add_annotations(ws, anns: Sequence[Annotation], sample_ids: Sequence[str], *,
                    source: str, origin: str, author: str = "smartset",
                    reason: str | None = None) -> int:
    """Attach annotations to samples (``anns[i].file`` is ignored; ``sample_ids[i]`` used)."""
    keyed = []
    for i, (ann, sid) in enumerate(zip(anns, sample_ids)):
        keyed.append(Annotation(sid, ann.category, ann.bbox, ann.segmentation,
                                ann.attributes, ann.key if ann.key is not None else f"{sid}#{i}"))
    with ws.catalog.write() as con:
        aset = AnnotationSet(origin, "", source, categories={})
        aset.annotations = keyed
        _merge_categories(con, aset)
        new, _, _ = _write_annotations(con, keyed, {s: s for s in sample_ids}, source, author,
                                       origin=origin, reason=reason)
    return new


# -- reading ---------------------------------------------------------------------------------
def annotation_pin(ws, version: str) -> int:
    """The newest annotation event a version sees (see the module docstring)."""
    info = ws.version(version)
    pinned = (info.get("params") or {}).get("annotation_event_id")
    if pinned is not None:
        return int(pinned)
    row = ws.catalog.query("SELECT MAX(id) FROM annotation_events WHERE time <= ?",
                           (info["created_at"],))
    return int(row[0][0] or 0)


def create_version(ws, name: str, **options) -> dict:
    """``ws.create_version`` that also pins the annotations current now (recorded as
    ``annotation_event_id`` in the version's params)."""
    params = dict(options.pop("params", None) or {})
    row = ws.catalog.query("SELECT MAX(id) FROM annotation_events")
    params["annotation_event_id"] = int(row[0][0] or 0)
    return ws.create_version(name, params=params, **options)


def annotations(ws, version: str | None = None, *, sample_ids: Sequence[str] | None = None,
                decode: bool = True) -> pd.DataFrame:
    """The annotations of ``version`` (default: the live catalog's available samples), one
    row per object: ``id``, ``sample_id``, ``kind`` (box, polygon, mask), ``category``, the
    box ``x``, ``y``, ``w``, ``h`` in pixels, ``area`` (mask or polygon area if any, else
    ``w * h``), ``segmentation`` (polygons, an RLE dict, or None), ``attributes`` (dict),
    ``event_id``, ``source``, ``source_key``, and the sample's ``path``, ``relpath``,
    ``width``, ``height``, ``split``. ``decode=False`` keeps segmentation and attributes as
    JSON text (faster)."""
    frame = ws.samples(version)
    if version is None:
        sql = f"SELECT {', '.join(COLUMNS)} FROM current_annotations"
        params: tuple = ()
    else:
        sql = ("SELECT a.id, a.sample_id, a.kind, e.category, e.x, e.y, e.w, e.h,"
               " e.segmentation, e.attributes, e.id AS event_id, a.source, a.source_key"
               " FROM annotations a JOIN (SELECT annotation_id, MAX(id) AS id FROM"
               " annotation_events WHERE id <= ? GROUP BY annotation_id) last"
               " ON last.annotation_id = a.id JOIN annotation_events e ON e.id = last.id"
               " WHERE e.deleted = 0")
        params = (annotation_pin(ws, version),)
    out = pd.DataFrame([tuple(r) for r in ws.catalog.query(sql, params)], columns=COLUMNS)
    wanted = set(frame["id"]) if sample_ids is None else set(frame["id"]) & set(sample_ids)
    out = out[out["sample_id"].isin(wanted)]
    info = frame.set_index("id")[["path", "relpath", "width", "height", "split"]]
    out = out.join(info, on="sample_id")
    out = out.sort_values(["relpath", "source_key", "id"], kind="stable").reset_index(drop=True)
    segs = [json.loads(s) if isinstance(s, str) else None for s in out["segmentation"]]
    areas = (out["w"] * out["h"]).astype(float).tolist()
    for i, seg in enumerate(segs):
        if isinstance(seg, dict):
            areas[i] = float(_rle.rle_area(seg))
        elif seg:
            areas[i] = float(sum(_polygon_area(p) for p in seg))
    out["area"] = areas
    if decode:
        out["segmentation"] = pd.Series(segs, index=out.index, dtype=object)
        out["attributes"] = pd.Series([json.loads(a) if isinstance(a, str) else {}
                                       for a in out["attributes"]], index=out.index, dtype=object)
    return out


def categories(ws) -> dict[int, str]:
    """``{number: name}`` of every annotation category, by number (COCO id, YOLO index + 1
    order, mask value)."""
    return {r[0]: r[1] for r in ws.catalog.query(
        "SELECT number, name FROM annotation_categories ORDER BY number")}


# -- typed readers for other stages (the review app) ---------------------------------------------
def box_summary(ws, sample_ids: Sequence[str]) -> dict[str, dict]:
    """Per sample with current (not deleted) annotations: ``{"count", "categories": {name:
    n}}``, most frequent category first."""
    out: dict[str, dict] = {}
    ids = list(sample_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for r in ws.catalog.query(
                f"SELECT a.sample_id, e.category, COUNT(*) AS n FROM annotations a"
                f" JOIN annotation_events e ON e.id = (SELECT MAX(id) FROM annotation_events"
                f" WHERE annotation_id = a.id) WHERE a.sample_id IN"
                f" ({', '.join('?' * len(chunk))}) AND e.deleted = 0"
                f" GROUP BY a.sample_id, e.category ORDER BY a.sample_id, n DESC, e.category",
                tuple(chunk)):
            boxes = out.setdefault(r["sample_id"], {"count": 0, "categories": {}})
            boxes["count"] += r["n"]
            boxes["categories"][r["category"]] = r["n"]
    return out


def current_boxes(ws, sample_id: str, *, limit: int | None = None) -> list[dict]:
    """The current (not deleted) annotations of ``sample_id``, largest first: ``id``,
    ``kind``, ``category``, ``x``, ``y``, ``w``, ``h``, ``segmentation`` (decoded) and
    ``event_id`` (its version, for conflict checks)."""
    rows = ws.catalog.query(
        "SELECT a.id, a.kind, e.category, e.x, e.y, e.w, e.h, e.segmentation, e.id AS event_id"
        " FROM annotations a JOIN annotation_events e ON e.id = (SELECT MAX(id) FROM"
        " annotation_events WHERE annotation_id = a.id) WHERE a.sample_id = ? AND e.deleted = 0"
        " ORDER BY e.w * e.h DESC, a.id" + ("" if limit is None else f" LIMIT {int(limit)}"),
        (sample_id,))
    out = []
    for r in rows:
        row = dict(r)
        row["segmentation"] = json.loads(r["segmentation"]) if r["segmentation"] else None
        out.append(row)
    return out


def annotation_state(ws, annotation_id: str) -> dict | None:
    """The newest event of an annotation (its current state, ``deleted`` included), or None."""
    with ws.catalog.read() as con:
        return ANNOTATIONS.newest(con, (annotation_id,))


def image_meta(ws) -> dict[str, dict]:
    """``{sample id: the source's other image fields}`` (COCO image attributes such as a
    condition) of the imported images that have any."""
    return {r[0]: json.loads(r[1]) for r in ws.catalog.query(
        "SELECT sample_id, meta FROM annotation_images WHERE meta IS NOT NULL")}


def supercategories(ws) -> dict[str, str | None]:
    """``{category name: its COCO supercategory}``."""
    return {r[0]: r[1] for r in ws.catalog.query(
        "SELECT name, supercategory FROM annotation_categories")}


def category_names(ws) -> list[str]:
    """The annotation categories in their number order."""
    return list(categories(ws).values())


# -- changes as events -------------------------------------------------------------------------
def _current(con, annotation_id: str) -> dict:
    row = ANNOTATIONS.newest(con, (annotation_id,))
    if row is None:
        raise LabelError(f"No annotation {annotation_id!r}. List them with "
                         f"'smartset annotations list'.")
    return row


def _append(ws, annotation_ids, change, *, author, reason, origin,
            expected: dict[str, int] | None = None) -> list[int]:
    """One event per annotation (the log's contract: :mod:`smartset.events`); ``change``
    maps the annotation's newest event to its new state."""
    ids = [annotation_ids] if isinstance(annotation_ids, str) else list(annotation_ids)
    author = author or _default_author()
    out = []
    with ws.catalog.write() as con:
        stamp = now()
        for aid in ids:
            _current(con, aid)  # a clear error for an unknown annotation
            if expected and aid in expected:
                ANNOTATIONS.check_expected(con, (aid,), expected[aid])
            state = change(con, _current(con, aid))
            out.append(ANNOTATIONS.append(con, (aid,), state, author=author, time=stamp,
                                          reason=reason, origin=origin))
    return out


def relabel_box(ws, annotation_ids: str | Sequence[str], category: str, *,
                author: str | None = None, reason: str | None = None,
                origin: str = "api", expected: dict[str, int] | None = None) -> list[int]:
    """Give annotations a new category: appends one event each (returns their ids).
    ``expected`` maps annotation ids to the event the change is based on; if a newer one
    exists, nothing is written and :class:`~smartset.errors.ConflictError` is raised."""
    if not isinstance(category, str) or not category.strip():
        raise LabelError(f"A category must be a non-empty name, got {category!r}.")

    def change(con, row):
        if row["deleted"]:
            raise LabelError(f"Annotation {row['annotation_id']} is deleted; undo the "
                             f"deletion (event {row['id']}) before relabelling it.")
        aset = AnnotationSet("api", "", "api")
        aset.annotations = [Annotation("", category, (0, 0, 1, 1))]
        _merge_categories(con, aset)
        return {**row, "category": category}

    return _append(ws, annotation_ids, change, author=author, origin=origin,
                   reason=reason or f"relabel as {category!r}", expected=expected)


def delete_box(ws, annotation_ids: str | Sequence[str], *, author: str | None = None,
               reason: str | None = None, origin: str = "api",
               expected: dict[str, int] | None = None) -> list[int]:
    """Delete annotations: appends a deleting event each (undo with :func:`undo_annotation`;
    ``expected`` as for :func:`relabel_box`)."""
    def change(con, row):
        if row["deleted"]:
            raise LabelError(f"Annotation {row['annotation_id']} is deleted already.")
        return {**row, "deleted": 1}

    return _append(ws, annotation_ids, change, author=author, origin=origin,
                   reason=reason or "delete", expected=expected)


def undo_annotation(ws, event_id: int, *, author: str | None = None,
                    reason: str | None = None) -> int:
    """Revert annotation event ``event_id`` (the newest of its annotation): appends an event
    restoring the state before it (undoing the creation deletes the annotation)."""
    with ws.catalog.write() as con:
        return ANNOTATIONS.undo(con, event_id, author=author or _default_author(),
                                reason=reason)


def add_box(ws, sample_id: str, category: str, bbox: Sequence[float], *,
            segmentation=None, attributes: dict | None = None, author: str | None = None,
            reason: str | None = None, origin: str = "api") -> str:
    """Add an annotation drawn by a person (or a tool); returns its id."""
    if not ws.catalog.query("SELECT 1 FROM samples WHERE id = ?", (sample_id,)):
        raise LabelError(f"Unknown sample id {sample_id!r}. List ids with 'smartset samples'.")
    x, y, w, h = (float(v) for v in bbox)
    if not (w > 0 and h > 0):
        raise LabelError(f"A box needs a positive width and height, got {list(bbox)}.")
    key = f"{sample_id}#{now()}"
    ann = Annotation(sample_id, category, (x, y, w, h), segmentation, attributes or {}, key)
    add_annotations(ws, [ann], [sample_id], source=origin, origin=origin,
                    author=author or _default_author(), reason=reason or "added")
    return _annotation_id(origin, key)


def annotation_history(ws, annotation_id: str | None = None, *,
                       sample_id: str | None = None) -> pd.DataFrame:
    """Every annotation event (of one annotation, one sample, or all), oldest first, with the
    category before it (``previous_category``)."""
    sql = ("SELECT e.id, e.annotation_id, a.sample_id, e.category, e.x, e.y, e.w, e.h,"
           " e.deleted, e.author, e.time, e.reason, e.origin, e.reverts,"
           " (SELECT p.category FROM annotation_events p WHERE p.annotation_id = e.annotation_id"
           "  AND p.id < e.id ORDER BY p.id DESC LIMIT 1) AS previous_category"
           " FROM annotation_events e JOIN annotations a ON a.id = e.annotation_id")
    where, params = [], []
    if annotation_id is not None:
        where.append("e.annotation_id = ?")
        params.append(annotation_id)
    if sample_id is not None:
        where.append("a.sample_id = ?")
        params.append(sample_id)
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = ws.catalog.query(sql + " ORDER BY e.id", tuple(params))
    return pd.DataFrame([dict(r) for r in rows],
                        columns=["id", "annotation_id", "sample_id", "category", "x", "y", "w",
                                 "h", "deleted", "author", "time", "reason", "origin",
                                 "reverts", "previous_category"])
