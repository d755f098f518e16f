"""What the review app shows about samples: the grid's per-sample state, and the focus
view's model predictions, nearest neighbours (own class and other classes), lineage of
augmented samples, audit findings, label issues and history, and the detection boxes and
masks drawn over the image.

Read-only: every function reads on its own connections, from any thread.
"""

from __future__ import annotations

import json
import threading

import numpy as np

from smartset.backbones import DEFAULT_BACKBONE
from smartset.neighbours import top_k
from smartset.review.queues import reviewed_ids

__all__ = ["sample_states", "sample_overlays", "mask_png", "FocusData", "MARK_KINDS", "BACKBONE"]

MARK_KINDS = ("exclude", "multi_label", "duplicate_of")
#: the pretrained backbone whose cached embeddings the focus view's neighbours use
BACKBONE = DEFAULT_BACKBONE
MAX_OVERLAYS = 500
_CHUNK = 500


def _chunks(ids: list[str]):
    for start in range(0, len(ids), _CHUNK):
        yield ids[start:start + _CHUNK]


def sample_states(ws, sample_ids: list[str]) -> dict[str, dict]:
    """Per sample: ``label``, ``label_event_id`` (its version), ``marks`` (kind -> value),
    ``mark_versions`` (kind -> newest mark event id), ``reviewed``, ``relpath``, ``split``,
    ``width``, ``height``, ``format``, ``status``, ``origin_id``, ``sha`` (12 hex digits);
    for a sample with annotations ``boxes``: ``{"count", "categories": {name: n}}`` (most
    frequent first). Unknown ids are left out."""
    ids = list(dict.fromkeys(s for s in sample_ids if isinstance(s, str)))
    states: dict[str, dict] = {}
    query = ws.catalog.query
    for chunk in _chunks(ids):
        marks = ", ".join("?" * len(chunk))
        for r in query(
                f"SELECT s.id, s.relpath, s.split, s.width, s.height, s.format, s.status,"
                f" s.sha256, g.origin_id,"
                f" (SELECT e.id FROM label_events e WHERE e.sample_id = s.id ORDER BY e.id DESC"
                f"  LIMIT 1) AS event_id"
                f" FROM samples s LEFT JOIN lineage g ON g.sample_id = s.id"
                f" WHERE s.id IN ({marks})", tuple(chunk)):
            states[r["id"]] = {
                "sample_id": r["id"], "relpath": r["relpath"], "split": r["split"],
                "width": r["width"], "height": r["height"], "format": r["format"],
                "status": r["status"], "sha": r["sha256"][:12], "origin_id": r["origin_id"],
                "label": None, "label_event_id": r["event_id"], "marks": {},
                "mark_versions": {k: None for k in MARK_KINDS}, "reviewed": False}
        wanted = set(chunk)
        events = [s["label_event_id"] for s in states.values()
                  if s["sample_id"] in wanted and s["label_event_id"] is not None]
        if events:
            for r in query(f"SELECT sample_id, label FROM label_events WHERE id IN "
                           f"({', '.join('?' * len(events))})", tuple(events)):
                states[r["sample_id"]]["label"] = r["label"]
        for r in query(f"SELECT m.sample_id, m.kind, m.id, m.value, m.active FROM sample_marks m"
                       f" JOIN (SELECT MAX(id) AS id FROM sample_marks WHERE sample_id IN"
                       f" ({marks}) GROUP BY sample_id, kind) last ON last.id = m.id",
                       tuple(chunk)):
            state = states.get(r["sample_id"])
            if state is None:
                continue
            state["mark_versions"][r["kind"]] = r["id"]
            if r["active"]:
                state["marks"][r["kind"]] = json.loads(r["value"]) if r["value"] else True
    for sid in reviewed_ids(ws.catalog, list(states)):
        states[sid]["reviewed"] = True
    for chunk in _chunks(list(states)):  # detection/segmentation: the card's box summary
        for r in query(
                f"SELECT a.sample_id, e.category, COUNT(*) AS n FROM annotations a"
                f" JOIN annotation_events e ON e.id = (SELECT MAX(id) FROM annotation_events"
                f" WHERE annotation_id = a.id) WHERE a.sample_id IN"
                f" ({', '.join('?' * len(chunk))}) AND e.deleted = 0"
                f" GROUP BY a.sample_id, e.category ORDER BY a.sample_id, n DESC, e.category",
                tuple(chunk)):
            boxes = states[r["sample_id"]].setdefault("boxes", {"count": 0, "categories": {}})
            boxes["count"] += r["n"]
            boxes["categories"][r["category"]] = r["n"]
    return states


