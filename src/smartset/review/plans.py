"""Cleaning plans in review: list them, show their items, accept or reject one at a time.

A plan is a JSON file (format ``smartset.clean-plan/1``) registered in the catalog's
``artifacts`` with kind ``clean_plan``; its ``actions`` each have an ``id``, an ``action``
(``relabel``, ``exclude``, ``multi_label``, ``duplicate_of``, ``merge_classes``), a
``sample_id``, a ``value`` and why (``detector``, ``score``, ``reason``).

Accepting an item applies it with :func:`smartset.clean.apply_plan` when the cleaning stage
provides it (a relabel the sample no longer fits is a conflict), else with the workspace's
own methods; either way as events of origin ``review``. Rejecting an item of one sample
appends an "accept the current label" event (a person looked and kept it). Every decision
is also kept in ``reports/review/plans/NAME.json`` (written atomically, after the catalog
transaction; a crash between the two leaves the item undecided, its events applied, and
accepting it again changes nothing more).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from pathlib import Path

from smartset._atomic import write_text
from smartset.catalog import now
from smartset.errors import SmartsetError

__all__ = ["PlanError", "plan_names", "load_plan", "plan_decisions", "describe_action",
           "decide_item", "forget_decision", "PLAN_FORMAT", "PLAN_ACTIONS"]

PLAN_FORMAT = "smartset.clean-plan/1"
PLAN_ACTIONS = ("relabel", "exclude", "multi_label", "duplicate_of", "merge_classes")


class PlanError(SmartsetError, ValueError):
    """A cleaning plan cannot be read, or an item of it does not exist."""


def plan_names(ws) -> list[str]:
    """Names of the registered cleaning plans, newest first."""
    return [r[0] for r in ws.catalog.query(
        "SELECT name FROM artifacts WHERE kind = 'clean_plan' ORDER BY created_at DESC, name")]


def load_plan(ws, name: str) -> dict:
    rows = ws.catalog.query("SELECT path FROM artifacts WHERE kind = 'clean_plan' AND name = ?",
                            (name,))
    if not rows:
        raise PlanError(f"No cleaning plan {name!r}. Plans: "
                        f"{', '.join(plan_names(ws)) or 'none (run smartset clean)'}.")
    path = Path(rows[0][0])
    path = path if path.is_absolute() else ws.path / path
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise PlanError(f"Cleaning plan {name!r} ('{path}') cannot be read: {error}. Run "
                        f"'smartset clean' again to write it anew.") from None
    if not isinstance(plan, dict) or not str(plan.get("format", "")).startswith(
            "smartset.clean-plan/") or not isinstance(plan.get("actions"), list):
        raise PlanError(f"'{path}' is not a cleaning plan (expected format {PLAN_FORMAT!r} with "
                        f"a list of actions).")
    for action in plan["actions"]:
        if (not isinstance(action, dict) or "id" not in action
                or action.get("action") not in PLAN_ACTIONS):
            raise PlanError(f"Cleaning plan {name!r} has an item that is not one of "
                            f"{', '.join(PLAN_ACTIONS)}: {str(action)[:200]}")
    return plan


def describe_action(action: dict) -> str:
    """One line: what the item does and why."""
    kind, value = action["action"], action.get("value")
    what = {"relabel": f"relabel as {value!r}",
            "exclude": "exclude",
            "multi_label": f"mark multi-label {value}",
            "duplicate_of": f"mark duplicate of {value}",
            "merge_classes": f"merge classes {value}"}[kind]
    why = ", ".join(str(p) for p in (action.get("detector"),
                                      None if action.get("score") is None
                                      else f"score {float(action['score']):.2f}",
                                      action.get("reason")) if p)
    return f"{action['id']}: {what}" + (f" ({why})" if why else "")


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


def _merge_value(value) -> tuple[list[str], str]:
    if isinstance(value, dict):
        sources = value.get("from") or value.get("classes") or value.get("sources")
        into = value.get("into") or value.get("to") or value.get("target")
        if isinstance(sources, str):
            sources = [sources]
        if sources and isinstance(into, str):
            return [str(s) for s in sources], into
    if isinstance(value, list) and len(value) >= 2 and all(isinstance(v, str) for v in value):
        return value[:-1], value[-1]
    raise PlanError(f"merge_classes item value {value!r} names no classes to merge: expected "
                    f"{{'from': [classes], 'into': class}}.")


def _apply_own(ws, action: dict, *, author, reason) -> tuple[list[int], list[int]]:
    from smartset.review.actions import merge_classes
    from smartset.review.queues import REVIEW_ORIGIN

    kind, sid, value = action["action"], action.get("sample_id"), action.get("value")
    options = {"author": author, "reason": reason, "origin": REVIEW_ORIGIN}
    if kind == "relabel":
        return ws.relabel(sid, value, **options), []
    if kind == "exclude":
        return [], ws.mark(sid, "exclude", **options)
    if kind in ("multi_label", "duplicate_of"):
        return [], ws.mark(sid, kind, value, **options)
    sources, into = _merge_value(value)
    merged = merge_classes(ws, sources, into, queue=None, author=author, reason=reason)
    return merged["label_events"], []


def _apply_with_clean(ws, plan: dict, action: dict, *, author):
    """``smartset.clean.apply_plan`` when the cleaning stage provides it (None otherwise).
    Its events carry the stage's reason (``detector: reason [item id]``); the decision file
    records the plan and the queue."""
    try:
        from smartset.clean import apply_plan
    except ImportError:
        return None
    accepted = inspect.signature(apply_plan).parameters
    if "only" not in accepted or "origin" not in accepted:
        return None
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
    return list(done.get("label_events", [])), list(done.get("marks", []))


def decide_item(ws, name: str, item: str, decision: str, *, author: str, queue: str) -> dict:
    """Accept (apply) or reject item ``item`` of plan ``name``; returns ``label_events``,
    ``mark_events`` and ``decision``. Run it on the workspace's writer."""
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
    reason = f"queue={queue}: {decision}ed {describe_action(action)}"
    if decision == "accept":
        applied = _apply_with_clean(ws, plan, action, author=author)
        label_events, mark_events = (applied if applied is not None else
                                     _apply_own(ws, action, author=author, reason=reason))
    elif action.get("sample_id"):
        result = decide(ws, "accept", action["sample_id"], queue=queue, author=author,
                        note=f"rejected {describe_action(action)}")
        label_events, mark_events = result["label_events"], []
    else:
        label_events, mark_events = [], []
    decisions[item] = {"decision": decision + "ed", "author": author, "time": now(),
                       "label_events": label_events, "mark_events": mark_events}
    _save_decisions(ws, name, decisions)
    return {"decision": decision + "ed", "label_events": label_events,
            "mark_events": mark_events, "item": item, "plan": name}


def forget_decision(ws, name: str, item: str) -> None:
    """Drop the decision of an item (after its events were undone)."""
    decisions = plan_decisions(ws, name)
    if decisions.pop(item, None) is not None:
        _save_decisions(ws, name, decisions)
