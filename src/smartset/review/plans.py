"""Cleaning plans in review: list them, show their items, accept or reject one at a time.

A plan is a JSON file (format ``smartset.clean-plan/1``) registered in the catalog's
``artifacts`` with kind ``clean_plan``; its ``actions`` each have an ``id``, an ``action``
(``relabel``, ``exclude``, ``multi_label``, ``duplicate_of``, ``merge_classes``,
``add_tag``, ``remove_tag``), a ``sample_id``, a ``value`` and why (``detector``, ``score``,
``reason``).

Accepting an item applies it with :func:`smartset.clean.apply_plan` (a relabel the sample
no longer fits is a conflict), as events of origin ``review``. The plan's contract (format,
action kinds, :class:`PlanError`, reading) is the cleaning stage's, in
:mod:`smartset.clean.plan_file`: one contract, re-exported here. Rejecting an item of one sample
appends an "accept the current label" event (a person looked and kept it); rejecting an
``add_tag`` / ``remove_tag`` item appends a tag event keeping the sample's tags as they are,
its reason naming the item (who looked, when, and what they turned down). Every decision
is also kept in ``reports/review/plans/NAME.json`` (written atomically, after the catalog
transaction; a crash between the two leaves the item undecided, its events applied, and
accepting it again changes nothing more).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from smartset._atomic import write_text
from smartset.catalog import now
from smartset.clean.plan_file import (ACTIONS, PLAN_FORMAT, TAG_ACTIONS, PlanError,
                                      describe_action, plan_names, read_plan)

__all__ = ["PlanError", "plan_names", "load_plan", "plan_decisions", "describe_action",
           "decide_item", "forget_decision", "PLAN_FORMAT", "PLAN_ACTIONS"]

PLAN_ACTIONS = ACTIONS
#: a registered plan by its name (the review app names plans, the cleaning stage files)
load_plan = read_plan


def _state_path(ws, name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:80]
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return ws.reports_dir / "review" / "plans" / f"{safe}-{digest}.json"


def plan_decisions(ws, name: str) -> dict[str, dict]:
    """Decided items of plan ``name``: item id -> ``decision`` (accepted, rejected),
    ``author``, ``time``, ``label_events``, ``mark_events``."""
    path = _state_path(ws, name)
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8")).get("decisions", {})


def _save_decisions(ws, name: str, decisions: dict) -> None:
    write_text(_state_path(ws, name), json.dumps(
        {"plan": name, "updated_at": now(), "decisions": decisions}, indent=1))


def _apply(ws, plan: dict, action: dict, *, author) -> tuple[list[int], list[int], list[int]]:
    """Apply one item with :func:`smartset.clean.apply_plan`. Its events carry the stage's
    reason (``detector: reason [item id]``); the decision file records the plan and the
    queue."""
    from smartset.clean import apply_plan
    from smartset.errors import ConflictError
    from smartset.review.queues import REVIEW_ORIGIN

    result = apply_plan(ws, plan, only=[action["id"]], origin=REVIEW_ORIGIN, author=author)
    why = (result.get("skipped") or {}).get(action["id"])
    if why and why.startswith("stale"):
        raise ConflictError(f"Item {action['id']} was not applied: the sample is {why[7:]} "
                            f"(it changed since the plan was made). Decide on it directly.",
                            sample_id=action.get("sample_id") or "", expected=None,
                            current={"item": action["id"], "skipped": why})
    if why and why != "already":
        raise PlanError(f"Item {action['id']} was not applied: {why}.")
    done = (result.get("applied") or {}).get(action["id"], {})
    return (list(done.get("label_events", [])), list(done.get("marks", [])),
            list(done.get("tag_events", [])))


def decide_item(ws, name: str, item: str, decision: str, *, author: str, queue: str) -> dict:
    """Accept (apply) or reject item ``item`` of plan ``name``; returns ``label_events``,
    ``mark_events``, ``tag_events``, ``decision`` and (for a tag item) the sample's
    ``tags`` after it. Run it on the workspace's writer."""
    from smartset.review.actions import decide

    if decision not in ("accept", "reject"):
        raise PlanError(f"A plan item is accepted or rejected, not {decision!r}.")
    plan = load_plan(ws, name)
    action = next((a for a in plan["actions"] if str(a["id"]) == item), None)
    if action is None:
        raise PlanError(f"Cleaning plan {name!r} has no item {item!r}.")
    decisions = plan_decisions(ws, name)
    if item in decisions:
        from smartset.errors import ConflictError

        done = decisions[item]
        raise ConflictError(f"Item {item} of plan {name!r} was {done['decision']} by "
                            f"{done['author']} at {done['time'][:19]}; undo that first.",
                            sample_id=action.get("sample_id") or "", expected=None,
                            current={"item": item, **done})
    tag_events: list[int] = []
    if decision == "accept":
        label_events, mark_events, tag_events = _apply(ws, plan, action, author=author)
    elif action.get("action") in TAG_ACTIONS:
        from smartset.tags import edit_tags

        sid = action["sample_id"]
        written = edit_tags(ws, {}, keep=[sid], author=author, origin="review",
                            reason=f"queue={queue}: rejected {describe_action(action)}")
        if not isinstance(written[sid], int):
            raise PlanError(f"Item {item} cannot be rejected as a tag event: "
                            f"{written[sid]}.")
        label_events, mark_events, tag_events = [], [], [written[sid]]
    elif action.get("sample_id"):
        result = decide(ws, "accept", action["sample_id"], queue=queue, author=author,
                        note=f"rejected {describe_action(action)}")
        label_events, mark_events = result["label_events"], []
    else:
        label_events, mark_events = [], []
    decisions[item] = {"decision": decision + "ed", "author": author, "time": now(),
                       "label_events": label_events, "mark_events": mark_events,
                       "tag_events": tag_events}
    _save_decisions(ws, name, decisions)
    result = {"decision": decision + "ed", "label_events": label_events,
              "mark_events": mark_events, "tag_events": tag_events, "item": item,
              "plan": name}
    if action.get("action") in TAG_ACTIONS:
        from smartset.tags import read_tags

        result["tags"] = {action["sample_id"]: sorted(
            read_tags(ws).get(action["sample_id"], ()))}
    return result


def forget_decision(ws, name: str, item: str) -> None:
    """Drop the decision of an item (after its events were undone)."""
    decisions = plan_decisions(ws, name)
    if decisions.pop(item, None) is not None:
        _save_decisions(ws, name, decisions)
