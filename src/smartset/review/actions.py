"""Review decisions as catalog events: relabel, accept, exclude, multi-label, duplicate,
undo, merge and rename classes, and export the reviewed version.

Each function takes the workspace that writes (the app runs them on its one writer thread)
and appends events in one transaction each, so a killed server leaves every decision whole
or absent. Per-sample decisions are events of origin ``review`` whose reason names the queue
(``queue=suspicious: '7' -> '1'``); class-level ones (merge, rename) are of origin
``review-class``. A change based on a value someone else changed since raises
:class:`~smartset.errors.ConflictError`, which carries the newer value.
"""

from __future__ import annotations

import datetime as _dt

from smartset.errors import LabelError
from smartset.events import LABELS, MARKS
from smartset.ingest._sources import MAX_LABEL_LENGTH, label_problem
from smartset.review.queues import CLASS_ORIGIN, REVIEW_ORIGIN

__all__ = ["decide", "decide_box", "undo_events", "merge_classes", "export_version",
           "check_label", "DECISIONS", "BOX_DECISIONS", "UNSET"]

DECISIONS = ("label", "accept", "exclude", "include", "multi_label", "duplicate_of", "unmark")
BOX_DECISIONS = ("relabel", "delete")
MAX_LABEL = MAX_LABEL_LENGTH
_MAX_EVENT = 1 << 63  # SQLite integers are 64-bit


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: ``expected`` not given: the change is based on whatever is current
UNSET = _Unset()


def check_label(label) -> str:
    """A class name as typed: stripped; refused if empty, too long or holding control
    characters."""
    if not isinstance(label, str) or not label.strip():
        raise LabelError(f"A label must be a non-empty text, got {str(label)[:40]!r}.")
    label = label.strip()
    problem = label_problem(label)  # the rule ingest applies at the door
    if problem is not None:
        raise LabelError(f"Label {label[:40]!r} is refused: {problem}; type it again.")
    return label