def sample_overlays(ws, sample_id: str) -> list[dict]:
    """The current (not deleted) annotations of ``sample_id`` as the focus view draws them:
    ``annotation_id``, ``event_id`` (its version, for conflict checks), ``kind`` (box,
    polygon, mask), ``category``, ``colour`` (``#rrggbb``, the same per category everywhere),
    ``bbox`` ``[x, y, w, h]`` in pixels, ``polygons`` (for polygons), ``mask`` (True: an RLE
    mask, fetched as a PNG). At most :data:`MAX_OVERLAYS`, largest first."""
    from smartset.detection.draw import category_colour

    rows = ws.catalog.query(
        "SELECT a.id, a.kind, e.category, e.x, e.y, e.w, e.h, e.segmentation, e.id AS event_id"
        " FROM annotations a JOIN annotation_events e ON e.id = (SELECT MAX(id) FROM"
        " annotation_events WHERE annotation_id = a.id) WHERE a.sample_id = ? AND e.deleted = 0"
        " ORDER BY e.w * e.h DESC, a.id LIMIT ?", (sample_id, MAX_OVERLAYS))
    out = []
    for r in rows:
        segmentation = json.loads(r["segmentation"]) if r["segmentation"] else None
        item = {"annotation_id": r["id"], "event_id": r["event_id"], "kind": r["kind"],
                "category": r["category"],
                "colour": "#%02x%02x%02x" % category_colour(r["category"]),
                "bbox": [r["x"], r["y"], r["w"], r["h"]]}
        if isinstance(segmentation, list):
            item["polygons"] = segmentation
        elif isinstance(segmentation, dict):
            item["mask"] = True
        out.append(item)
    return out


def mask_png(ws, annotation_id: str, alpha: int = 115) -> bytes | None:
    """The RLE mask of an annotation as a transparent PNG in its category's colour (None if
    the annotation is unknown or has no RLE mask)."""
    import io

    from PIL import Image

    from smartset.detection import _rle
    from smartset.detection.draw import category_colour

    rows = ws.catalog.query(
        "SELECT e.category, e.segmentation FROM annotation_events e WHERE e.annotation_id = ?"
        " ORDER BY e.id DESC LIMIT 1", (annotation_id,))
    if not rows or not rows[0]["segmentation"]:
        return None
    segmentation = json.loads(rows[0]["segmentation"])
    if not isinstance(segmentation, dict):
        return None
    mask = _rle.decode(segmentation).astype(bool)
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[mask] = (*category_colour(rows[0]["category"]), alpha)
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


