"""Review queues: which samples a person should look at, in which order, and why.

A queue is named by a string:

- ``suspicious``: every labeled sample the newest cleaning run ranked (table
  ``label_issues``: ``smartset clean`` writes one row per labeled sample), most suspicious
  first by the one 0-1 score of :mod:`smartset.clean.ranking`, flagged or not, so the
  first 100 entries are the 100 most suspicious samples;
- ``atypical``: the images far from their class of that run, by robust z-score (a separate
  scale; only when the run found some);
- ``duplicates``: exact and near duplicate sets of the newest audit, set by set;
- ``audit:KIND``: one audit issue type (``dark``, ``blurry``, ``outlier``, ...), worst first;
- ``class:NAME``: every sample labeled ``NAME`` (the "annotate the class" pass);
- ``unlabeled``: samples without a label;
- ``unreviewed``: every sample nobody has reviewed yet;
- ``plan:NAME``: the items of a cleaning plan registered as artifact ``NAME``;
- ``tags``: suspicious tags, the cells the newest ``smartset clean --multi-label`` flagged
  (a tag that looks missing or extra), most confident first: each an item of that run's
  plan (accepted or rejected like a plan's items), with the sample's current tags.

:func:`queue_entries` gives the entries of one queue (``sample_id``, ``reason``, ``score``,
``group``, ``item``, ``suggested``), :func:`list_queues` every queue with its progress. A
sample is *reviewed* once it has a label or mark event of origin ``review`` that was not
undone (:func:`reviewed_ids`); a plan item once it was accepted or rejected.
"""

from __future__ import annotations

from collections.abc import Iterable

from smartset.clean.plan import UNFLAGGED
from smartset.errors import SmartsetError
from smartset.events import REVIEW_ORIGIN, reviewed_samples

__all__ = ["list_queues", "queue", "queue_entries", "reviewed_ids", "QueueNotFoundError",
           "REVIEW_ORIGIN", "CLASS_ORIGIN", "DUPLICATE_KINDS", "TAGS_QUEUE", "tags_plan"]

# REVIEW_ORIGIN ("review"): origin of the label and mark events of per-sample review
# decisions, spelled once in smartset.events
#: origin of class-level review actions (merge, rename): they do not make a sample reviewed
CLASS_ORIGIN = "review-class"
DUPLICATE_KINDS = ("exact_duplicate", "near_duplicate")

TAGS_QUEUE = "tags"
TAGS_HINT = ("No multi-label cleaning yet: run 'smartset clean WORKSPACE --multi-label' (it "
             "finds tags that look missing or extra), then reload.")
CLEAN_HINT = ("No label issues in the catalog yet: run 'smartset clean WORKSPACE' (it ranks "
              "suspicious labels from out-of-fold predictions), then reload.")
AUDIT_HINT = "No audit findings yet: run 'smartset audit WORKSPACE', then reload."


class QueueNotFoundError(SmartsetError, LookupError):
    """A queue name that is not one of the queues of the workspace."""


def reviewed_ids(catalog, sample_ids: Iterable[str] | None = None) -> set[str]:
    """Samples with a label, mark or annotation (box) event of origin ``review`` that no
    undo reverted (:func:`smartset.events.reviewed_samples`: the event logs own the answer,
    so stages below review can ask it too)."""
    return reviewed_samples(catalog, sample_ids, REVIEW_ORIGIN)


class _Snapshot:
    """What the queues are made of, read once per request."""

    def __init__(self, ws):
        self.ws = ws
        self.labels: dict[str, str | None] = ws.current_labels()
        self.reviewed = reviewed_ids(ws.catalog)
        from smartset.audit.store import findings, reference_run

        run = reference_run(ws)  # the reference audit: experiments do not replace it
        self.audit_run = run
        found = findings(ws, run=run) if run is not None else None
        self.findings = [] if found is None else [
            {"kind": r["kind"], "sample_id": r["sample_id"], "score": r["score"],
             "reason": r["reason"], "grp": r["grp"]}
            for r in found[found["sample_id"].notna()].to_dict("records")]
        from smartset.clean.store import label_issues, newest_clean_run

        self.issues_run = newest_clean_run(ws)
        self.issues = label_issues(ws, self.issues_run, evidence=["atypical"], decode=False)

    def ok(self, sample_id: str | None) -> bool:
        return sample_id in self.labels