def _event_id(value, what: str = "event") -> int:
    """``value`` as an event id (a positive 64-bit integer), or a :class:`LabelError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < _MAX_EVENT:
        raise LabelError(f"{what} id {str(value)[:40]!r} is not an event id (a positive "
                         f"integer below 2^63); reload the page.")
    return value


def _existing_class(ws, name) -> str:
    """A class named for a merge or rename: as it is in the catalog (even a label a newer
    ingest would refuse, so it can be repaired), else as typed."""
    if isinstance(name, str) and name and ws.labeled_as([name]):
        return name
    return check_label(name)


def _label_at(ws, sample_id: str, event_id) -> tuple[str | None, int | None]:
    """The label of ``event_id`` (or the current one when UNSET) of ``sample_id``."""
    if event_id is None:
        return None, None
    with ws.catalog.read() as con:
        if event_id is UNSET:
            row = LABELS.newest(con, (sample_id,))
        else:
            wanted = _event_id(event_id, "label event")
            row = next((e for e in LABELS.history(ws.catalog, {"id": wanted})
                        if e["sample_id"] == sample_id), None)
            if row is None:
                raise LabelError(f"Label event {event_id} is not an event of sample "
                                 f"{sample_id}.")
    if row is None:
        if not ws.records_of([sample_id]):
            raise LabelError(f"Unknown sample id {sample_id!r}.")
        return None, None
    return row["label"], row["id"]


def _mark_version(ws, sample_id: str, kind: str, expected):
    if expected is not UNSET:
        return None if expected is None else _event_id(expected, "mark event")
    with ws.catalog.read() as con:
        row = MARKS.newest(con, (sample_id, kind))
    return None if row is None else row["id"]


def _reason(queue: str | None, what: str, note: str | None) -> str:
    text = f"queue={queue}: {what}" if queue else what
    return f"{text} ({note})" if note else text


def decide(ws, action: str, sample_id: str, *, queue: str, author: str | None = None,
           label: str | None = None, classes: list[str] | None = None, of: str | None = None,
           kind: str | None = None, expected_event=UNSET, expected_mark=UNSET,
           note: str | None = None) -> dict:
    """Record one decision about ``sample_id`` made in ``queue``.

    ``action`` is one of :data:`DECISIONS`: ``label`` (give ``label``), ``accept`` (keep the
    current label: an event with the same label), ``exclude``/``include``, ``multi_label``
    (``classes``), ``duplicate_of`` (``of``: the sample it repeats), ``unmark`` (clear mark
    ``kind``). ``expected_event`` is the label event the decision is based on and
    ``expected_mark`` the newest mark event of the kind concerned (None: none); when given
    and no longer current, nothing is written and :class:`ConflictError` is raised.

    Returns ``{"label_events": [...], "mark_events": [...], "message": str}``.
    """
    if action not in DECISIONS:
        raise LabelError(f"Unknown decision {action!r}; decisions: {', '.join(DECISIONS)}.")
    common = {"author": author, "origin": REVIEW_ORIGIN}
    if action in ("label", "accept"):
        old, based_on = _label_at(ws, sample_id, expected_event)
        new = check_label(label) if action == "label" else old
        if action == "accept" and old is None:
            raise LabelError(f"Sample {sample_id} has no label to accept: give it one.")
        what = f"accepted {old!r}" if action == "accept" else f"{old!r} -> {new!r}"
        events = ws.relabel(sample_id, new, reason=_reason(queue, what, note),
                            expected={sample_id: based_on}, **common)
        return {"label_events": events, "mark_events": [],
                "message": f"{sample_id}: {what}"}
    mark_kind = {"exclude": "exclude", "include": "exclude", "multi_label": "multi_label",
                 "duplicate_of": "duplicate_of"}.get(action, kind)
    if mark_kind is None:
        raise LabelError("unmark needs the kind of mark to clear: exclude, multi_label or "
                         "duplicate_of.")
    based_on = {sample_id: _mark_version(ws, sample_id, mark_kind, expected_mark)}
    if action == "exclude":
        events = ws.mark(sample_id, "exclude", reason=_reason(queue, "exclude", note),
                         expected=based_on, **common)
        what = "excluded"
    elif action == "multi_label":
        chosen = sorted({check_label(c) for c in classes or []})
        events = ws.mark(sample_id, "multi_label", chosen,
                         reason=_reason(queue, f"multi-label {', '.join(chosen)}", note),
                         expected=based_on, **common)
        what = f"multi-label {', '.join(chosen)}"
    elif action == "duplicate_of":
        events = ws.mark(sample_id, "duplicate_of", of,
                         reason=_reason(queue, f"duplicate of {of}", note),
                         expected=based_on, **common)
        what = f"duplicate of {of}"
    else:  # include, unmark
        events = ws.unmark(sample_id, mark_kind, reason=_reason(queue, f"clear {mark_kind}", note),
                           expected=based_on, **common)
        what = f"cleared {mark_kind}"
    return {"label_events": [], "mark_events": events, "message": f"{sample_id}: {what}"}


def decide_box(ws, action: str, annotation_id: str, *, queue: str,
               author: str | None = None, category: str | None = None,
               expected_event: int | None = None, note: str | None = None) -> dict:
    """Relabel (``category``) or delete one detection box or mask, as an annotation event
    of origin ``review``. ``expected_event`` is the annotation event the decision is based
    on; if a newer one exists, nothing is written and :class:`ConflictError` is raised.

    Returns ``{"annotation_events": [...], "sample_id": str, "message": str}``."""
    from smartset.detection.store import delete_box, relabel_box

    if action not in BOX_DECISIONS:
        raise LabelError(f"Unknown box decision {action!r}; box decisions: "
                         f"{', '.join(BOX_DECISIONS)}.")
    from smartset.detection.store import annotation_state

    state = annotation_state(ws, annotation_id)
    if state is None:
        raise LabelError(f"No annotation {annotation_id!r}: it may come from another "
                         f"workspace; reload the page.")
    sample_id, old = state["_sample"], state["category"]
    expected = (None if expected_event is None
                else {annotation_id: _event_id(expected_event, "annotation event")})
    common = {"author": author, "origin": REVIEW_ORIGIN, "expected": expected}
    if action == "relabel":
        new = check_label(category)
        what = f"box {annotation_id}: {old!r} -> {new!r}"
        events = relabel_box(ws, annotation_id, new, reason=_reason(queue, what, note), **common)
    else:
        what = f"box {annotation_id} ({old!r}) deleted"
        events = delete_box(ws, annotation_id, reason=_reason(queue, what, note), **common)
    return {"annotation_events": events, "sample_id": sample_id,
            "message": f"{sample_id}: {what}"}


def undo_events(ws, *, label_events: list[int] = (), mark_events: list[int] = (),
                annotation_events: list[int] = (), tag_events: list[int] = (),
                queue: str | None, author: str | None = None) -> dict:
    """Revert events (newest first), each by an appended event. An event that is no longer
    the newest of its sample (or annotation) raises :class:`ConflictError`; what was
    reverted before it stays reverted, nothing after it is."""
    from smartset.detection.store import undo_annotation

    label_events = [_event_id(e, "label event") for e in label_events]
    mark_events = [_event_id(e, "mark event") for e in mark_events]
    annotation_events = [_event_id(e, "annotation event") for e in annotation_events]
    tag_events = [_event_id(e, "tag event") for e in tag_events]

    reverted_labels = [ws.undo(event_id, author=author,
                               reason=_reason(queue, f"undo event {event_id}", None))
                       for event_id in sorted(label_events, reverse=True)]
    reverted_marks = [ws.undo_mark(mark_id, author=author,
                                   reason=_reason(queue, f"undo mark {mark_id}", None))
                      for mark_id in sorted(mark_events, reverse=True)]
    reverted_boxes = [undo_annotation(ws, event_id, author=author,
                                      reason=_reason(queue, f"undo box event {event_id}", None))
                      for event_id in sorted(annotation_events, reverse=True)]
    reverted_tags = []
    if tag_events:
        from smartset.tags import undo_tags

        reverted_tags = undo_tags(ws, tag_events, author=author,
                                  reason=_reason(queue, "undo tag events", None))
    total = (len(reverted_labels) + len(reverted_marks) + len(reverted_boxes)
             + len(reverted_tags))
    return {"label_events": reverted_labels, "mark_events": reverted_marks,
            "annotation_events": reverted_boxes, "tag_events": reverted_tags,
            "message": f"undone: {total} event(s)"}


def merge_classes(ws, sources: list[str], into: str, *, queue: str | None,
                  author: str | None = None, reason: str | None = None) -> dict:
    """Relabel every sample of the ``sources`` classes as ``into`` (a rename when there is
    one source and ``into`` is new), in one transaction, as events of origin
    ``review-class``."""
    into = check_label(into)
    sources = list(dict.fromkeys(_existing_class(ws, s) for s in sources))
    if not sources:
        raise LabelError("Name the classes to merge.")
    rows = ws.labeled_as(sources)
    present = {r["label"] for r in rows}
    missing = [s for s in sources if s not in present]
    if missing:
        raise LabelError(f"No sample is labeled {', '.join(map(repr, missing))}. Classes: "
                         f"{', '.join(ws.classes()) or 'none'}.")
    moved = [r for r in rows if r["label"] != into]
    if not moved:
        raise LabelError(f"Every sample of {', '.join(map(repr, sources))} is labeled "
                         f"{into!r} already.")
    renamed = len(sources) == 1 and into not in set(ws.classes())
    what = (f"rename class {sources[0]!r} to {into!r}" if renamed else
            f"merge classes {', '.join(map(repr, sources))} into {into!r}")
    events = ws.relabel([r["sample_id"] for r in moved], into, author=author,
                        origin=CLASS_ORIGIN, reason=reason or _reason(queue, what, None),
                        expected={r["sample_id"]: r["event_id"] for r in moved})
    return {"label_events": events, "mark_events": [],
            "message": f"{what}: {len(events)} sample(s) relabeled"}


def export_version(ws, name: str | None = None, *, description: str | None = None) -> dict:
    """Freeze the reviewed state (current labels; excluded samples left out) as a version
    (default name ``reviewed-YYYYMMDD-HHMMSS``)."""
    from smartset.review.queues import reviewed_ids

    name = name or "reviewed-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    reviewed = len(reviewed_ids(ws.catalog))
    return ws.create_version(name, description=description or
                             f"reviewed with smartset review ({reviewed} samples reviewed)",
                             params={"stage": "review", "reviewed": reviewed})
