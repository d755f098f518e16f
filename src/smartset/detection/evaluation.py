"""Evaluating detections and segmentations: precision, recall and F1 at an IoU threshold,
COCO mAP@[.5:.95] (COCOeval's rules, checked against pycocotools), the knife study's table
by brightness condition and object size, the whale study's counting F1, and per-class IoU,
Dice and pixel accuracy for segmentation.

Ground truth and predictions are DataFrames with one row per object: ``image`` (any key),
``category``, a box ``x``, ``y``, ``w``, ``h`` in pixels; ground truth may add ``area`` and
``iscrowd``, predictions add ``score``. :func:`ground_truth` reads them from a workspace,
:func:`load_predictions` from a COCO results file or YOLO ``.txt`` files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from smartset.errors import SourceError

__all__ = ["box_iou", "match_detections", "evaluate_detections", "coco_map", "knife_table",
           "counting_f1", "segmentation_metrics", "size_bucket", "SIZE_BUCKETS",
           "ground_truth", "load_predictions", "image_conditions", "evaluate_predictions",
           "evaluate_masks", "CONDITION_SOURCES"]

SIZE_BUCKETS = ("large", "medium", "small")
_SMALL, _MEDIUM = 32 ** 2, 96 ** 2


def size_bucket(area) -> np.ndarray:
    """COCO's object sizes: ``small`` below 32² pixels, ``medium`` below 96², else ``large``."""
    area = np.asarray(area, np.float64)
    return np.where(area < _SMALL, "small", np.where(area < _MEDIUM, "medium", "large"))


def box_iou(a: np.ndarray, b: np.ndarray, crowd: np.ndarray | None = None) -> np.ndarray:
    """IoU of boxes ``a`` (``M x 4``) and ``b`` (``N x 4``), both ``x, y, w, h``: ``M x N``.
    Where ``crowd[j]``, the union is ``a``'s area alone (COCO's rule for crowd regions)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2]) - \
        np.maximum(a[:, None, 0], b[None, :, 0])
    iy = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3]) - \
        np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    area_a, area_b = a[:, 2] * a[:, 3], b[:, 2] * b[:, 3]
    union = area_a[:, None] + area_b[None, :] - inter
    if crowd is not None:
        union = np.where(np.asarray(crowd, bool)[None, :], area_a[:, None], union)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _prepare(gt: pd.DataFrame, pred: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    for name, frame, needed in (("ground truth", gt, ("image", "category", "x", "y", "w", "h")),
                                ("predictions", pred, ("image", "category", "x", "y", "w", "h",
                                                       "score"))):
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise SourceError(f"The {name} lack column(s) {', '.join(missing)}; found "
                              f"{', '.join(map(str, frame.columns))}.")
    gt = gt.reset_index(drop=True).copy()
    pred = pred.reset_index(drop=True).copy()
    if "iscrowd" not in gt:
        gt["iscrowd"] = False
    gt["iscrowd"] = gt["iscrowd"].fillna(False).astype(bool)
    if "area" not in gt:
        gt["area"] = gt["w"] * gt["h"]
    pred["area"] = pred["w"] * pred["h"]
    return gt, pred


def match_detections(gt: pd.DataFrame, pred: pd.DataFrame, *, iou_threshold: float = 0.5,
                     score_threshold: float = 0.0, class_aware: bool = True
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Greedy matching per image (and class): predictions by falling score each take the
    unmatched ground-truth object they overlap most, if the IoU is at least
    ``iou_threshold``. Returns ``(gt, pred)`` copies with ``matched`` (bool) and, on
    ``pred``, ``gt_index`` (the matched row of ``gt``, -1 if none) and ``iou``.
    Predictions below ``score_threshold`` are left out; predictions matched to a crowd
    region are ``ignored`` (neither true nor false positives)."""
    gt, pred = _prepare(gt, pred)
    pred = pred[pred["score"] >= score_threshold].reset_index(drop=True)
    gt["matched"] = False
    pred["matched"] = False
    pred["ignored"] = False
    pred["gt_index"] = -1
    pred["iou"] = 0.0
    keys = ["image", "category"] if class_aware else ["image"]
    gt_groups = gt.groupby(keys, sort=False).indices
    matched_gt = gt["matched"].to_numpy().copy()
    out_matched = np.zeros(len(pred), bool)
    out_ignored = np.zeros(len(pred), bool)
    out_index = np.full(len(pred), -1)
    out_iou = np.zeros(len(pred))
    boxes_gt = gt[["x", "y", "w", "h"]].to_numpy(np.float64)
    boxes_pred = pred[["x", "y", "w", "h"]].to_numpy(np.float64)
    crowd = gt["iscrowd"].to_numpy()
    for key, rows in pred.groupby(keys, sort=False).indices.items():
        g = gt_groups.get(key)
        if g is None:
            continue
        rows = rows[np.argsort(-pred["score"].to_numpy()[rows], kind="mergesort")]
        ious = box_iou(boxes_pred[rows], boxes_gt[g], crowd[g])
        for i, row in enumerate(rows):
            candidates = np.where(matched_gt[g] & ~crowd[g], -1.0, ious[i])
            j = int(np.argmax(candidates)) if len(g) else -1
            if j < 0 or candidates[j] < iou_threshold:
                continue
            if crowd[g[j]]:
                out_ignored[row] = True
                continue
            matched_gt[g[j]] = True
            out_matched[row], out_index[row], out_iou[row] = True, g[j], candidates[j]
    gt["matched"] = matched_gt
    pred["matched"], pred["ignored"] = out_matched, out_ignored
    pred["gt_index"], pred["iou"] = out_index, out_iou
    return gt, pred