def _suspicious(snap: _Snapshot) -> list[dict]:
    """One entry per sample, in the order of the ranking (one score scale; see
    :mod:`smartset.clean.ranking`); the reasons of every detector that flagged it."""
    by_sample: dict[str, dict] = {}
    for issue in snap.issues:  # newest run, most suspicious first
        sid = issue["sample_id"]
        if not snap.ok(sid):
            continue
        unflagged = issue["kind"] == UNFLAGGED
        suggested = None if unflagged else issue["suggested"]
        what = f"{issue['kind']} {issue['score']:.2f}"
        if suggested:
            what += f": given {issue['label']!r}, suggested {suggested}"
        if sid in by_sample:
            by_sample[sid]["reason"] += f"; {what}"
            continue
        by_sample[sid] = {"sample_id": sid, "score": float(issue["score"]),
                          "reason": issue["reason"] if unflagged
                          else f"{what} ({issue['reason']})", "group": issue["kind"],
                          "item": None, "suggested": suggested}
    return list(by_sample.values())


def _atypical(snap: _Snapshot) -> list[dict]:
    """Images far from their class, most atypical first (robust z-score)."""
    import json

    found = []
    for issue in snap.issues:
        if issue["kind"] != "atypical" or not snap.ok(issue["sample_id"]):
            continue
        z = json.loads(issue["evidence"] or "{}").get("atypical_z")
        found.append({"sample_id": issue["sample_id"], "score": z, "group": "atypical",
                      "reason": f"z {z}: {issue['reason']}", "item": None, "suggested": None})
    found.sort(key=lambda e: (-(e["score"] or 0.0), e["sample_id"]))
    return found


def _duplicates(snap: _Snapshot) -> list[dict]:
    def order(finding):
        kind, _, number = (finding["grp"] or "-0").rpartition("-")
        return (kind, int(number) if number.isdigit() else 0, finding["sample_id"])

    found = sorted((f for f in snap.findings
                    if f["kind"] in DUPLICATE_KINDS and snap.ok(f["sample_id"])), key=order)
    return [{"sample_id": f["sample_id"], "score": f["score"], "group": f["grp"],
             "reason": f"{f['kind'].replace('_', ' ')} {f['grp']}: {f['reason']}",
             "item": None, "suggested": None} for f in found]


def _audit_kinds(snap: _Snapshot) -> list[str]:
    kinds = {f["kind"] for f in snap.findings if f["kind"] not in DUPLICATE_KINDS}
    return sorted(kinds)


def _audit(snap: _Snapshot, kind: str) -> list[dict]:
    from smartset.audit.checks import CHECKS

    check = CHECKS.get(kind)
    low = check is not None and check.direction == "low"
    found = [f for f in snap.findings if f["kind"] == kind and snap.ok(f["sample_id"])]
    found.sort(key=lambda f: (f["score"] if low else -(f["score"] or 0.0)))
    return [{"sample_id": f["sample_id"], "score": f["score"], "group": f["grp"],
             "reason": f"{kind}: {f['reason']}", "item": None, "suggested": None} for f in found]


def _class(snap: _Snapshot, name: str | None) -> list[dict]:
    reason = "unlabeled" if name is None else f"labeled {name!r}"
    return [{"sample_id": sid, "score": None, "group": None, "reason": reason, "item": None,
             "suggested": None} for sid, label in snap.labels.items() if label == name]


def _unreviewed(snap: _Snapshot) -> list[dict]:
    return [{"sample_id": sid, "score": None, "group": None, "reason": "not yet reviewed",
             "item": None, "suggested": None}
            for sid in snap.labels if sid not in snap.reviewed]


def _tags(snap: _Snapshot) -> list[dict]:
    """The flagged cells of the newest multi-label cleaning run, most confident first; each
    is an item of that run's plan, shown with the sample's tags as they are now."""
    from smartset.clean.store import tag_issues
    from smartset.review.plans import describe_action

    cells = tag_issues(snap.ws)
    if not cells:
        return []
    from smartset.tags import read_tags

    now_tags = read_tags(snap.ws)
    entries = []
    for cell in cells:
        if not snap.ok(cell["sample_id"]):
            continue
        kind = "add_tag" if cell["kind"] == "missing" else "remove_tag"
        action = {"id": cell["action_id"], "action": kind, "value": cell["class"],
                  "detector": "confident", "score": cell["score"], "reason": cell["reason"]}
        entries.append({"sample_id": cell["sample_id"], "score": cell["score"],
                        "group": cell["kind"], "item": cell["action_id"],
                        "reason": describe_action(action),
                        "suggested": f"{'+' if kind == 'add_tag' else '−'} {cell['class']}",
                        "tags": sorted(now_tags.get(cell["sample_id"], ()))})
    return entries


