"""Append-only event logs: how every human or tool change to the data is stored.

Four things change by events: a sample's label (``label_events``), its marks (exclude,
multi-label, duplicate-of: ``sample_marks``), its boxes and masks (``annotation_events``)
and its multi-label tags (``tag_events``). They share one contract, kept here once:

- **append** one event per changed thing, optionally *based on* the event the change was
  read from (``expected``): when another event came since, nothing is written and
  :class:`~smartset.errors.ConflictError` carries the newer state (optimistic concurrency,
  as the review app needs when two people work on the same workspace);
- **undo** appends an event restoring the state before a given event, only if it is still
  the newest of its thing (otherwise the conflict names the newer one);
- **history** reads every event, oldest first; **newest** the one in force;
- **reviewed** answers "who reviewed what": samples with an event of origin ``review`` that
  no undo reverted (read by the review queues and by the cleaning rounds, which is why it
  lives below both).

The logs' schemas are the catalog's (``catalog.py``); this module is the one place their
SQL is written, beside ``workspace.py`` (labels and marks), ``detection/store.py``
(annotations) and ``tags.py`` (tags), which call it. Messages are specific to each log (a
label, a mark, an annotation, a tag), given as small functions in the log's definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from smartset.catalog import now
from smartset.errors import ConflictError, LabelError

__all__ = ["EventLog", "LABELS", "MARKS", "ANNOTATIONS", "TAGS", "LOGS", "reviewed_samples"]

REVIEW_ORIGIN = "review"
_CHUNK = 500  # sample ids per IN (...) query: far below SQLite's variable limit


@dataclass(frozen=True)
class EventLog:
    """One append-only event table.

    ``keys``: the columns naming the thing an event changes (a sample; a sample and a mark
    kind; an annotation). ``state``: the columns an event sets. ``sample``: the SQL of the
    event's sample id over the table aliased ``e`` (a join for annotations). ``first``:
    the state before any event, from the newest row, or None when the first event cannot
    be undone (a sample's first label is where it came from). The message functions build
    the log's own errors.
    """

    table: str
    keys: tuple[str, ...]
    state: tuple[str, ...]
    noun: str
    sample: str = "e.sample_id"
    join: str = ""
    first: Callable[[dict], dict | None] | None = None
    not_found: Callable[[int], Exception] | None = None
    not_newest: Callable[[dict, dict, int], Exception] | None = None
    nothing_before: Callable[[dict], Exception] | None = None
    changed: Callable[[tuple, dict | None, int | None], Exception] | None = None

    # -- reading ---------------------------------------------------------------------------
    def newest(self, con, key: Sequence) -> dict | None:
        """The newest event of the thing ``key`` names (values of :attr:`keys`), or None."""
        where = " AND ".join(f"e.{k} = ?" for k in self.keys)
        row = con.execute(f"SELECT e.*, {self.sample} AS _sample FROM {self.table} e {self.join}"
                          f" WHERE {where} ORDER BY e.id DESC LIMIT 1", tuple(key)).fetchone()
        return None if row is None else dict(row)

    def event(self, con, event_id: int) -> dict:
        """Event ``event_id``; the log's not-found error if there is none."""
        row = con.execute(f"SELECT e.*, {self.sample} AS _sample FROM {self.table} e {self.join}"
                          f" WHERE e.id = ?", (int(event_id),)).fetchone()
        if row is None:
            raise (self.not_found(event_id) if self.not_found else
                   LabelError(f"No {self.noun} event {event_id}."))
        return dict(row)

    def history(self, catalog, where: Mapping[str, object] | None = None, *,
                newest_first: bool = False, limit: int | None = None) -> list[dict]:
        """Every event (of the things ``where`` selects: column → value; ``sample_id``
        works for every log), oldest first (or ``newest_first``), at most ``limit``."""
        clauses, params = [], []
        for column, value in (where or {}).items():
            clauses.append(f"{self.sample} = ?" if column == "sample_id" else f"e.{column} = ?")
            params.append(value)
        sql = f"SELECT e.*, {self.sample} AS _sample FROM {self.table} e {self.join}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY e.id" + (" DESC" if newest_first else "")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = [dict(r) for r in catalog.query(sql, tuple(params))]
        for row in rows:
            row.setdefault("sample_id", row["_sample"])
            del row["_sample"]
        return rows

    # -- writing (inside a catalog write transaction) ----------------------------------------
    def check_expected(self, con, key: Sequence, based_on: int | None) -> dict | None:
        """Refuse (the log's conflict error) if the newest event of ``key`` is not
        ``based_on`` (None: no event yet). Returns the newest event."""
        row = self.newest(con, key)
        current = None if row is None else row["id"]
        if current != based_on:
            raise (self.changed(tuple(key), row, based_on) if self.changed else
                   ConflictError(f"{self.noun.capitalize()} {tuple(key)} was changed since it "
                                 f"was read (now event {current}, not {based_on}).",
                                 expected=based_on))
        return row

    def append(self, con, key: Sequence, state: Mapping[str, object], *, author: str,
               origin: str, reason: str | None = None, time: str | None = None,
               reverts: int | None = None) -> int:
        """Append one event; returns its id."""
        columns = (*self.keys, *self.state, "author", "time", "reason", "origin", "reverts")
        values = (*key, *(state.get(c) for c in self.state), author, time or now(), reason,
                  origin, reverts)
        return con.execute(f"INSERT INTO {self.table}({', '.join(columns)}) VALUES "
                           f"({', '.join('?' * len(columns))})", values).lastrowid

    def undo(self, con, event_id: int, *, author: str, reason: str | None = None) -> int:
        """Append an event restoring the state before ``event_id`` (which must still be the
        newest of its thing); returns the new event's id (origin ``undo``)."""
        event = self.event(con, event_id)
        key = tuple(event[k] for k in self.keys)
        newest = self.newest(con, key)
        if newest["id"] != event["id"]:
            raise (self.not_newest(event, newest, event_id) if self.not_newest else
                   ConflictError(f"{self.noun.capitalize()} event {event_id} is not the newest:"
                                 f" undo event {newest['id']} first.", expected=event_id))
        where = " AND ".join(f"{k} = ?" for k in self.keys)
        before = con.execute(f"SELECT * FROM {self.table} WHERE {where} AND id < ? "
                             f"ORDER BY id DESC LIMIT 1", (*key, event["id"])).fetchone()
        if before is not None:
            state = dict(before)
        else:
            state = self.first(event) if self.first else None
            if state is None:
                raise (self.nothing_before(event) if self.nothing_before else
                       LabelError(f"{self.noun.capitalize()} event {event_id} is the first; "
                                  f"there is nothing before it to restore."))
        return self.append(con, key, state, author=author, origin="undo",
                           reason=reason or f"undo event {event_id}", reverts=event["id"])

    def last_id(self, con) -> int:
        """The id of the newest event of the log (0 when empty): a pin later reads stop at."""
        return int(con.execute(f"SELECT MAX(id) FROM {self.table}").fetchone()[0] or 0)

    def samples_of(self, catalog, event_ids: Iterable[int]) -> list[str]:
        """The samples the events ``event_ids`` changed (each once, in no set order)."""
        ids, found = [int(i) for i in event_ids], []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            found += [r[0] for r in catalog.query(
                f"SELECT DISTINCT {self.sample} FROM {self.table} e {self.join} WHERE e.id IN "
                f"({', '.join('?' * len(chunk))})", tuple(chunk))]
        return list(dict.fromkeys(found))

    # -- who reviewed what ---------------------------------------------------------------------
    def reviewed(self, catalog, sample_ids: Iterable[str] | None = None,
                 origin: str = REVIEW_ORIGIN) -> set[str]:
        """Samples with an event of ``origin`` in this log that no undo reverted."""
        select = (f"SELECT e.id, {self.sample} AS sample_id, e.origin, e.reverts "
                  f"FROM {self.table} e {self.join}")
        if sample_ids is None:
            rows = catalog.query(f"{select} WHERE e.origin IN (?, 'undo')", (origin,))
        else:
            rows, ids = [], list(sample_ids)
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start:start + _CHUNK]
                rows += catalog.query(f"{select} WHERE {self.sample} IN "
                                      f"({', '.join('?' * len(chunk))}) AND e.origin IN (?, 'undo')",
                                      (*chunk, origin))
        reverted = {r["reverts"] for r in rows if r["origin"] == "undo"}
        return {r["sample_id"] for r in rows if r["origin"] == origin and r["id"] not in reverted}