def _prf(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {"tp": int(tp), "fp": int(fp), "fn": int(fn), "precision": precision,
            "recall": recall, "f1": f1}


def evaluate_detections(gt: pd.DataFrame, pred: pd.DataFrame, *, iou_threshold: float = 0.5,
                        score_threshold: float = 0.0, with_map: bool = True) -> dict:
    """Precision, recall and F1 at IoU >= ``iou_threshold`` (predictions scoring at least
    ``score_threshold``), overall and per class, plus COCO ``map`` (AP@[.5:.95]),
    ``map50`` and ``map75`` over all predictions (``with_map``)."""
    g, p = match_detections(gt, pred, iou_threshold=iou_threshold,
                            score_threshold=score_threshold)
    live_g, live_p = g[~g["iscrowd"]], p[~p["ignored"]]
    result = _prf(int(live_p["matched"].sum()), int((~live_p["matched"]).sum()),
                  int((~live_g["matched"]).sum()))
    per_class = {}
    for cat in sorted(set(live_g["category"]) | set(live_p["category"]), key=str):
        cg, cp = live_g[live_g["category"] == cat], live_p[live_p["category"] == cat]
        per_class[str(cat)] = {**_prf(int(cp["matched"].sum()), int((~cp["matched"]).sum()),
                                      int((~cg["matched"]).sum())), "gt": len(cg)}
    result.update({"iou_threshold": iou_threshold, "score_threshold": score_threshold,
                   "gt": len(live_g), "predictions": len(live_p), "per_class": per_class})
    if with_map:
        result.update({k: v for k, v in coco_map(gt, pred).items() if k != "per_class"})
    return result


def coco_map(gt: pd.DataFrame, pred: pd.DataFrame, *,
             iou_thresholds: Sequence[float] | None = None, max_dets: int = 100,
             area_range: tuple[float, float] = (0.0, 1e10)) -> dict:
    """COCO box AP as pycocotools' COCOeval computes it (101 recall points, ``max_dets``
    per image, crowd regions and objects outside ``area_range`` ignored): ``map``
    (AP@[.5:.95]), ``map50``, ``map75``, ``map_small``/``map_medium``/``map_large`` and
    ``per_class``. Images are taken in sorted key order, as COCOeval sorts image ids, so
    equal scores break ties alike."""
    thresholds = np.asarray(iou_thresholds if iou_thresholds is not None else
                            np.linspace(0.5, 0.95, 10), np.float64)
    gt, pred = _prepare(gt, pred)
    out = {}
    ranges = {"": area_range, "_small": (0, _SMALL), "_medium": (_SMALL, _MEDIUM),
              "_large": (_MEDIUM, 1e10)}
    per_class = {}
    for suffix, rng in ranges.items():
        precision = _accumulate(gt, pred, thresholds, max_dets, rng)  # T x R x K
        valid = precision > -1
        out[f"map{suffix}"] = float(precision[valid].mean()) if valid.any() else float("nan")
        if suffix == "":
            for name, t in (("map50", 0.5), ("map75", 0.75)):
                hit = np.flatnonzero(np.isclose(thresholds, t))
                if hit.size:
                    sub = precision[hit[0]]
                    out[name] = float(sub[sub > -1].mean()) if (sub > -1).any() else float("nan")
            cats = _categories(gt, pred)
            for k, cat in enumerate(cats):
                sub = precision[:, :, k]
                per_class[str(cat)] = float(sub[sub > -1].mean()) if (sub > -1).any() \
                    else float("nan")
    out["per_class"] = per_class
    return out


def _categories(gt, pred) -> list:
    return sorted(set(gt["category"]) | set(pred["category"]), key=str)


def _accumulate(gt, pred, thresholds, max_dets, area_range) -> np.ndarray:
    recall_points = np.linspace(0, 1, 101)
    cats = _categories(gt, pred)
    precision = -np.ones((len(thresholds), len(recall_points), len(cats)))
    lo, hi = area_range
    gt_boxes = gt[["x", "y", "w", "h"]].to_numpy(np.float64)
    pr_boxes = pred[["x", "y", "w", "h"]].to_numpy(np.float64)
    gt_ignore_all = gt["iscrowd"].to_numpy() | (gt["area"].to_numpy() < lo) | \
        (gt["area"].to_numpy() > hi)
    crowd_all = gt["iscrowd"].to_numpy()
    scores_all = pred["score"].to_numpy(np.float64)
    pr_area = pred["area"].to_numpy(np.float64)
    gt_groups = gt.groupby(["category", "image"], sort=False).indices
    pr_groups = pred.groupby(["category", "image"], sort=False).indices
    images = sorted(set(gt["image"]) | set(pred["image"]), key=lambda v: (str(type(v)), v))
    for k, cat in enumerate(cats):
        scores, matched, ignored, n_gt = [], [], [], 0
        for image in images:
            g = gt_groups.get((cat, image), np.zeros(0, int))
            d = pr_groups.get((cat, image), np.zeros(0, int))
            if not len(g) and not len(d):
                continue
            g_ignore = gt_ignore_all[g]
            g = g[np.argsort(g_ignore, kind="mergesort")]
            g_ignore = gt_ignore_all[g]
            crowd = crowd_all[g]
            d = d[np.argsort(-scores_all[d], kind="mergesort")][:max_dets]
            ious = box_iou(pr_boxes[d], gt_boxes[g], crowd)
            T = len(thresholds)
            dtm = np.zeros((T, len(d)), bool)
            dt_ig = np.zeros((T, len(d)), bool)
            for t, threshold in enumerate(thresholds):
                gtm = np.zeros(len(g), bool)
                for di in range(len(d)):
                    best, m = min(threshold, 1 - 1e-10), -1
                    for gi in range(len(g)):
                        if gtm[gi] and not crowd[gi]:
                            continue
                        if m > -1 and not g_ignore[m] and g_ignore[gi]:
                            break
                        if ious[di, gi] < best:
                            continue
                        best, m = ious[di, gi], gi
                    if m == -1:
                        continue
                    dt_ig[t, di] = g_ignore[m]
                    dtm[t, di] = True
                    gtm[m] = True
            outside = (pr_area[d] < lo) | (pr_area[d] > hi)
            dt_ig |= ~dtm & outside[None, :]
            scores.append(scores_all[d])
            matched.append(dtm)
            ignored.append(dt_ig)
            n_gt += int((~g_ignore).sum())
        if n_gt == 0 or not scores:
            continue
        s = np.concatenate(scores)
        order = np.argsort(-s, kind="mergesort")
        dtm = np.concatenate(matched, axis=1)[:, order]
        dt_ig = np.concatenate(ignored, axis=1)[:, order]
        tps = np.cumsum(dtm & ~dt_ig, axis=1, dtype=np.float64)
        fps = np.cumsum(~dtm & ~dt_ig, axis=1, dtype=np.float64)
        for t in range(len(thresholds)):
            tp, fp = tps[t], fps[t]
            nd = len(tp)
            rc = tp / n_gt
            pr = tp / (fp + tp + np.spacing(1))
            pr = np.maximum.accumulate(pr[::-1])[::-1] if nd else pr
            q = np.zeros(len(recall_points))
            inds = np.searchsorted(rc, recall_points, side="left")
            ok = inds < nd
            q[ok] = pr[inds[ok]]
            precision[t, :, k] = q
    return precision


# -- the knife study's table -------------------------------------------------------------------
def knife_table(gt: pd.DataFrame, pred: pd.DataFrame,
                conditions: Mapping | Callable | None = None, *, iou_threshold: float = 0.5,
                score_threshold: float = 0.5, order: Sequence[str] | None = None,
                class_aware: bool = True, images: Sequence | None = None) -> pd.DataFrame:
    """The knife study's table: per condition (``conditions[image]``: e.g. the brightness
    bucket ``high``, ``medium``, ``low``, ``artificial``; one ``all`` condition if None)
    and object size (``large``, ``medium``, ``small`` by box area as COCO's 96² and 32²):
    ``frames`` (images of the condition with a ground-truth object or a prediction of that
    size), ``gt`` (ground-truth positives), ``tp``, ``fp``, ``precision``, ``recall``, ``f1``.
    Each condition ends with an ``all`` sizes row; the table ends with the totals over all
    conditions per size and an ``average`` row (mean precision, recall and F1 of the cells
    holding ground truth). A true positive counts in its ground-truth object's size, a
    false positive in its own. ``images``: every image evaluated (default: those with a
    ground-truth object or a prediction), for the ``all`` rows' frame counts."""
    g, p = match_detections(gt, pred, iou_threshold=iou_threshold,
                            score_threshold=score_threshold, class_aware=class_aware)
    g, p = g[~g["iscrowd"]].copy(), p[~p["ignored"]].copy()
    lookup = (conditions if callable(conditions) else
              (lambda image: conditions.get(image, "unknown")) if conditions is not None
              else (lambda image: "all"))
    images = sorted(set(gt["image"]) | set(pred["image"]) | set(images or ()), key=str)
    cond_of = {image: lookup(image) for image in images}
    g["condition"] = g["image"].map(cond_of)
    p["condition"] = p["image"].map(cond_of)
    g["size"] = size_bucket(g["w"] * g["h"])
    gt_size = g["size"].to_dict()
    p["size"] = np.where(p["matched"], p["gt_index"].map(gt_size).fillna("small"),
                         size_bucket(p["w"] * p["h"]))
    frames_by_cond = pd.Series(cond_of).value_counts().to_dict()
    present = list(dict.fromkeys(cond_of.values()))
    wanted = list(order) if order is not None else (
        [c for c in ("high", "medium", "low", "artificial") if c in present]
        + sorted(c for c in present if c not in ("high", "medium", "low", "artificial")))
    rows = []

    def row(condition, size, gs, ps, frames):
        tp, fp = int(ps["matched"].sum()), int((~ps["matched"]).sum())
        stats = _prf(tp, fp, len(gs) - int(gs["matched"].sum()))
        rows.append({"condition": condition, "size": size, "frames": int(frames),
                     "gt": len(gs), "tp": tp, "fp": fp, "precision": stats["precision"],
                     "recall": stats["recall"], "f1": stats["f1"]})

    for condition in wanted:
        gc, pc = g[g["condition"] == condition], p[p["condition"] == condition]
        for size in SIZE_BUCKETS:
            gs, ps = gc[gc["size"] == size], pc[pc["size"] == size]
            row(condition, size, gs, ps, len(set(gs["image"]) | set(ps["image"])))
        row(condition, "all", gc, pc, frames_by_cond.get(condition, 0))
    if len(wanted) > 1:
        for size in SIZE_BUCKETS:
            gs, ps = g[g["size"] == size], p[p["size"] == size]
            row("all", size, gs, ps, len(set(gs["image"]) | set(ps["image"])))
        row("all", "all", g, p, len(images))
    table = pd.DataFrame(rows)
    cells = table[(table["size"] != "all") & (table["condition"] != "all") & (table["gt"] > 0)]
    average = {"condition": "average", "size": "cells", "frames": int(cells["frames"].sum()),
               "gt": int(cells["gt"].sum()), "tp": int(cells["tp"].sum()),
               "fp": int(cells["fp"].sum()), "precision": float(cells["precision"].mean()),
               "recall": float(cells["recall"].mean()), "f1": float(cells["f1"].mean())}
    return pd.concat([table, pd.DataFrame([average])], ignore_index=True)


# -- counting (the whale study's second step) ----------------------------------------------------
def counting_f1(gt: pd.DataFrame, pred: pd.DataFrame, *, images: Sequence | None = None,
                score_threshold: float = 0.5, category: str | None = None) -> dict:
    """Counts per image (``category`` only, if given): ``per_image`` (image, true,
    predicted, error = predicted - true), ``mae``, ``rmse``, the counting ``precision`` /
    ``recall`` / ``f1`` (per image, min(true, predicted) objects are counted right; the
    rest are over- or under-counts) and ``presence`` P/R/F1 (an image holds at least one)."""
    if category is not None:
        gt, pred = gt[gt["category"] == category], pred[pred["category"] == category]
    pred = pred[pred["score"] >= score_threshold]
    if "iscrowd" in gt:
        gt = gt[~gt["iscrowd"].fillna(False).astype(bool)]
    keys = list(images) if images is not None else sorted(set(gt["image"]) | set(pred["image"]),
                                                          key=str)
    true = gt.groupby("image").size().reindex(keys, fill_value=0).to_numpy()
    predicted = pred.groupby("image").size().reindex(keys, fill_value=0).to_numpy()
    right = np.minimum(true, predicted)
    counts = _prf(int(right.sum()), int((predicted - right).sum()), int((true - right).sum()))
    has, said = true > 0, predicted > 0
    presence = _prf(int((has & said).sum()), int((~has & said).sum()), int((has & ~said).sum()))
    error = predicted - true
    return {"per_image": pd.DataFrame({"image": keys, "true": true, "predicted": predicted,
                                       "error": error}),
            "mae": float(np.abs(error).mean()) if len(keys) else float("nan"),
            "rmse": float(np.sqrt((error ** 2).mean())) if len(keys) else float("nan"),
            "precision": counts["precision"], "recall": counts["recall"], "f1": counts["f1"],
            "presence": presence, "images": len(keys)}


# -- segmentation ---------------------------------------------------------------------------------
def segmentation_metrics(gt_masks: Sequence[np.ndarray], pred_masks: Sequence[np.ndarray], *,
                         classes: Mapping[int, str] | None = None,
                         ignore_index: int | None = 255) -> dict:
    """Per-class ``iou`` and ``dice``, ``pixel_accuracy`` and ``mean_iou`` (over classes in
    the ground truth or the predictions) of class-id masks (pairs of ``H x W`` integer
    arrays). ``classes`` names the ids (0 is background unless named otherwise); pixels whose
    ground truth is ``ignore_index`` are left out."""
    if len(gt_masks) != len(pred_masks):
        raise ValueError(f"{len(gt_masks)} ground-truth masks but {len(pred_masks)} predicted")
    pairs = []
    for i, (g, p) in enumerate(zip(gt_masks, pred_masks)):
        g, p = np.asarray(g), np.asarray(p)
        if g.shape != p.shape:
            raise ValueError(f"mask {i}: ground truth is {g.shape}, prediction {p.shape}")
        keep = np.ones(g.shape, bool) if ignore_index is None else g != ignore_index
        pairs.append((g[keep].astype(np.int64), p[keep].astype(np.int64)))
    size = 1 + max([int(max(g.max(initial=0), p.max(initial=0))) for g, p in pairs] + [0])
    confusion = np.zeros((size, size), np.int64)
    for g, p in pairs:
        confusion += np.bincount(g * size + p, minlength=size * size).reshape(size, size)
    tp = np.diag(confusion).astype(np.float64)
    fp = confusion.sum(0) - tp
    fn = confusion.sum(1) - tp
    names = dict(classes or {})
    names.setdefault(0, "background")
    per_class = {}
    for c in range(size):
        if tp[c] + fp[c] + fn[c] == 0:
            continue
        per_class[names.get(c, str(c))] = {
            "iou": float(tp[c] / (tp[c] + fp[c] + fn[c])),
            "dice": float(2 * tp[c] / (2 * tp[c] + fp[c] + fn[c])),
            "gt_pixels": int(confusion[c].sum()), "pred_pixels": int(confusion[:, c].sum())}
    total = confusion.sum()
    return {"per_class": per_class,
            "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
            "mean_iou": float(np.mean([v["iou"] for v in per_class.values()]))
            if per_class else float("nan"),
            "mean_dice": float(np.mean([v["dice"] for v in per_class.values()]))
            if per_class else float("nan")}


# -- reading ground truth and predictions ---------------------------------------------------------
def ground_truth(ws, version: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(gt, images)`` of a workspace version: ``gt`` rows keyed by ``image`` = sample id,
    with ``area`` and ``iscrowd``; ``images``: ``image``, ``relpath``, ``path``, ``width``,
    ``height``, ``coco_id`` (the id a COCO export of the version gives the image) and
    ``condition`` (from the import's image metadata, if any)."""
    from smartset.detection.store import annotations

    ann = annotations(ws, version)
    samples = ws.samples(version).sort_values(["relpath", "id"], kind="stable")
    from smartset.detection.store import image_meta

    meta = image_meta(ws)
    images = pd.DataFrame({"image": samples["id"].to_numpy(),
                           "relpath": samples["relpath"].to_numpy(),
                           "path": samples["path"].to_numpy(),
                           "width": samples["width"].to_numpy(),
                           "height": samples["height"].to_numpy()})
    images["coco_id"] = np.arange(1, len(images) + 1)
    images["condition"] = [meta.get(s, {}).get("condition") for s in images["image"]]
    gt = pd.DataFrame({"image": ann["sample_id"], "category": ann["category"], "x": ann["x"],
                       "y": ann["y"], "w": ann["w"], "h": ann["h"], "area": ann["area"],
                       "iscrowd": [bool(a.get("iscrowd")) for a in ann["attributes"]],
                       "annotation_id": ann["id"]})
    return gt, images


def image_conditions(images: pd.DataFrame, *, source: str = "auto") -> dict:
    """``{image: condition}``: ``source="meta"`` takes the ``condition`` column (from the
    import's image metadata), ``"pixels"`` measures each image
    (:func:`~smartset.detection.brightness_condition`), ``"auto"`` the metadata where
    present, else the pixels."""
    from smartset.detection.synth import brightness_condition
    from smartset.imageio import load_image

    out = {}
    for image, path, given in zip(images["image"], images["path"],
                                  images.get("condition", [None] * len(images))):
        if source != "pixels" and isinstance(given, str):
            out[image] = given
        elif source == "meta":
            out[image] = "unknown"
        else:
            out[image] = brightness_condition(load_image(path, mode="RGB"))
    return out


def load_predictions(path: str | Path, images: pd.DataFrame,
                     categories: Mapping[int, str] | None = None) -> pd.DataFrame:
    """Predictions from a COCO results file (``[{"image_id", "category_id", "bbox",
    "score"}]``; ``image_id`` is the image's id in a COCO export of the version, or a sample
    id, relative path or file name, also accepted as ``file_name``) or from a folder of
    YOLO ``.txt`` files (``class cx cy w h [score]``, named like the images).
    ``images``: from :func:`ground_truth`; ``categories``: number -> name."""
    path = Path(path)
    categories = dict(categories or {})
    by_key: dict = {}
    for image, rel, coco_id in zip(images["image"], images["relpath"], images["coco_id"]):
        for key in (image, rel, os.path.basename(rel), os.path.splitext(os.path.basename(rel))[0],
                    int(coco_id)):
            by_key.setdefault(key, image)
    size = dict(zip(images["image"], zip(images["width"], images["height"])))
    rows, unknown = [], set()
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise SourceError(f"'{path}' is not valid JSON (line {error.lineno}: {error.msg}).") \
                from None
        if isinstance(data, dict):
            data = data.get("annotations", [])
        for i, det in enumerate(data):
            key = det.get("file_name", det.get("sample_id", det.get("image_id")))
            image = by_key.get(key)
            if image is None and isinstance(key, str):
                image = by_key.get(os.path.basename(key))
            if image is None:
                unknown.add(str(key))
                continue
            cat = det.get("category", categories.get(det.get("category_id"),
                                                     det.get("category_id")))
            try:
                x, y, w, h = (float(v) for v in det["bbox"])
            except (KeyError, TypeError, ValueError):
                raise SourceError(f"'{path}': result {i} has no valid bbox [x, y, w, h].") \
                    from None
            rows.append((image, str(cat), x, y, w, h, float(det.get("score", 1.0))))
    elif path.is_dir():
        names = {i: name for i, (_, name) in enumerate(sorted(categories.items()))}
        for label in sorted(path.rglob("*.txt")):
            image = by_key.get(label.stem)
            if image is None:
                unknown.add(label.name)
                continue
            width, height = size[image]
            for number, line in enumerate(label.read_text(encoding="utf-8").splitlines(), 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) not in (5, 6):
                    raise SourceError(f"'{label}' line {number}: expected 'class cx cy w h "
                                      f"[score]', got {line.strip()!r}.")
                cls, (cx, cy, w, h) = int(fields[0]), (float(v) for v in fields[1:5])
                score = float(fields[5]) if len(fields) == 6 else 1.0
                rows.append((image, names.get(cls, str(cls)), (cx - w / 2) * width,
                             (cy - h / 2) * height, w * width, h * height, score))
    else:
        raise SourceError(f"Predictions '{path}' do not exist: give a COCO results .json or a "
                          f"folder of YOLO .txt files.")
    if unknown and not rows:
        raise SourceError(f"None of the predictions in '{path}' names a known image (e.g. "
                          f"{sorted(unknown)[:3]}); use the image ids of a COCO export of "
                          f"the version, sample ids or file names.")
    return pd.DataFrame(rows, columns=["image", "category", "x", "y", "w", "h", "score"])


CONDITION_SOURCES = ("auto", "meta", "pixels", "none")


def _plain(value):
    """``value`` with NaN as None, numpy scalars as Python numbers and keys as strings (it
    is stored in the catalog as JSON and printed with --json)."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return _plain(value.item())
    return value


def evaluate_predictions(ws, predictions: str | Path, version: str | None = None, *,
                         iou_threshold: float = 0.5, score_threshold: float = 0.5,
                         conditions: str = "auto", montage: bool = True) -> dict:
    """Score a predictions file (COCO results ``.json`` or a folder of YOLO ``.txt``)
    against the annotations of ``version`` (None: the live catalog), recorded as a
    ``detect evaluate`` run (failed if it raises).

    Returns ``run_id``; ``metrics`` (precision, recall, F1 at ``iou_threshold`` over the
    detections scoring at least ``score_threshold``, COCO mAP@[.5:.95], mAP50, per class);
    ``knife_table`` (rows by condition x object size; ``conditions``: one of
    :data:`CONDITION_SOURCES`: image metadata, measured brightness, either, or none);
    ``counting`` (counting and presence F1); ``montage``: the worst false positives and
    misses as a PNG under ``reports/detect/`` (None without errors or with ``montage=False``).
    """
    from smartset.detection.montage import error_montage
    from smartset.detection.store import categories

    if conditions not in CONDITION_SOURCES:
        raise SourceError(f"Unknown conditions {conditions!r}; choose one of "
                          f"{', '.join(CONDITION_SOURCES)}.")
    gt, images = ground_truth(ws, version)
    pred = load_predictions(predictions, images, categories(ws))
    run_id = ws.catalog.start_run("detect evaluate", {
        "predictions": str(predictions), "version": version, "iou": iou_threshold,
        "score_threshold": score_threshold, "conditions": conditions})
    try:
        metrics = evaluate_detections(gt, pred, iou_threshold=iou_threshold,
                                      score_threshold=score_threshold)
        table = knife_table(gt, pred, None if conditions == "none" else
                            image_conditions(images, source=conditions),
                            iou_threshold=iou_threshold, score_threshold=score_threshold,
                            images=list(images["image"]))
        counting = counting_f1(gt, pred, images=list(images["image"]),
                               score_threshold=score_threshold)
        counting.pop("per_image")
        result = _plain({"run_id": run_id, "metrics": metrics,
                         "knife_table": table.to_dict("records"), "counting": counting})
        shown = None
        if montage:
            shown = error_montage(gt, pred, images,
                                  ws.reports_dir / "detect" / f"errors-run-{run_id}.png",
                                  iou_threshold=iou_threshold, score_threshold=score_threshold)
        result["montage"] = shown and _plain({k: shown[k] for k in
                                              ("path", "false_positives", "misses")})
    except BaseException:
        ws.catalog.finish_run(run_id, {}, status="failed")
        raise
    ws.catalog.finish_run(run_id, {k: v for k, v in result["metrics"].items()
                                   if k != "per_class"})
    return result


def evaluate_masks(ws, predictions: str | Path | None = None, version: str | None = None, *,
                   baseline: bool = False) -> dict:
    """Per-class IoU and Dice, pixel accuracy and mean IoU of predicted masks against the
    painted annotations of ``version``, recorded as a ``detect evaluate-masks`` run.

    ``predictions``: a folder of class-id PNG masks, each found by its image's file name
    (``STEM*.png``, searched recursively); or ``baseline=True``: the baseline segmenter's
    masks. Raises :class:`SourceError` naming the image whose mask is missing.
    """
    from PIL import Image

    from smartset.detection import _rle
    from smartset.detection.store import annotations, categories
    from smartset.detection.synth import baseline_segmenter
    from smartset.imageio import load_image

    if (predictions is None) == (not baseline):
        raise SourceError("Give a folder of predicted masks, or baseline=True (--baseline), "
                          "not both.")
    cats = categories(ws)
    numbers = {name: n for n, name in cats.items()}
    ann = annotations(ws, version)
    run_id = ws.catalog.start_run("detect evaluate-masks", {
        "predictions": None if predictions is None else str(predictions),
        "baseline": baseline, "version": version})
    try:
        gts, preds = [], []
        for (_sid, path, rel, h, w), group in ann.groupby(
                ["sample_id", "path", "relpath", "height", "width"], sort=True):
            gts.append(_rle.paint([(numbers[r.category], r.segmentation, (r.x, r.y, r.w, r.h))
                                   for r in group.itertuples()], int(h), int(w)))
            if baseline:
                preds.append(baseline_segmenter(load_image(path, mode="RGB"), numbers))
                continue
            stem = Path(rel).stem
            found = sorted(Path(predictions).rglob(f"{stem}*.png"))
            if not found:
                raise SourceError(f"No predicted mask for '{rel}' in '{predictions}' "
                                  f"(expected {stem}.png).")
            with Image.open(found[0]) as mask:
                preds.append(np.asarray(mask))
        result = _plain(segmentation_metrics(gts, preds, classes=cats))
    except BaseException:
        ws.catalog.finish_run(run_id, {}, status="failed")
        raise
    ws.catalog.finish_run(run_id, {k: v for k, v in result.items() if k != "per_class"})
    return {"run_id": run_id, **result}