def tags_plan(ws) -> str | None:
    """The name of the plan behind the ``tags`` queue (the newest multi-label cleaning
    run's), or None."""
    from smartset.clean.store import newest_tag_run

    run = newest_tag_run(ws)
    return None if run is None else f"clean.plan.{run}"


def _plan(snap: _Snapshot, name: str) -> list[dict]:
    from smartset.review.plans import describe_action, load_plan

    plan = load_plan(snap.ws, name)
    entries = []
    for action in plan["actions"]:
        sid = action.get("sample_id")
        entries.append({"sample_id": sid if snap.ok(sid) else None,
                        "score": action.get("score"), "group": action.get("action"),
                        "reason": describe_action(action), "item": action["id"],
                        "suggested": (action.get("value") if action.get("action") == "relabel"
                                      else None)})
    return entries


def queue_entries(ws, queue: str, *, _snapshot: _Snapshot | None = None) -> list[dict]:
    """The entries of ``queue`` in review order: dicts with ``sample_id`` (None for a plan
    item about no single sample), ``reason``, ``score``, ``group`` (duplicate set, issue
    kind or plan action), ``item`` (plan item id) and ``suggested`` (a suggested label)."""
    snap = _snapshot or _Snapshot(ws)
    if queue == "suspicious":
        return _suspicious(snap)
    if queue == "atypical":
        return _atypical(snap)
    if queue == "duplicates":
        return _duplicates(snap)
    if queue == "unreviewed":
        return _unreviewed(snap)
    if queue == "unlabeled":
        return _class(snap, None)
    if queue == TAGS_QUEUE:
        return _tags(snap)
    kind, sep, name = queue.partition(":")
    if sep and kind == "audit" and name in _audit_kinds(snap):
        return _audit(snap, name)
    if sep and kind == "class" and name in set(snap.labels.values()):
        return _class(snap, name)
    if sep and kind == "plan":
        from smartset.review.plans import plan_names

        if name in plan_names(ws):
            return _plan(snap, name)
    raise QueueNotFoundError(f"No review queue {queue!r}. Queues: "
                             f"{', '.join(q['id'] for q in list_queues(ws, _snapshot=snap))}.")


def _info(snap: _Snapshot, queue_id: str, entries: list[dict]) -> dict:
    kind, _, name = queue_id.partition(":")
    info = {"id": queue_id, "kind": kind if kind != "unlabeled" else "class",
            "total": len(entries), "reviewed": 0, "hint": None}
    if kind == TAGS_QUEUE:  # items of a plan: decided with y / n, as a plan's
        from smartset.review.plans import plan_decisions

        plan = tags_plan(snap.ws)
        decided = plan_decisions(snap.ws, plan) if plan else {}
        info.update(kind="plan", plan=plan, title="Suspicious tags" + _weak_tags(snap.ws, plan),
                    reviewed=sum(1 for e in entries if e["item"] in decided),
                    hint=None if entries else (TAGS_HINT if plan is None else
                                               "The newest multi-label cleaning flagged no "
                                               "tag."))
    elif kind == "plan":
        from smartset.review.plans import plan_decisions

        decided = plan_decisions(snap.ws, name)
        info.update(title=f"Plan {name}{_trust_note(snap.ws, name)}",
                    reviewed=sum(1 for e in entries if e["item"] in decided))
    elif kind == "unreviewed":  # of all available samples, how many are reviewed
        info.update(title="Not yet reviewed", total=len(snap.labels),
                    reviewed=sum(1 for sid in snap.labels if sid in snap.reviewed),
                    hint="Every sample has been reviewed." if not entries else None)
    else:
        title = {"suspicious": "Suspicious labels", "duplicates": "Duplicate sets",
                 "atypical": "Far from their class (z-score)",
                 "unlabeled": "Unlabeled", "audit": f"Audit: {name.replace('_', ' ')}",
                 "class": f"Class {name}"}[kind]
        info.update(title=title,
                    reviewed=sum(1 for e in entries if e["sample_id"] in snap.reviewed))
        if not entries and kind == "suspicious":
            info["hint"] = CLEAN_HINT
        elif not entries and kind == "duplicates":
            info["hint"] = (AUDIT_HINT if snap.audit_run is None
                            else "The newest audit found no duplicates.")
    return info