# -- the three logs ------------------------------------------------------------------------------
def _label_conflict(key: tuple, row: dict | None, based_on: int | None) -> ConflictError:
    (sid,) = key
    current = None if row is None else row["id"]
    newer = ({"label": None, "event_id": None} if row is None else
             {"label": row["label"], "event_id": row["id"], "author": row["author"],
              "time": row["time"], "origin": row["origin"], "reason": row["reason"]})
    return ConflictError(
        f"Sample {sid} was changed since it was read: its label is now {newer['label']!r} "
        f"(event {current}{', by ' + newer['author'] if row is not None else ''}), not event "
        f"{based_on}. Nothing was saved: look at the newer label and decide again.",
        sample_id=sid, expected=based_on, current=newer)


def _label_not_newest(event: dict, newest: dict, event_id: int) -> ConflictError:
    return ConflictError(
        f"Event {event_id} is not the newest of sample {event['sample_id']}: it was changed "
        f"since (now {newest['label']!r}, event {newest['id']} by {newest['author']}). Undo "
        f"event {newest['id']} first, or relabel directly.", sample_id=event["sample_id"],
        expected=event_id,
        current={"label": newest["label"], "event_id": newest["id"],
                 "author": newest["author"], "time": newest["time"],
                 "origin": newest["origin"], "reason": newest["reason"]})


LABELS = EventLog(
    table="label_events", keys=("sample_id",), state=("label", "targets"), noun="label",
    not_found=lambda i: LabelError(f"No label event {i}. See 'smartset label history'."),
    not_newest=_label_not_newest,
    nothing_before=lambda e: LabelError(
        f"Event {e['id']} is the first label of sample {e['sample_id']}; there is nothing "
        f"before it to restore."),
    changed=_label_conflict)


