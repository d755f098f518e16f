"""Auditing boxes and masks: what a detection or segmentation set holds and what looks wrong.

Summary: instances per class, images with no objects, boxes per image, box sizes (COCO's
small, medium, large) and aspect ratios, class imbalance by instances and, for
segmentation, by pixels. Findings (one row per object or image, stored with the audit
findings of the catalog): ``no_objects``, ``touches_border``, ``duplicate_box`` (same class,
IoU above 0.9), ``tiny_mask`` (covers almost nothing of its image), ``full_mask`` (almost
everything).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from smartset._atomic import write_text
from smartset.detection.evaluation import box_iou, size_bucket

__all__ = ["audit_annotations", "AnnotationAudit", "FINDING_KINDS"]

FINDING_KINDS = {
    "no_objects": "the image has no annotated object",
    "touches_border": "the object touches the image border (it may be cut off)",
    "duplicate_box": "two boxes of the same class overlap almost wholly (IoU above the limit)",
    "tiny_mask": "the mask covers almost nothing of its image",
    "full_mask": "the mask covers almost all of its image",
}


@dataclass
class AnnotationAudit:
    """What :func:`audit_annotations` found: ``summary`` (JSON-ready), ``findings`` (one row
    per finding: ``kind``, ``sample_id``, ``annotation_id``, ``score``, ``reason``), the
    report paths and the catalog run."""

    summary: dict
    findings: pd.DataFrame
    paths: dict = field(default_factory=dict)
    run_id: int | None = None

    def to_dict(self) -> dict:
        return {"summary": self.summary, "paths": self.paths, "run_id": self.run_id,
                "findings": self.findings.groupby("kind").size().to_dict()
                if len(self.findings) else {}}


def _hist(values, bins) -> dict:
    counts, edges = np.histogram(values, bins=bins)
    return {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist()}


def audit_annotations(ws, version: str | None = None, *, duplicate_iou: float = 0.9,
                      tiny_mask: float = 0.001, full_mask: float = 0.95, border: float = 0.5,
                      write: bool = True, montage: int = 12) -> AnnotationAudit:
    """Audit the annotations of ``version`` (None: the live catalog).

    ``duplicate_iou``: boxes of one class in one image overlapping more are duplicates;
    ``tiny_mask`` / ``full_mask``: fractions of the image a mask covers below / above which
    it is flagged; ``border``: pixels from the edge that count as touching. ``write``: store
    the findings (catalog) and write ``reports/annotations/VERSION/audit.json`` plus a PNG
    of up to ``montage`` flagged images with their targets drawn."""
    from smartset.detection.store import annotations

    started = time.perf_counter()
    ann = annotations(ws, version)
    samples = ws.samples(version)
    findings: list[tuple] = []
    per_image = ann.groupby("sample_id").size().reindex(samples["id"], fill_value=0)
    for sid in per_image.index[per_image.to_numpy() == 0]:
        findings.append(("no_objects", sid, None, 0.0, FINDING_KINDS["no_objects"]))
    x, y, w, h = (ann[c].to_numpy(np.float64) for c in ("x", "y", "w", "h"))
    W, H = ann["width"].to_numpy(np.float64), ann["height"].to_numpy(np.float64)
    touching = (x <= border) | (y <= border) | (x + w >= W - border) | (y + h >= H - border)
    for row in ann[touching].itertuples(index=False):
        findings.append(("touches_border", row.sample_id, row.id, 1.0,
                         f"{row.category} box [{row.x:g}, {row.y:g}, {row.w:g}, {row.h:g}] "
                         f"touches the border of the {row.width}x{row.height} image"))
    for (sid, cat), group in ann.groupby(["sample_id", "category"], sort=False):
        if len(group) < 2:
            continue
        ious = np.triu(box_iou(group[["x", "y", "w", "h"]].to_numpy(),
                               group[["x", "y", "w", "h"]].to_numpy()), 1)
        for i, j in zip(*np.nonzero(ious > duplicate_iou)):
            findings.append(("duplicate_box", sid, group["id"].iloc[j], float(ious[i, j]),
                             f"{cat} box {group['id'].iloc[j]} overlaps {group['id'].iloc[i]} "
                             f"with IoU {ious[i, j]:.2f} > {duplicate_iou}: a duplicate?"))
    masked = ann["kind"].isin(["mask", "polygon"]).to_numpy()
    coverage = ann["area"].to_numpy(np.float64) / np.maximum(W * H, 1)
    for kind, hit in (("tiny_mask", masked & (coverage < tiny_mask)),
                      ("full_mask", masked & (coverage > full_mask))):
        for row, share in zip(ann[hit].itertuples(index=False), coverage[hit]):
            findings.append((kind, row.sample_id, row.id, float(share),
                             f"{row.category} mask covers {share:.2%} of the image"))
    frame = pd.DataFrame(findings, columns=["kind", "sample_id", "annotation_id", "score",
                                            "reason"])
    counts = ann["category"].value_counts()
    aspect = np.log2(np.maximum(w, 1e-9) / np.maximum(h, 1e-9)) if len(ann) else np.zeros(0)
    sizes = pd.crosstab(ann["category"], size_bucket(ann["area"])) if len(ann) else pd.DataFrame()
    pixels = ann[masked].groupby("category")["area"].sum() if masked.any() else pd.Series(dtype=float)
    total_pixels = float((samples["width"] * samples["height"]).sum())
    summary = {
        "version": version, "images": len(samples), "objects": len(ann),
        "classes": {str(k): int(v) for k, v in counts.items()},
        "imbalance": float(counts.max() / counts.min()) if len(counts) else None,
        "images_without_objects": int((per_image == 0).sum()),
        "boxes_per_image": {"mean": float(per_image.mean()) if len(per_image) else 0.0,
                            "median": float(per_image.median()) if len(per_image) else 0.0,
                            "max": int(per_image.max()) if len(per_image) else 0,
                            "histogram": per_image.value_counts().sort_index()
                            .rename(index=int).to_dict()},
        "sizes": {str(c): {k: int(v) for k, v in row.items()} for c, row in
                  sizes.to_dict("index").items()},
        "sizes_total": {k: int(v) for k, v in pd.Series(size_bucket(ann["area"]))
                        .value_counts().items()} if len(ann) else {},
        "aspect_log2_w_over_h": _hist(aspect, np.arange(-4, 4.5, 0.5)) if len(ann) else {},
        "box_side_px": _hist(np.sqrt(np.maximum(w * h, 0)), [0, 8, 16, 32, 64, 96, 128, 256,
                                                              512, 1e9]) if len(ann) else {},
        "touching_border": int(touching.sum()),
        "duplicate_boxes": int((frame["kind"] == "duplicate_box").sum()),
        "tiny_masks": int((frame["kind"] == "tiny_mask").sum()),
        "full_masks": int((frame["kind"] == "full_mask").sum()),
        "pixels": ({"per_class": {str(k): int(v) for k, v in pixels.items()},
                    "background_share": round(1 - float(pixels.sum()) / total_pixels, 4)
                    if total_pixels else None,
                    "imbalance": float(pixels.max() / max(pixels.min(), 1))}
                   if len(pixels) else None),
        "thresholds": {"duplicate_iou": duplicate_iou, "tiny_mask": tiny_mask,
                       "full_mask": full_mask, "border_px": border},
        "seconds": round(time.perf_counter() - started, 3),
    }
    result = AnnotationAudit(summary, frame)
    if write:
        _write(ws, version, result, ann, samples, montage)
    return result


def _write(ws, version, result: AnnotationAudit, ann, samples, montage: int) -> None:
    run_id = ws.catalog.start_run("annotations audit", {"version": version,
                                                         **result.summary["thresholds"]})
    from smartset.audit.store import write_findings

    with ws.catalog.write() as con:
        write_findings(con, [(run_id, version, r.kind, r.sample_id, r.score, None, r.reason,
                              r.annotation_id) for r in result.findings.itertuples(index=False)])
    folder = ws.reports_dir / "annotations" / (version or "live")
    report = {**result.summary, "findings": result.findings.to_dict("records")}
    write_text(folder / "audit.json", json.dumps(report, indent=1, default=str) + "\n")
    result.paths = {"json": str(folder / "audit.json")}
    flagged = [s for s in dict.fromkeys(result.findings["sample_id"])
               if s in set(ann["sample_id"])][:montage]
    if flagged:
        result.paths["montage"] = str(_montage(folder / "flagged.png", flagged, ann, samples))
    result.run_id = run_id
    ws.catalog.finish_run(run_id, {k: v for k, v in result.to_dict().items() if k != "summary"})


def _montage(target: Path, sample_ids, ann, samples, cell: int = 160) -> Path:
    from PIL import Image

    from smartset._atomic import atomic_path
    from smartset.detection.draw import draw_targets
    from smartset.imageio import load_image

    paths = samples.set_index("id")["path"]
    tiles = []
    for sid in sample_ids:
        drawn = draw_targets(load_image(paths[sid], mode="RGB"), ann[ann["sample_id"] == sid])
        tile = Image.fromarray(drawn)
        tile.thumbnail((cell, cell))
        tiles.append(tile)
    columns = min(6, len(tiles))
    rows = -(-len(tiles) // columns)
    grid = Image.new("RGB", (columns * (cell + 4) + 4, rows * (cell + 4) + 4), "white")
    for i, tile in enumerate(tiles):
        grid.paste(tile, (4 + (i % columns) * (cell + 4), 4 + (i // columns) * (cell + 4)))
    with atomic_path(target) as tmp:
        grid.save(tmp, format="PNG")
    return target
