"""Checking an :class:`~smartset.detection.AnnotationSet` against its images.

Nothing is lost silently: every annotation or image left out is an issue with a named
reason (see :data:`~smartset.detection.ISSUE_REASONS`), naming the file and the annotation
and saying how to fix it; everything valid is kept.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from smartset.detection import _rle
from smartset.detection._model import Annotation, AnnotationSet

__all__ = ["check_paths", "validate", "safe_relpath"]


def safe_relpath(root: str | Path, file: str) -> str | None:
    """``file`` as a '/'-separated path under ``root``, or None if it is absolute or
    leaves ``root`` (``../``). Symbolic links are not followed: a path is judged by what
    it says."""
    if not file or os.path.isabs(file) or file.startswith(("\\", "~")) or \
            (len(file) > 1 and file[1] == ":"):
        return None
    normal = os.path.normpath(file.replace("\\", "/"))
    if normal == os.pardir or normal.startswith(os.pardir + os.sep) or normal.startswith("/"):
        return None
    return normal.replace(os.sep, "/")


def _where(aset: AnnotationSet, ann: Annotation) -> str:
    if aset.format == "coco":
        return f"{Path(aset.source).name}: annotation {ann.key}"
    return str(ann.key)


def check_paths(aset: AnnotationSet) -> AnnotationSet:
    """Refuse image paths that leave the root (``path_escape``), drop images whose file does
    not exist (``image_missing``) with their annotations; normalise the rest. In place."""
    root = Path(aset.root)
    where = Path(aset.source).name
    kept, renamed, dropped = [], {}, {}
    seen: set[str] = set()
    for image in aset.images:
        rel = safe_relpath(root, image.file)
        if rel is None:
            aset.issue("path_escape", f"{where}: image '{image.file}'",
                       f"the path is absolute or leaves the data root '{root}'; refused, with "
                       f"its annotations. Make it relative to the root (no '..').")
            dropped[image.file] = "path_escape"
            continue
        if not (root / rel).is_file():
            aset.issue("image_missing", f"{where}: image '{image.file}'",
                       f"'{root / rel}' does not exist; its annotations are dropped. Add the "
                       f"file or remove the image from the annotations.")
            dropped[image.file] = "image_missing"
            continue
        if rel in seen:
            aset.issue("duplicate_id", f"{where}: image '{image.file}'",
                       "the same file is listed twice; the first entry is kept.")
            dropped.setdefault(image.file, "duplicate")
            continue
        seen.add(rel)
        renamed[image.file] = rel
        image.file = rel
        kept.append(image)
    aset.images = kept
    annotations = []
    lost: dict[str, int] = {}
    for ann in aset.annotations:
        if ann.file in renamed:
            ann.file = renamed[ann.file]
            annotations.append(ann)
        elif ann.file in seen:
            annotations.append(ann)
        else:
            lost[ann.file] = lost.get(ann.file, 0) + 1
    for file, count in lost.items():
        if file not in dropped:
            aset.issue("orphan_annotation", f"{where}: image '{file}'",
                       f"{count} annotation(s) point to an image that is not listed; dropped.")
    aset.annotations = annotations
    return aset


def _polygon_area(flat) -> float:
    """Shoelace area of ``[x1, y1, x2, y2, ...]`` (plain Python: polygons are short)."""
    xs, ys = flat[0::2], flat[1::2]
    n = len(xs)
    total = 0.0
    for i in range(n):
        j = (i + 1) % n
        total += xs[i] * ys[j] - ys[i] * xs[j]
    return 0.5 * abs(float(total))


def _check_polygons(aset, ann, width, height) -> list | None:
    polygons = ann.segmentation
    if not isinstance(polygons, list):
        return None
    good = []
    for polygon in polygons:
        try:
            flat = [float(v) for v in polygon]
        except (TypeError, ValueError):
            flat = []
        if len(flat) >= 6 and len(flat) % 2 == 0 and all(map(math.isfinite, flat)) \
                and _polygon_area(flat) > 0:
            good.append(flat)
    if len(good) < len(polygons):
        aset.issue("polygon_degenerate", _where(aset, ann),
                   f"{len(polygons) - len(good)} of {len(polygons)} polygon(s) have fewer "
                   f"than 3 points, an odd number of coordinates or no area; "
                   f"{'the rest kept' if good else 'kept as a box'}. Redraw the outline.")
    return good or None


def validate(aset: AnnotationSet, sizes: Mapping[str, tuple[int, int]] | None = None
             ) -> AnnotationSet:
    """Check every annotation against its image's size (``sizes``: file -> ``(width,
    height)`` as read from the files; default: the sizes the annotations state). Boxes with
    no area are dropped, boxes wholly outside dropped, boxes reaching outside clipped,
    broken polygons and RLEs dropped (the box kept if valid). In place; returns ``aset``."""
    declared = {im.file: (im.width, im.height) for im in aset.images}
    if sizes is not None:
        for image in aset.images:
            real = sizes.get(image.file)
            if real is None:
                continue
            if image.width is not None and (image.width, image.height) != tuple(real):
                aset.issue("image_size_mismatch", f"{Path(aset.source).name}: image "
                           f"'{image.file}'", f"the annotations say {image.width}x"
                           f"{image.height}, the file is {real[0]}x{real[1]}; the file's "
                           f"size is used. Fix width/height in the annotations.")
            image.width, image.height = int(real[0]), int(real[1])
            declared[image.file] = (image.width, image.height)
    kept: list[Annotation] = []
    for ann in aset.annotations:
        width, height = declared.get(ann.file, (None, None))
        if width is None or height is None:
            if ann.segmentation is not None and not isinstance(ann.segmentation, dict):
                ann.segmentation = _check_polygons(aset, ann, 0, 0)
            kept.append(ann)
            continue
        if isinstance(ann.segmentation, dict):
            try:
                rle = _rle.to_rle(ann.segmentation, height, width)
                if tuple(rle["size"]) != (height, width):
                    raise ValueError(f"its size is {rle['size'][1]}x{rle['size'][0]} (w x h), "
                                     f"the image is {width}x{height}")
                counts = _rle.string_to_counts(rle["counts"])
                if int(counts.sum()) != width * height:
                    raise ValueError("its counts do not cover the image")
                area = int(counts[1::2].sum())
                ann.segmentation = rle
                if ann.bbox is None:
                    ann.bbox = _rle.rle_bbox(rle)
                if area == 0:
                    raise ValueError("it covers no pixel")
            except (ValueError, KeyError, TypeError) as error:
                aset.issue("rle_invalid", _where(aset, ann),
                           f"the RLE mask is not valid ({error}); "
                           f"{'kept as a box' if ann.bbox else 'dropped'}. Re-export the mask.")
                ann.segmentation = None
                if ann.bbox is None:
                    continue
        elif ann.segmentation is not None:
            ann.segmentation = _check_polygons(aset, ann, width, height)
            if ann.bbox is None:
                if ann.segmentation is None:
                    continue
                flat = np.concatenate([np.asarray(p) for p in ann.segmentation])
                xs, ys = flat[0::2], flat[1::2]
                ann.bbox = (float(xs.min()), float(ys.min()), float(np.ptp(xs)), float(np.ptp(ys)))
        x, y, w, h = ann.bbox
        if not (w > 0 and h > 0) or not all(map(math.isfinite, (x, y, w, h))):
            aset.issue("box_degenerate", _where(aset, ann),
                       f"box [x={x:g}, y={y:g}, w={w:g}, h={h:g}] has no area; dropped. Redraw "
                       f"it or delete it in the source.")
            continue
        x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
        if x2 <= x1 or y2 <= y1:
            aset.issue("box_outside_image", _where(aset, ann),
                       f"box [x={x:g}, y={y:g}, w={w:g}, h={h:g}] lies outside the "
                       f"{width}x{height} image '{ann.file}'; dropped. Check the coordinate "
                       f"convention (pixels, top-left origin).")
            continue
        if (x1, y1, x2, y2) != (x, y, x + w, y + h):
            tolerance = 1e-3 * max(width, height)
            if max(x1 - x, y1 - y, x + w - x2, y + h - y2) > tolerance:
                aset.issue("box_clipped", _where(aset, ann),
                           f"box [x={x:g}, y={y:g}, w={w:g}, h={h:g}] reaches outside the "
                           f"{width}x{height} image '{ann.file}'; clipped to it.")
            ann.bbox = (x1, y1, x2 - x1, y2 - y1)
        kept.append(ann)
    aset.annotations = kept
    return aset
