"""The cleaning-plan contract, once: its format, its action kinds, its error, reading and
checking a plan file, the plans a workspace registered, and one line that says what an item
does. The cleaning stage writes and applies plans (:mod:`smartset.clean.plan`); the review
app lists and decides them item by item (:mod:`smartset.review.plans`); both read them here.

Plan format ``smartset.clean-plan/1``::

    {"format": "smartset.clean-plan/1", "run_id": int, "created_at": str,
     "version": str | null, "params": {...}, "trust": {...} (smartset.clean.trust),
     "actions": [{"id": "a0001", "action": "relabel" | "exclude" | "multi_label" |
                  "merge_classes" | "duplicate_of" | "add_tag" | "remove_tag",
                  "sample_id": str | null,
                  "value": new label | [classes] | other sample id | {"from": a, "into": b}
                           | a tag (class name),
                  "detector": str, "score": float, "reason": str, "evidence": {...}}]}

``add_tag`` / ``remove_tag`` (multi-label data, ``smartset clean --multi-label``): give the
sample tag ``value`` it lacks, or take away one it has; ``score`` (0-1) is how sure the
model is (its out-of-fold probability of the tag, or of its absence), ``evidence`` holds
the tags the plan saw and the class's thresholds. They are applied as tag events
(:mod:`smartset.tags`), undone like the label actions.
"""

from __future__ import annotations

import json
from pathlib import Path

from smartset.clean.store import plan_names, plan_path
from smartset.errors import SmartsetError

__all__ = ["PLAN_FORMAT", "ACTIONS", "TAG_ACTIONS", "PlanError", "load_plan", "check_plan", "plan_names",
           "read_plan", "describe_action"]

PLAN_FORMAT = "smartset.clean-plan/1"
ACTIONS = ("relabel", "exclude", "multi_label", "merge_classes", "duplicate_of", "add_tag",
           "remove_tag")
#: the actions that change a sample's multi-label tags (tag events, not labels or marks)
TAG_ACTIONS = ("add_tag", "remove_tag")


class PlanError(SmartsetError, ValueError):
    """A cleaning plan cannot be read or applied as it is, or an item of it does not exist."""


def load_plan(path: str | Path) -> dict:
    """Read and check a plan file (format ``smartset.clean-plan/1``)."""
    path = Path(path)
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanError(f"No plan file at '{path}'. Make one with 'smartset clean'.") from None
    except json.JSONDecodeError as error:
        raise PlanError(f"'{path}' is not valid JSON ({error}); was it cut short?") from None
    except RecursionError:
        raise PlanError(f"'{path}' nests JSON too deeply to be a plan. Make a new one with "
                        f"'smartset clean'.") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise PlanError(f"Cannot read plan file '{path}' ({error}). Make a new one with "
                        f"'smartset clean'.") from None
    check_plan(plan, str(path))
    return plan


def check_plan(plan, where: str) -> None:
    """Refuse (:class:`PlanError`, naming ``where``) anything that is not a plan."""
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        got = plan.get("format") if isinstance(plan, dict) else type(plan).__name__
        raise PlanError(f"{where} is not a cleaning plan: expected format {PLAN_FORMAT!r}, got "
                        f"{got!r}.")
    seen = set()
    actions = plan.get("actions", [])
    if not isinstance(actions, list):
        raise PlanError(f"{where}: 'actions' must be a list, got {type(actions).__name__}.")
    for action in actions:
        if not isinstance(action, dict) or not isinstance(action.get("id"), (str, int, type(None))):
            raise PlanError(f"{where}: every action must be an object with an 'id', got "
                            f"{str(action)[:60]}.")
        if action.get("action") not in ACTIONS:
            raise PlanError(f"Action {action.get('id')!r} in {where} has unknown kind "
                            f"{action.get('action')!r}; kinds: {', '.join(ACTIONS)}.")
        if action["action"] in TAG_ACTIONS:
            _check_tag_action(action, where)
        if action.get("id") in seen:
            raise PlanError(f"Action id {action.get('id')!r} appears twice in {where}.")
        seen.add(action.get("id"))


def _check_tag_action(action: dict, where: str) -> None:
    """An ``add_tag`` / ``remove_tag`` item names one sample, one tag and how sure it is."""
    problem = None
    if not isinstance(action.get("sample_id"), str) or not action["sample_id"]:
        problem = "needs the 'sample_id' of the image"
    elif not isinstance(action.get("value"), str) or not action["value"].strip():
        problem = "needs the tag (a class name) as its 'value'"
    elif (isinstance(action.get("score"), bool)
          or not isinstance(action.get("score"), (int, float))
          or not 0 <= action["score"] <= 1):
        problem = "needs a 'score' between 0 and 1 (how sure the model is)"
    if problem:
        raise PlanError(f"Action {action.get('id')!r} ({action['action']}) in {where} {problem}"
                        f"; got {str({k: action.get(k) for k in ('sample_id', 'value', 'score')})[:120]}."
                        f" Make the plan anew with 'smartset clean --multi-label'.")


def read_plan(ws, name: str) -> dict:
    """The plan registered under ``name`` (as :func:`load_plan` reads its file)."""
    path = plan_path(ws, name)
    if path is None:
        raise PlanError(f"No cleaning plan {name!r}. Plans: "
                        f"{', '.join(plan_names(ws)) or 'none (run smartset clean)'}.")
    try:
        return load_plan(path)
    except PlanError as error:
        raise PlanError(f"Cleaning plan {name!r} cannot be read: {error} Run 'smartset clean' "
                       f"again to write it anew.") from None


def describe_action(action: dict) -> str:
    """One line: what the item does and why."""
    kind, value = action["action"], action.get("value")
    what = {"relabel": f"relabel as {value!r}",
            "exclude": "exclude",
            "multi_label": f"mark multi-label {value}",
            "duplicate_of": f"mark duplicate of {value}",
            "merge_classes": f"merge classes {value}",
            "add_tag": f"add tag {value!r}",
            "remove_tag": f"remove tag {value!r}"}[kind]
    why = ", ".join(str(p) for p in (action.get("detector"),
                                      None if action.get("score") is None
                                      else f"score {float(action['score']):.2f}",
                                      action.get("reason")) if p)
    return f"{action['id']}: {what}" + (f" ({why})" if why else "")
