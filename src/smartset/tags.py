"""Multi-label tags: which classes each image shows, when it shows more than one.

A sample's tags come from, newest authority first:

1. a reviewer's ``multi_label`` mark (the review app's ``m`` key: the classes the person
   named), while it is set;
2. its tag events (``tag_events``): a table's tags column at ingest (``--tags-column``), or
   :func:`set_tags` (the Python API);
3. its single label, as a set of one;
4. for an augmented copy with none of its own, its origin's tags;
5. files with the same content (sha256) filed under several class folders: the union of
   their labels (a photo of a cat and a dog, copied into ``cat/`` and ``dog/``), unless one
   of them has tags of its own (1 or 2).

A version records the newest tag event and multi_label mark when it is made
(``params["tags_upto"]``), so its tags never change afterwards; the live catalog reads the
newest. Versions made before smartset stored tags carry their labels and no marks.

Why a table of its own rather than labels: a label is one class by contract (every stage's
``label`` column, the confusion matrix, stratified splits), so several classes in it would
break each of them; and why events: tags change the way labels do (a reviewer adds a class,
a re-ingest drops one), and each change must say who, when and why. The SQL is in
:mod:`smartset.catalog`; this module only combines what it reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from smartset._names import label_problem
from smartset.catalog import append_tag_events, newest_tag_ids, tags_upto
from smartset.errors import LabelError
from smartset.events import TAGS
from smartset.workspace import _default_author

__all__ = ["read_tags", "set_tags", "tag_matrix", "split_tags", "frozen_tag_ids", "TAGS",
           "edit_tags", "undo_tags", "tag_history"]

def frozen_tag_ids(con) -> list[int]:
    """``[newest tag event id, newest multi_label mark id]`` for a version's params."""
    return list(newest_tag_ids(con))


def split_tags(text: str | None, sep: str | None = None) -> tuple[str, ...]:
    """Tags of one table cell: ``"cat|dog"`` with ``sep="|"``, ``"clear primary water"``
    with ``sep=" "``; ``sep=None`` takes the first of ``| ; ,`` the cell holds, else
    whitespace. Blank parts are dropped; the order is sorted and duplicates go."""
    if text is None or not str(text).strip():
        return ()
    text = str(text)
    if sep is None:
        sep = next((s for s in ("|", ";", ",") if s in text), None)
    parts = text.split() if sep is None or sep == " " else text.split(sep)
    return tuple(sorted({p.strip() for p in parts if p.strip()}))


def _check_tags(tags: Iterable[str]) -> list[str]:
    if isinstance(tags, str):
        raise LabelError(f"tags must be a list of class names, e.g. ['cat', 'dog'], not the "
                         f"string {tags!r}.")
    tags = sorted(set(tags))
    if not tags:
        raise LabelError("tags must name at least one class; pass None to clear them.")
    for tag in tags:
        problem = label_problem(tag)
        if problem:
            raise LabelError(f"Tag {tag!r} cannot be a class name: {problem}. Use printable "
                             f"text of at most 200 characters.")
    return tags


def set_tags(ws, sample_ids: str | Sequence[str], tags: Iterable[str] | None, *,
             author: str, reason: str | None = None, origin: str = "api") -> list[int]:
    """Give samples the tags ``tags`` (None: clear their own tags, so their label or marks
    decide again): one appended event per sample; returns the event ids."""
    ids = [sample_ids] if isinstance(sample_ids, str) else list(sample_ids)
    checked = None if tags is None else _check_tags(tags)
    with ws.catalog.write() as con:
        ws._check_samples(con, ids)
        return append_tag_events(con, [(sid, checked) for sid in ids], author=author,
                                 origin=origin, reason=reason)


def read_tags(ws, version: str | None = None, *, merge_copies: bool = True
              ) -> dict[str, frozenset[str]]:
    """Sample id -> its set of tags, for every sample of ``version`` (default: the live
    catalog); an unlabeled sample without tags maps to an empty set. See the module
    docstring for where tags come from; ``merge_copies=False`` keeps files with the same
    content apart."""
    frame = ws.samples(version)
    upto = (None, None)
    if version is not None:
        upto = tuple(ws.version(version)["params"].get("tags_upto", (0, 0)))
    with ws.catalog.read() as con:
        events, marks = tags_upto(con, *upto)

    def own(sid):
        if sid in marks:
            return frozenset(marks[sid])
        if events.get(sid):
            return frozenset(events[sid])
        return None

    result: dict[str, frozenset[str]] = {}
    explicit: set[str] = set()
    for sid, label, origin in zip(frame["id"], frame["label"], frame["origin_id"]):
        tags = own(sid)
        if tags is None and isinstance(origin, str):
            tags = own(origin)
        if tags is not None:
            explicit.add(sid)
        else:
            tags = frozenset() if label is None else frozenset([label])
        result[sid] = tags
    if merge_copies:
        groups: dict[str, list[str]] = {}
        for sid, sha in zip(frame["id"], frame["sha256"]):
            groups.setdefault(sha, []).append(sid)
        for members in groups.values():
            if len(members) < 2 or any(m in explicit for m in members):
                continue
            union = frozenset().union(*(result[m] for m in members))
            for m in members:
                result[m] = union
    return result