def _mark_conflict(key: tuple, row: dict | None, based_on: int | None) -> ConflictError:
    import json

    sid, kind = key
    current = None if row is None else row["id"]
    newer = {"kind": kind, "mark_id": current,
             "value": json.loads(row["value"]) if row is not None and row["value"] else None,
             "active": bool(row["active"]) if row is not None else False,
             "author": None if row is None else row["author"],
             "time": None if row is None else row["time"]}
    state = ("never set" if row is None else
             f"now {'set' if newer['active'] else 'cleared'} (mark event {current}, by "
             f"{newer['author']})")
    return ConflictError(
        f"Mark {kind!r} of sample {sid} was changed since it was read: it is {state}, not mark "
        f"event {based_on}. Nothing was saved: look at the newer state and decide again.",
        sample_id=sid, expected=based_on, current=newer)


def _mark_not_newest(event: dict, newest: dict, event_id: int) -> ConflictError:
    return ConflictError(
        f"Mark event {event_id} is not the newest {event['kind']!r} event of sample "
        f"{event['sample_id']}: it was changed since (mark event {newest['id']} by "
        f"{newest['author']}). Undo that one first.", sample_id=event["sample_id"],
        expected=event_id,
        current={"kind": event["kind"], "mark_id": newest["id"],
                 "active": bool(newest["active"]), "author": newest["author"],
                 "time": newest["time"]})


MARKS = EventLog(
    table="sample_marks", keys=("sample_id", "kind"), state=("value", "active"), noun="mark",
    first=lambda event: {"value": None, "active": 0},  # before any mark: not set
    not_found=lambda i: LabelError(f"No mark event {i}. See Workspace.mark_history()."),
    not_newest=_mark_not_newest, changed=_mark_conflict)


def _annotation_conflict(aid: str, row: dict, expected, what: str) -> ConflictError:
    return ConflictError(
        f"Annotation {aid} was changed since {what} (now {row['category']!r}"
        f"{', deleted' if row['deleted'] else ''}, event {row['id']} by {row['author']}): "
        f"look at it again before changing it.", sample_id=row["_sample"], expected=expected,
        current={"annotation_id": aid, "category": row["category"],
                 "deleted": bool(row["deleted"]), "event_id": row["id"],
                 "author": row["author"], "time": row["time"], "origin": row["origin"],
                 "reason": row["reason"]})


ANNOTATIONS = EventLog(
    table="annotation_events", keys=("annotation_id",),
    state=("category", "x", "y", "w", "h", "segmentation", "attributes", "deleted"),
    noun="annotation", sample="a.sample_id", join="JOIN annotations a ON a.id = e.annotation_id",
    first=lambda event: {**event, "deleted": 1},  # undoing the creation deletes it
    not_found=lambda i: LabelError(f"No annotation event {i}. See 'smartset annotations "
                                   f"history'."),
    not_newest=lambda event, newest, i: _annotation_conflict(
        event["annotation_id"], newest, i, f"event {i}: it is not the newest; undo that first"),
    changed=lambda key, row, based_on: (
        LabelError(f"No annotation {key[0]!r}. List them with 'smartset annotations list'.")
        if row is None else _annotation_conflict(key[0], row, based_on, f"event {based_on}")))

def _tag_conflict(key: tuple, row: dict | None, based_on: int | None) -> ConflictError:
    import json

    (sid,) = key
    current = None if row is None else row["id"]
    newer = ({"tags": None, "event_id": None} if row is None else
             {"tags": None if row["tags"] is None else json.loads(row["tags"]),
              "event_id": current, "author": row["author"], "time": row["time"],
              "origin": row["origin"], "reason": row["reason"]})
    state = ("has no tag event" if row is None else
             f"now has {newer['tags']} (tag event {current}, by {newer['author']})")
    return ConflictError(
        f"The tags of sample {sid} changed since they were read: it {state}, not the tag "
        f"event {based_on} the change was based on. Nothing was written; read the tags "
        f"again and redo the change.", sample_id=sid, expected=based_on, current=newer)


#: multi-label tags (:mod:`smartset.tags`): undo appends the tags before an event; before a
#: sample's first tag event it had none of its own (None: its label or marks decide), so
#: undoing that event clears them again
TAGS = EventLog(
    table="tag_events", keys=("sample_id",), state=("tags",), noun="tag",
    first=lambda event: {"tags": None}, changed=_tag_conflict,
    not_found=lambda i: LabelError(f"No tag event {i}. See smartset.tags.tag_history()."))

LOGS = (LABELS, MARKS, ANNOTATIONS, TAGS)


def reviewed_samples(catalog, sample_ids: Iterable[str] | None = None,
                     origin: str = REVIEW_ORIGIN) -> set[str]:
    """Samples a person reviewed: a label, mark, annotation or tag event of ``origin``
    (default ``review``, the review app's) that no undo reverted. ``sample_ids`` limits the
    search."""
    ids = None if sample_ids is None else list(sample_ids)
    found: set[str] = set()
    for log in LOGS:
        found |= log.reviewed(catalog, ids, origin)
    return found