def _weak_tags(ws, name: str | None) -> str:
    """For the suspicious tags' header: the classes the multi-label plan calls weak, or ''."""
    from smartset.review.plans import PlanError, load_plan

    if name is None:
        return ""
    try:
        report = (load_plan(ws, name).get("params") or {}).get("report") or {}
    except (PlanError, OSError, ValueError):
        return ""
    weak, rows = report.get("weak") or {}, report.get("classes") or {}
    if not weak:
        return ""
    short = [f"'{c}' AP {rows[c]['ap']:.2f}" if (rows.get(c) or {}).get("ap") is not None
             else f"'{c}'" for c in weak]  # the reasons in full: the plan, the CLI
    return f" (weak: {', '.join(short)})"


def _trust_note(ws, name: str) -> str:
    """For a plan queue's header: the classes its trust section calls weak, or ''."""
    from smartset.clean.trust import THRESHOLDS, short_reason
    from smartset.review.plans import PlanError, load_plan

    try:
        trust = load_plan(ws, name).get("trust") or {}
    except (PlanError, OSError, ValueError):
        return ""
    weak = trust.get("weak") or []
    if not weak:
        return " (model trusted on every class)" if trust.get("classes") else ""
    parts = [f"'{c}': {short_reason(trust['classes'][c], trust.get('thresholds', THRESHOLDS))}"
             for c in weak]
    return f" (WEAK for {', '.join(parts)}: review its suggestions, do not trust them)"


def queue(ws, queue_id: str) -> tuple[dict, list[dict]]:
    """``(info, entries)`` of one queue; ``info`` as in :func:`list_queues`."""
    snap = _Snapshot(ws)
    entries = queue_entries(ws, queue_id, _snapshot=snap)
    return _info(snap, queue_id, entries), entries


def list_queues(ws, *, _snapshot: _Snapshot | None = None) -> list[dict]:
    """Every queue of the workspace: ``id``, ``title``, ``kind``, ``total``, ``reviewed``
    (how many of its entries are reviewed; for ``unreviewed``: of all samples) and
    ``hint`` (what to run when it is empty)."""
    from smartset.review.plans import plan_names

    snap = _snapshot or _Snapshot(ws)
    atypical = ["atypical"] if any(i["kind"] == "atypical" for i in snap.issues) else []
    tags = [TAGS_QUEUE] if tags_plan(ws) is not None else []
    ids = ["suspicious", *atypical, *tags, "duplicates",
           *(f"audit:{k}" for k in _audit_kinds(snap))]
    queues = [_info(snap, q, queue_entries(ws, q, _snapshot=snap)) for q in ids]
    # classes and "not yet reviewed": counted in one pass, not listed
    totals: dict[str | None, list[int]] = {}
    for sid, label in snap.labels.items():
        counts = totals.setdefault(label, [0, 0])
        counts[0] += 1
        counts[1] += sid in snap.reviewed
    for name in sorted(n for n in totals if n is not None):
        queues.append({"id": f"class:{name}", "kind": "class", "title": f"Class {name}",
                       "total": totals[name][0], "reviewed": totals[name][1], "hint": None})
    if None in totals:
        queues.append({"id": "unlabeled", "kind": "class", "title": "Unlabeled",
                       "total": totals[None][0], "reviewed": totals[None][1], "hint": None})
    reviewed = sum(r for _, r in totals.values())
    queues.append({"id": "unreviewed", "kind": "unreviewed", "title": "Not yet reviewed",
                   "total": len(snap.labels), "reviewed": reviewed,
                   "hint": "Every sample has been reviewed." if reviewed == len(snap.labels)
                   else None})
    from smartset.review.plans import PlanError

    for name in plan_names(ws):
        try:
            queues.append(_info(snap, f"plan:{name}",
                                queue_entries(ws, f"plan:{name}", _snapshot=snap)))
        except PlanError as error:  # one unreadable plan does not hide the other queues
            queues.append({"id": f"plan:{name}", "kind": "plan", "title": f"Plan {name}",
                           "total": 0, "reviewed": 0, "hint": str(error)})
    return queues
