"""The audit's findings as other stages read them: typed readers over the tables the audit
owns (``audit_findings``, and the audit runs in ``runs``).

Which audit do later stages read? The **reference audit**: the newest finished audit that
was not an experiment. An audit is an experiment when it changes a threshold or a
neighbour setting, or writes its report outside the workspace
(:func:`smartset.audit.audit` decides, ``reference=True/False`` overrides). An experiment
is recorded and reported like any audit, but the hold-out and folds of ``learn``, the
duplicate actions of ``clean`` and the review app's queues keep reading the reference
audit, and say which run that is. Before, an experiment with a lower near-duplicate
threshold replaced the findings every stage read (the next ``clean`` proposed 794 duplicate
actions).
"""

from __future__ import annotations

import json

import pandas as pd

__all__ = ["reference_run", "findings", "duplicate_sets", "write_findings", "DUPLICATE_KINDS",
           "FINDING_COLUMNS"]

#: the columns of an ``audit_findings`` row, as :func:`write_findings` takes them
FINDING_COLUMNS = ("run_id", "version", "kind", "sample_id", "score", "threshold", "reason",
                   "grp")


def write_findings(con, rows) -> None:
    """Inside a catalog write: store findings (tuples in :data:`FINDING_COLUMNS` order;
    the annotation audit of the detection stage writes its own here too)."""
    con.executemany(f"INSERT INTO audit_findings({', '.join(FINDING_COLUMNS)}) VALUES "
                    f"({', '.join('?' * len(FINDING_COLUMNS))})", rows)

DUPLICATE_KINDS = ("exact_duplicate", "near_duplicate")


def reference_run(ws) -> int | None:
    """The id of the newest finished audit that is not an experiment, or None."""
    rows = ws.catalog.query(
        "SELECT r.id, r.config FROM runs r WHERE r.status = 'done' AND EXISTS "
        "(SELECT 1 FROM audit_findings f WHERE f.run_id = r.id) ORDER BY r.id DESC")
    for run_id, config in rows:
        try:
            settings = json.loads(config) if config else {}
        except ValueError:
            settings = {}
        if settings.get("reference", True):  # runs before this rule: all references
            return int(run_id)
    return None


def findings(ws, *, kinds=None, run: int | None = None, sample_ids=None) -> pd.DataFrame:
    """Findings of audit ``run`` (default: :func:`reference_run`) as a DataFrame with
    ``run_id``, ``kind``, ``sample_id`` (None for data-set findings), ``score``,
    ``threshold``, ``reason``, ``grp``, in the order they were found. ``kinds`` and
    ``sample_ids`` restrict the rows."""
    columns = ["run_id", "kind", "sample_id", "score", "threshold", "reason", "grp"]
    run = reference_run(ws) if run is None else int(run)
    if run is None:
        return pd.DataFrame(columns=columns)
    sql = ("SELECT run_id, kind, sample_id, score, threshold, reason, grp FROM audit_findings"
           " WHERE run_id = ?")
    params: list = [run]
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
        params += kinds
    if sample_ids is not None:
        wanted = [str(s) for s in sample_ids]
        if len(wanted) <= 500:
            sql += f" AND sample_id IN ({', '.join('?' * len(wanted))})"
            params += wanted
    frame = pd.DataFrame([tuple(r) for r in ws.catalog.query(sql + " ORDER BY id",
                                                             tuple(params))], columns=columns)
    if sample_ids is not None and len(wanted) > 500:
        frame = frame[frame["sample_id"].isin(set(wanted))].reset_index(drop=True)
    # None, never NaN, where a finding has no score or threshold (JSON has no NaN)
    return frame.astype(object).where(frame.notna(), None)


def duplicate_sets(ws, *, run: int | None = None) -> dict[tuple[str, str], list[str]]:
    """``{(kind, group): [sample ids, sorted]}``: the exact and near duplicate sets of audit
    ``run`` (default: the reference audit)."""
    found = findings(ws, kinds=DUPLICATE_KINDS, run=run)
    out: dict[tuple[str, str], list[str]] = {}
    for kind, grp, sample_id in zip(found["kind"], found["grp"], found["sample_id"]):
        if sample_id is not None:
            out.setdefault((kind, grp), []).append(sample_id)
    return {key: sorted(members) for key, members in out.items()}
