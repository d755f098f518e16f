"""A detector's worst mistakes as one picture: the most confident false positives and the
largest missed objects, each on its image with the box drawn and captioned "(true)
predicted", like the classification montage of misclassified images
(:func:`smartset.learn.misclassified_montage`).

A false positive is captioned ``(background) circle 0.93`` when it overlaps no object of
any class at the IoU threshold, or ``(square) circle 0.93`` when it sits on an object of
another class (a class confusion). A miss is captioned ``(square) nothing`` or, when a
prediction of another class or a lower score lies on it, ``(square) circle 0.41``. Matching
is :func:`smartset.detection.evaluation.match_detections`, as ``detect evaluate`` counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["detection_errors", "error_montage"]


def detection_errors(gt, pred, *, iou_threshold: float = 0.5, score_threshold: float = 0.5
                     ) -> tuple[list[dict], list[dict]]:
    """``(false_positives, misses)``: dicts with ``image``, ``category``, ``bbox``
    ``[x, y, w, h]``, ``score`` (None for a miss), ``true`` and ``predicted`` (the caption's
    two sides) and ``iou`` (of the box that gave the other side, 0 if none). False
    positives come by falling score, misses by falling area."""
    from smartset.detection.evaluation import box_iou, match_detections

    g, p = match_detections(gt, pred, iou_threshold=iou_threshold,
                            score_threshold=score_threshold)
    all_pred = pred.reset_index(drop=True)
    gt_boxes = g[["x", "y", "w", "h"]].to_numpy(np.float64)
    pred_boxes = all_pred[["x", "y", "w", "h"]].to_numpy(np.float64)
    gt_by_image = g.groupby("image", sort=False).indices
    pred_by_image = all_pred.groupby("image", sort=False).indices
    false_positives = []
    wrong = p[~p["matched"] & ~p["ignored"]].sort_values("score", ascending=False,
                                                          kind="stable")
    for r in wrong.itertuples(index=False):
        box = np.array([[r.x, r.y, r.w, r.h]], np.float64)
        rows = gt_by_image.get(r.image, np.zeros(0, int))
        true, iou = "background", 0.0
        if len(rows):
            ious = box_iou(box, gt_boxes[rows])[0]
            best = int(np.argmax(ious))
            if ious[best] >= iou_threshold:
                true, iou = str(g["category"].iloc[rows[best]]), float(ious[best])
        false_positives.append({"image": r.image, "category": str(r.category),
                                "bbox": [r.x, r.y, r.w, r.h], "score": float(r.score),
                                "true": true, "predicted": f"{r.category} {r.score:.2f}",
                                "iou": iou})
    misses = []
    missed = g[~g["matched"] & ~g["iscrowd"]]
    missed = missed.assign(_area=missed["w"] * missed["h"]).sort_values(
        "_area", ascending=False, kind="stable")
    for r in missed.itertuples(index=False):
        box = np.array([[r.x, r.y, r.w, r.h]], np.float64)
        rows = pred_by_image.get(r.image, np.zeros(0, int))
        predicted, iou = "nothing", 0.0
        if len(rows):
            ious = box_iou(box, pred_boxes[rows])[0]
            best = int(np.argmax(ious))
            if ious[best] >= iou_threshold:
                other = all_pred.iloc[rows[best]]
                predicted = f"{other['category']} {float(other['score']):.2f}"
                iou = float(ious[best])
        misses.append({"image": r.image, "category": str(r.category),
                       "bbox": [r.x, r.y, r.w, r.h], "score": None, "true": str(r.category),
                       "predicted": predicted, "iou": iou})
    return false_positives, misses


def _tile(image: np.ndarray, error: dict, cell: int, caption: int):
    from PIL import Image, ImageDraw, ImageFont

    from smartset.detection.draw import draw_targets

    height, width = image.shape[:2]
    scale = cell / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    x, y, w, h = (float(v) * scale for v in error["bbox"])
    drawn = draw_targets(small, [{"category": error["category"], "bbox": [x, y, w, h],
                                  "score": error["score"]}], labels=False, width=2)
    tile = Image.new("RGB", (cell, cell + caption), "white")
    tile.paste(Image.fromarray(drawn), ((cell - size[0]) // 2, (cell - size[1]) // 2))
    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    ImageDraw.Draw(tile).text((3, cell + 2), f"({error['true']}) {error['predicted']}",
                              fill=(0, 0, 0), font=font)
    return tile


def error_montage(gt, pred, images, path: str | Path, *, iou_threshold: float = 0.5,
                  score_threshold: float = 0.5, limit: int = 12, columns: int = 6,
                  cell: int = 160) -> dict | None:
    """Write a PNG of the top ``limit`` false positives (first rows, most confident first)
    and the top ``limit`` misses (then, largest first) of ``pred`` against ``gt`` (frames
    as :func:`~smartset.detection.evaluation.ground_truth` and
    :func:`~smartset.detection.evaluation.load_predictions` give), each on its image
    (``images``: ``image`` and ``path`` columns) scaled to ``cell`` pixels, the box in its
    category's colour, captioned "(true) predicted". Returns ``{"path",
    "false_positives", "misses", "shown"}`` (counts of all, and the errors drawn), or None
    when there is no error to show. Written atomically."""
    from PIL import Image, ImageDraw

    from smartset._atomic import atomic_path
    from smartset.imageio import load_image

    false_positives, misses = detection_errors(gt, pred, iou_threshold=iou_threshold,
                                               score_threshold=score_threshold)
    sections = [(f"false positives, most confident first: {min(limit, len(false_positives))} "
                 f"of {len(false_positives)}", false_positives[:limit]),
                (f"misses, largest first: {min(limit, len(misses))} of {len(misses)}",
                 misses[:limit])]
    sections = [(title, errors) for title, errors in sections if errors]
    if not sections:
        return None
    paths = dict(zip(images["image"], images["path"]))
    cache: dict = {}
    caption, header, gap = 18, 20, 4
    columns = max(1, min(columns, max(len(e) for _, e in sections)))
    rows_of = [-(-len(errors) // columns) for _, errors in sections]
    width = columns * (cell + gap) + gap
    height = sum(header + r * (cell + caption + gap) for r in rows_of) + gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    top = gap
    shown = []
    for (title, errors), n_rows in zip(sections, rows_of):
        draw.text((gap, top + 3), title, fill=(0, 0, 0))
        top += header
        for i, error in enumerate(errors):
            if error["image"] not in cache:
                cache[error["image"]] = load_image(paths[error["image"]], mode="RGB")
            tile = _tile(cache[error["image"]], error, cell, caption)
            canvas.paste(tile, (gap + (i % columns) * (cell + gap),
                                top + (i // columns) * (cell + caption + gap)))
            shown.append({**error, "kind": "false_positive" if error["score"] is not None
                          else "miss"})
        top += n_rows * (cell + caption + gap)
    path = Path(path)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return {"path": str(path), "false_positives": len(false_positives), "misses": len(misses),
            "shown": shown}
