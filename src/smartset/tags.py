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

from collections.abc import Iterable, Sequence

import numpy as np

from smartset._names import label_problem
from smartset.catalog import append_tag_events, newest_tag_ids, tags_upto
from smartset.errors import LabelError

__all__ = ["read_tags", "set_tags", "tag_matrix", "split_tags", "frozen_tag_ids"]


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
