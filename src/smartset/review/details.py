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
    from smartset.detection.store import box_summary

    ids = list(dict.fromkeys(s for s in sample_ids if isinstance(s, str)))
    states: dict[str, dict] = {}
    for sid, r in ws.records_of(ids).items():
        states[sid] = {
            "sample_id": sid, "relpath": r["relpath"], "split": r["split"],
            "width": r["width"], "height": r["height"], "format": r["format"],
            "status": r["status"], "sha": r["sha256"][:12], "origin_id": r["origin_id"],
            "label": r["label"], "label_event_id": r["label_event_id"], "marks": {},
            "mark_versions": {k: None for k in MARK_KINDS}, "reviewed": False}
        for kind, mark in r["marks"].items():
            states[sid]["mark_versions"][kind] = mark["id"]
            if mark["active"]:
                states[sid]["marks"][kind] = mark["value"] if mark["value"] is not None else True
    for sid in reviewed_ids(ws.catalog, list(states)):
        states[sid]["reviewed"] = True
    for sid, boxes in box_summary(ws, list(states)).items():  # the card's box summary
        states[sid]["boxes"] = boxes
    return states


def sample_overlays(ws, sample_id: str) -> list[dict]:
    """The current (not deleted) annotations of ``sample_id`` as the focus view draws them:
    ``annotation_id``, ``event_id`` (its version, for conflict checks), ``kind`` (box,
    polygon, mask), ``category``, ``colour`` (``#rrggbb``, the same per category everywhere),
    ``bbox`` ``[x, y, w, h]`` in pixels, ``polygons`` (for polygons), ``mask`` (True: an RLE
    mask, fetched as a PNG). At most :data:`MAX_OVERLAYS`, largest first."""
    from smartset.detection.draw import category_colour

    from smartset.detection.store import current_boxes

    out = []
    for r in current_boxes(ws, sample_id, limit=MAX_OVERLAYS):
        segmentation = r["segmentation"]
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

    from smartset.detection.store import annotation_state

    state = annotation_state(ws, annotation_id)
    if state is None or not state["segmentation"]:
        return None
    segmentation = json.loads(state["segmentation"])
    if not isinstance(segmentation, dict):
        return None
    mask = _rle.decode(segmentation).astype(bool)
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[mask] = (*category_colour(state["category"]), alpha)
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
        self._saliency: tuple[int | None, list] = (-1, [])

    def _newest_run(self, command: str | None = None) -> int | None:
        if command is None:
            return self.ws.catalog.newest_run_id()
        return self.ws.catalog.newest_run_id(command, status="done")

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
        count = self.ws.sample_count()
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
        labels = self.ws.labels_of(cand_ids)
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

    def _saliency_indexes(self) -> list[tuple[int, dict]]:
        """``(run id, index)`` of the newest evaluations (at most 20) that wrote saliency
        maps (``smartset evaluate --saliency``: ``models/run-N/saliency/index.json``)."""
        found = []
        for run_id in self.ws.catalog.run_ids("evaluate", status="done", limit=20):
            path = self.ws.path / "models" / f"run-{int(run_id)}" / "saliency" / "index.json"
            if path.is_file():
                try:
                    found.append((int(run_id), json.loads(path.read_text(encoding="utf-8"))))
                except (OSError, ValueError):  # a damaged index: that run shows none
                    continue
        return found

    def saliency(self, sample_id: str) -> dict | None:
        """The newest precomputed saliency map of ``sample_id`` (``run_id``, ``file``,
        ``true``, ``predicted``, ``p``, ``method``, ``url``), or None. The maps are
        written by ``evaluate``; a request only reads the small index (cached per run)."""
        key = self._newest_run("evaluate")
        with self._lock:
            if self._saliency[0] != key:
                self._saliency = (key, self._saliency_indexes())
            indexes = self._saliency[1]
        for run_id, index in indexes:
            entry = index.get(sample_id)
            if isinstance(entry, dict) and isinstance(entry.get("file"), str):
                return {"run_id": run_id, **entry,
                        "url": f"/api/samples/{sample_id}/saliency"}
        return None

    def saliency_file(self, sample_id: str):
        """The path of ``sample_id``'s saliency PNG (inside its run's folder), or None."""
        found = self.saliency(sample_id)
        if found is None:
            return None
        folder = (self.ws.path / "models" / f"run-{found['run_id']}" / "saliency").resolve()
        path = (folder / found["file"]).resolve()
        return path if path.parent == folder and path.is_file() else None

    def lineage(self, sample_id: str) -> dict | None:
        return self.ws.origin_of(sample_id)

    def focus(self, sample_id: str) -> dict | None:
        """Everything the focus view shows about ``sample_id`` (None if unknown)."""
        states = sample_states(self.ws, [sample_id])
        if sample_id not in states:
            return None
        state = states[sample_id]
        from smartset.clean.store import label_issues, newest_clean_run
        from smartset.events import ANNOTATIONS, LABELS, MARKS

        def recent(log, columns):
            return [{c: e[c] for c in columns} for e in log.history(
                self.ws.catalog, {"sample_id": sample_id}, newest_first=True, limit=30)]

        history = recent(LABELS, ("id", "label", "author", "time", "reason", "origin",
                                  "reverts"))
        mark_history = recent(MARKS, ("id", "kind", "value", "active", "author", "time",
                                      "reason", "origin", "reverts"))
        from smartset.audit.store import findings as audit_findings, reference_run

        audit_run = reference_run(self.ws)  # the reference audit, not an experiment
        found = (audit_findings(self.ws, run=audit_run, sample_ids=[sample_id])
                 if audit_run is not None else None)
        findings = [] if found is None else [
            {k: r[k] for k in ("kind", "score", "threshold", "reason", "grp")}
            for r in found.to_dict("records")]
        issues = [{c: r[c] for c in ("kind", "score", "label", "suggested", "detectors",
                                     "reason")}
                  for r in label_issues(self.ws, newest_clean_run(self.ws),
                                        sample_ids=[sample_id], evidence=False, decode=False)]
        group_members = []
        dup = next((f for f in findings if f["kind"] in ("exact_duplicate", "near_duplicate")),
                   None)
        if dup is not None:
            from smartset.audit.store import duplicate_sets

            group_members = duplicate_sets(self.ws, run=audit_run).get(
                (dup["kind"], dup["grp"]), [])
        return {**state, "history": history, "mark_history": mark_history,
                "model": self.model(sample_id), "saliency": self.saliency(sample_id),
                "neighbours": self.nearest(sample_id,
                                                                           state["label"]),
                "lineage": self.lineage(sample_id), "findings": findings,
                "label_issues": issues,
                "duplicate_group": {"group": dup["grp"], "members": group_members}
                if dup else None,
                "overlays": sample_overlays(self.ws, sample_id),
                "box_history": recent(ANNOTATIONS, ("id", "annotation_id", "category",
                                                    "deleted", "author", "time", "reason",
                                                    "origin"))}