class FocusData:
    """The focus view's data for one sample, with the predictions and embeddings cached
    across requests (refreshed when a new run is recorded)."""

    def __init__(self, ws, *, neighbours: int = 6, top: int = 5):
        self.ws = ws
        self.neighbours = neighbours
        self.top = top
        self._lock = threading.Lock()
        self._predictions: tuple[int | None, object] = (-1, None)
        self._embeddings: tuple[int | None, object] = (-1, None)

    def _newest_run(self, command: str | None = None) -> int | None:
        if command is None:
            return self.ws.catalog.query("SELECT MAX(id) FROM runs")[0][0]
        return self.ws.catalog.query("SELECT MAX(id) FROM runs WHERE command = ? AND "
                                     "status = 'done'", (command,))[0][0]

    def predictions(self):
        """``(Predictions, row of each sample id)`` or ``(None, hint)``."""
        from smartset.predictions import PredictionsNotFoundError

        key = self._newest_run()
        with self._lock:
            if self._predictions[0] == key:
                return self._predictions[1]
            try:
                found = self.ws.predictions()
                value = (found, {sid: i for i, sid in enumerate(found.sample_ids)})
            except PredictionsNotFoundError as error:
                value = (None, str(error))
            self._predictions = (key, value)
            return value

    def _embedding_key(self, backbone: str):
        """Changes when the neighbours may: a new audit or other run, samples added or
        removed, or new shards in the backbone's embedding cache (``smartset embed``
        records no run)."""
        from smartset.embeddings import cache_signature

        shards = cache_signature(self.ws, backbone)
        count = self.ws.catalog.query("SELECT COUNT(*) FROM samples")[0][0]
        return (self._newest_run("audit"), self._newest_run(), count, shards)

    def embeddings(self):
        """``(ids, unit vectors, row of each id, source)`` or ``(None, hint)``.

        The pretrained backbone's embeddings (:data:`BACKBONE`) when every sample has them
        cached (``smartset embed``, or any stage that embedded them: ``predict --oof``,
        the audit, ``clean`` on photos); else the audit's pixel embeddings, with a hint
        that says how to get better neighbours. Nothing is computed here: a request
        never waits for a network to embed the data set. ``source``: ``{"kind": "backbone"
        | "audit", "description", "hint"}``."""
        from smartset.audit import embeddings
        from smartset.embeddings import read_embeddings
        from smartset.errors import EmptyDataError

        key = self._embedding_key(BACKBONE)
        with self._lock:
            if self._embeddings[0] == key:
                return self._embeddings[1]
            value = None
            samples = self.ws.samples(include_excluded=True)  # excluded ones are reviewed too
            if "status" in samples.columns:
                samples = samples[samples["status"] == "ok"]
            found = (read_embeddings(self.ws, backbone=BACKBONE, sample_ids=samples["id"],
                                     include_excluded=True) if len(samples) else None)
            if found is not None:
                source = {"kind": "backbone", "backbone": found.backbone,
                          "description": f"{found.describe()} pretrained embeddings",
                          "hint": None}
                value = (found.ids, found.vectors,
                         {str(sid): i for i, sid in enumerate(found.ids)}, source)
            else:
                embed = (f"'smartset embed WORKSPACE' caches {BACKBONE} embeddings, "
                         f"neighbours that know what the images show")
                if key[0] is None:
                    value = (None, f"No neighbours yet: {embed}; 'smartset audit WORKSPACE' "
                                   f"gives pixel neighbours.")
                else:
                    try:
                        ids, vectors = embeddings(self.ws)
                        source = {"kind": "audit", "backbone": None,
                                  "description": "audit pixel embeddings",
                                  "hint": f"Pixel neighbours (colour and layout): {embed}."}
                        value = (ids, vectors, {sid: i for i, sid in enumerate(ids)}, source)
                    except (EmptyDataError, OSError) as error:
                        value = (None, f"No audit embeddings ({error}): run 'smartset audit "
                                       f"WORKSPACE' again; or {embed}.")
            self._embeddings = (key, value)
            return value

    def model(self, sample_id: str) -> dict:
        found, rows = self.predictions()
        if found is None:
            return {"available": False, "hint": rows}
        row = rows.get(sample_id)
        if row is None:
            return {"available": False, "hint": f"Run {found.run_id} did not predict this sample."}
        result = {"available": True, "run_id": found.run_id, "kind": found.kind,
                  "fold": int(found.folds[row]), "label_then": found.labels[row],
                  "predicted": found.predicted[row], "top": []}
        if found.probs is not None:
            probs = found.probs[row]
            order = np.argsort(-probs)[: self.top]
            result["top"] = [{"label": found.classes[i], "prob": round(float(probs[i]), 4)}
                             for i in order]
        elif found.targets is not None:
            result["target"] = float(found.targets[row])
        return result

    def nearest(self, sample_id: str, label: str | None) -> dict:
        found = self.embeddings()
        if found[0] is None:
            return {"available": False, "hint": found[1]}
        ids, vectors, rows, source = found
        row = rows.get(sample_id)
        if row is None:
            how = ("the neighbours are searched among the samples in use (not excluded), "
                   "embedded by 'smartset embed'" if source["kind"] == "backbone"
                   else "run 'smartset audit' again")
            return {"available": False,
                    "hint": f"No {source['description']} for this sample: {how}."}
        pool = min(len(vectors) - 1, 50 * self.neighbours)
        if pool <= 0:
            return {"available": True, "own": [], "other": [], "source": source}
        found, best = top_k(vectors, vectors[row], pool, normalized=True, exclude=[row])
        keep = found[0] >= 0
        candidates, sims = found[0][keep], dict(zip(found[0][keep].tolist(), best[0][keep]))
        cand_ids = [str(ids[i]) for i in candidates]
        labels = {}
        for chunk in _chunks(cand_ids):
            labels.update({r[0]: r[1] for r in self.ws.catalog.query(
                f"SELECT sample_id, label FROM current_labels WHERE sample_id IN "
                f"({', '.join('?' * len(chunk))})", tuple(chunk))})
        own, other = [], []
        for index, sid in zip(candidates, cand_ids):
            item = {"sample_id": sid, "label": labels.get(sid),
                    "similarity": round(float(sims[int(index)]), 4)}
            target = own if labels.get(sid) == label else other
            if len(target) < self.neighbours:
                target.append(item)
            if len(own) >= self.neighbours and len(other) >= self.neighbours:
                break
        return {"available": True, "own": own, "other": other, "source": source}

    def lineage(self, sample_id: str) -> dict | None:
        rows = self.ws.catalog.query(
            "SELECT g.origin_id, g.stage, g.params, g.created_at, s.relpath, l.label"
            " FROM lineage g JOIN samples s ON s.id = g.origin_id"
            " LEFT JOIN current_labels l ON l.sample_id = g.origin_id WHERE g.sample_id = ?",
            (sample_id,))
        if not rows:
            return None
        r = rows[0]
        return {"origin_id": r["origin_id"], "stage": r["stage"],
                "params": json.loads(r["params"]), "created_at": r["created_at"],
                "origin_relpath": r["relpath"], "origin_label": r["label"]}

    def focus(self, sample_id: str) -> dict | None:
        """Everything the focus view shows about ``sample_id`` (None if unknown)."""
        states = sample_states(self.ws, [sample_id])
        if sample_id not in states:
            return None
        state = states[sample_id]
        query = self.ws.catalog.query
        history = [dict(r) for r in query(
            "SELECT id, label, author, time, reason, origin, reverts FROM label_events"
            " WHERE sample_id = ? ORDER BY id DESC LIMIT 30", (sample_id,))]
        mark_history = [dict(r) for r in query(
            "SELECT id, kind, value, active, author, time, reason, origin, reverts FROM"
            " sample_marks WHERE sample_id = ? ORDER BY id DESC LIMIT 30", (sample_id,))]
        from smartset.audit.store import findings as audit_findings, reference_run

        audit_run = reference_run(self.ws)  # the reference audit, not an experiment
        found = (audit_findings(self.ws, run=audit_run, sample_ids=[sample_id])
                 if audit_run is not None else None)
        findings = [] if found is None else [
            {k: r[k] for k in ("kind", "score", "threshold", "reason", "grp")}
            for r in found.to_dict("records")]
        issues_run = query("SELECT MAX(run_id) FROM label_issues")[0][0]
        issues = [dict(r) for r in query(
            "SELECT kind, score, label, suggested, detectors, reason FROM label_issues"
            " WHERE run_id = ? AND sample_id = ? ORDER BY score DESC", (issues_run, sample_id))]
        group_members = []
        dup = next((f for f in findings if f["kind"] in ("exact_duplicate", "near_duplicate")),
                   None)
        if dup is not None:
            from smartset.audit.store import duplicate_sets

            group_members = duplicate_sets(self.ws, run=audit_run).get(
                (dup["kind"], dup["grp"]), [])
        return {**state, "history": history, "mark_history": mark_history,
                "model": self.model(sample_id), "neighbours": self.nearest(sample_id,
                                                                           state["label"]),
                "lineage": self.lineage(sample_id), "findings": findings,
                "label_issues": issues,
                "duplicate_group": {"group": dup["grp"], "members": group_members}
                if dup else None,
                "overlays": sample_overlays(self.ws, sample_id),
                "box_history": [dict(r) for r in query(
                    "SELECT e.id, e.annotation_id, e.category, e.deleted, e.author, e.time,"
                    " e.reason, e.origin FROM annotation_events e JOIN annotations a"
                    " ON a.id = e.annotation_id WHERE a.sample_id = ? ORDER BY e.id DESC"
                    " LIMIT 30", (sample_id,))]}