def tag_matrix(tag_sets: Sequence[Iterable[str]], classes: Sequence[str] | None = None
               ) -> tuple[np.ndarray, list[str]]:
    """``(Y, classes)``: a ``(N, K)`` uint8 indicator matrix of ``tag_sets`` over the sorted
    ``classes`` (default: every tag seen). A tag outside a given ``classes`` is an error
    naming it."""
    tag_sets = [frozenset([t]) if isinstance(t, str) else frozenset(t) for t in tag_sets]
    if classes is None:
        classes = sorted(frozenset().union(*tag_sets)) if tag_sets else []
    classes = list(classes)
    index = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(tag_sets), len(classes)), dtype=np.uint8)
    for row, tags in enumerate(tag_sets):
        for tag in tags:
            if tag not in index:
                raise LabelError(f"Tag {tag!r} of row {row} is not one of the model's classes "
                                 f"({', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''}).")
            y[row, index[tag]] = 1
    return y, classes


def edit_tags(ws, changes: dict[str, tuple[Iterable[str], Iterable[str]]], *,
              author: str | None = None,
              reason: str | dict[str, str] | None = None, origin: str = "api",
              keep: Iterable[str] = (),
              based_on: Mapping[str, int | None] | None = None) -> dict[str, int | str]:
    """Add and remove single tags: ``changes`` maps a sample id to ``(add, remove)``; each
    changed sample gets one tag event holding its current tags (:func:`read_tags`) with
    ``add`` added and ``remove`` taken away. ``keep``: samples that get an event with their
    tags unchanged (a person looked and kept them: a review decision on record). ``reason``:
    one text, or one per sample.

    Returns sample id -> the event id, or why nothing was written: ``"already"`` (the tags
    are as asked), ``"multi_label mark"`` (a reviewer's mark decides its tags: change the
    mark instead), ``"no tags left"`` (a tag event cannot leave a labeled image with none:
    exclude it instead) or ``"sample not available"``. ``author`` None: ``$SMARTSET_AUTHOR``,
    else ``$USER``.

    Optimistic concurrency, as for labels: each change is based on the sample's newest tag
    event when the tags were read (``based_on``: sample id -> that event id, None for none
    yet, as a caller that showed the tags to a person knows it; by default the newest when
    this call reads them). If another tag event came since, nothing of the call is written
    and :class:`~smartset.errors.ConflictError` carries the newer tags."""
    author, keep = author or _default_author(), set(keep)
    wanted = list(changes) + sorted(keep - set(changes))
    with ws.catalog.read() as con:  # before the tags are read: a later event is a conflict
        read_at = {sid: (row["id"] if (row := TAGS.newest(con, (sid,))) else None)
                   for sid in wanted}
    if based_on is not None:
        read_at.update({sid: _event_id(sid, based_on[sid]) for sid in wanted
                        if sid in based_on})
    current = read_tags(ws)  # as every stage reads them: copies united
    with ws.catalog.read() as con:
        _, marked = tags_upto(con)
    rows, result, reasons = [], {}, []
    for sid in wanted:
        add, remove = changes.get(sid, ((), ()))
        if sid not in current:
            result[sid] = "sample not available"
            continue
        if sid in marked:
            result[sid] = "multi_label mark"
            continue
        new = (set(current[sid]) | set(add)) - set(remove)
        if new == set(current[sid]) and sid not in keep:
            result[sid] = "already"
            continue
        if not new:
            result[sid] = "no tags left"
            continue
        rows.append((sid, _check_tags(new)))
        reasons.append(reason.get(sid) if isinstance(reason, dict) else reason)
    with ws.catalog.write() as con:
        for sid, _ in rows:
            TAGS.check_expected(con, (sid,), read_at[sid])
        for (sid, tags), why in zip(rows, reasons):
            result[sid] = append_tag_events(con, [(sid, tags)], author=author, origin=origin,
                                            reason=why)[0]
    return result


def _event_id(sid: str, value) -> int | None:
    """A ``based_on`` value: a tag event id (an int) or None (no tag event yet)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise LabelError(f"based_on[{sid!r}] must be the id (an int) of the tag event the "
                         f"change was read from, or None for none yet; got {value!r}. Read "
                         f"it with smartset.tags.tag_history().")
    return int(value)


def undo_tags(ws, event_ids: Iterable[int], *, author: str | None = None,
              reason: str | None = None) -> list[int]:
    """Revert tag events, newest first, each by an appended event (origin ``undo``) that
    restores the sample's tags before it; an event that is no longer the newest of its
    sample raises :class:`~smartset.errors.ConflictError` (undo the newer one first)."""
    author, done = author or _default_author(), []
    for event_id in sorted({int(e) for e in event_ids}, reverse=True):
        with ws.catalog.write() as con:
            done.append(TAGS.undo(con, event_id, author=author, reason=reason))
    return done


def tag_history(ws, sample_id: str | None = None) -> list[dict]:
    """Tag events (of ``sample_id``, or all), oldest first: ``id``, ``sample_id``, ``tags``
    (the JSON list, None when cleared), ``author``, ``time``, ``reason``, ``origin``,
    ``reverts``: who changed which tags, when and why."""
    return TAGS.history(ws.catalog, None if sample_id is None else {"sample_id": sample_id})
