"""The whole ranking of suspicious labels, on one scale, for a person to go down.

A person's time is the budget: the first 100 items a person looks at must be the 100 most
suspicious samples, not only the ones the noise estimate flagged. So :func:`make_plan`
writes a ``label_issues`` row for *every* labeled sample, each scored on one scale,
``1 - posterior of the given label`` (the noise-corrected consensus of the model and the
neighbours, 0-1, higher = more suspicious): the flagged ones under their detector
(``wrong_label``, ``ambiguous``), the rest as ``unflagged``. :func:`ranking` reads them
back in that order, with file paths; ``smartset clean --top N`` prints them and the review
app's ``suspicious`` queue shows them in the same order.

Images far from their class (detector ``atypical``) are in the ranking at their consensus
score too, but they are *also* listed apart (:func:`atypical_list`, review queue
``atypical``), ranked by their robust z-score. The z-score is not put on the 0-1 scale:
it measures how far an image lies from its class, not how likely its label is wrong (on a
pretrained backbone's embeddings it mostly means "shows none of the classes", a question
the 0-1 score cannot answer because the model still prefers the given class), and any
map from z to 0-1 would be a calibration nobody has measured.
"""

from __future__ import annotations

import json
from pathlib import Path

from smartset.clean.store import label_issues, newest_clean_run, plan_path

__all__ = ["ranking", "atypical_list", "array_rows", "newest_clean_run"]

_MARKER = ".smartset-export.json"  # written by ingest/_numpy.py beside the exported PNGs


def array_rows(paths) -> dict[str, tuple[str, int]]:
    """``{path: (archive, row)}`` for the paths that are PNGs a NumPy archive was exported
    to at ingest (``NNNN.png`` beside a ``.smartset-export.json`` marker): the archive it
    came from and the row of its ``images`` array."""
    found: dict[str, tuple[str, int]] = {}
    sources: dict[Path, str | None] = {}
    for path in paths:
        path = Path(path)
        folder = path.parent
        if folder not in sources:
            marker = folder / _MARKER
            try:
                sources[folder] = json.loads(marker.read_text(encoding="utf-8")).get("source")
            except (OSError, ValueError):
                sources[folder] = None
        if sources[folder] and path.stem.isdigit():
            found[str(path)] = (sources[folder], int(path.stem))
    return found


def _plan_actions(ws, run_id: int) -> dict[str, dict]:
    """``{sample_id: first action}`` of the plan of clean run ``run_id``, if on disk."""
    path = plan_path(ws, f"clean.plan.{run_id}")
    if path is None:
        return {}
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    found: dict[str, dict] = {}
    for action in plan.get("actions", []):
        sid = action.get("sample_id")
        if sid is not None and sid not in found:
            found[sid] = action
    return found


def ranking(ws, *, run: int | None = None, top: int | None = None) -> list[dict]:
    """Every labeled sample of clean run ``run`` (default the newest), most suspicious
    first: dicts with ``rank`` (1-based), ``sample_id``, ``relpath``, ``path``, ``array``
    and ``row`` (for a sample ingested from a NumPy archive, else None), ``score`` (0-1,
    ``1 - posterior of the label``), ``detector`` (``consensus``, ``ambiguity``,
    ``atypical`` or ``-`` when nothing flagged it), ``flagged``, ``label``,
    ``suggested`` (the most likely other class), ``action`` and ``action_id`` (what the
    plan proposes, or None). ``top``: only the first ``top``."""
    run = newest_clean_run(ws) if run is None else run
    if run is None:
        return []
    rows = label_issues(ws, run)
    samples = ws.samples(include_excluded=True)
    where = dict(zip(samples["id"], zip(samples["relpath"], samples["path"])))
    detector_of = {"wrong_label": "consensus", "ambiguous": "ambiguity",
                   "atypical": "atypical"}
    actions = _plan_actions(ws, run)
    out, seen = [], set()
    for row in rows:
        sid = row["sample_id"]
        if sid in seen or sid not in where:
            continue
        seen.add(sid)
        evidence = row["evidence"]
        action = actions.get(sid)
        relpath, path = where[sid]
        out.append({"rank": len(out) + 1, "sample_id": sid, "relpath": relpath,
                    "path": path, "array": None, "row": None,
                    "score": round(float(row["score"]), 4),
                    "detector": detector_of.get(row["kind"], "-"),
                    "flagged": row["kind"] != "unflagged", "label": row["label"],
                    "suggested": evidence.get("suggested"),
                    "action": None if action is None else action["action"],
                    "action_id": None if action is None else action["id"]})
        if top is not None and len(out) >= top:
            break
    rows_of = array_rows(r["path"] for r in out)
    for entry in out:
        if entry["path"] in rows_of:
            entry["array"], entry["row"] = rows_of[entry["path"]]
    return out


def atypical_list(ws, *, run: int | None = None, top: int | None = None) -> list[dict]:
    """The images far from their class of clean run ``run`` (default the newest), most
    atypical first (robust z-score, a separate scale: see the module notes): dicts with
    ``sample_id``, ``relpath``, ``path``, ``label``, ``z``, ``similarity``, ``typical``
    and ``score`` (the sample's 0-1 suspicion score in :func:`ranking`)."""
    run = newest_clean_run(ws) if run is None else run
    if run is None:
        return []
    rows = label_issues(ws, run, kinds=["atypical"])
    samples = ws.samples(include_excluded=True)
    where = dict(zip(samples["id"], zip(samples["relpath"], samples["path"])))
    out = []
    for row in rows:
        if row["sample_id"] not in where:
            continue
        ev = row["evidence"]
        relpath, path = where[row["sample_id"]]
        out.append({"sample_id": row["sample_id"], "relpath": relpath, "path": path,
                    "label": row["label"], "z": ev.get("atypical_z"),
                    "similarity": ev.get("class_similarity"),
                    "typical": ev.get("class_similarity_typical"),
                    "score": round(float(row["score"]), 4)})
    out.sort(key=lambda e: (-(e["z"] or 0.0), e["sample_id"]))
    return out if top is None else out[:top]
