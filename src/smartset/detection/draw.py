"""Drawing boxes and masks on an image: for the review app, previews and reports."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from smartset.detection import _rle

__all__ = ["draw_targets", "category_colour"]

_PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
                     [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
                     [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40]], np.uint8)


def category_colour(category: str) -> tuple[int, int, int]:
    """A stable colour per category name (the same in every view)."""
    index = int(hashlib.blake2b(str(category).encode(), digest_size=2).hexdigest(), 16)
    return tuple(int(v) for v in _PALETTE[index % len(_PALETTE)])


def _rows(annotations) -> list[dict]:
    if annotations is None:
        return []
    if hasattr(annotations, "to_dict"):
        return annotations.to_dict("records")
    return [dict(a) for a in annotations]


def draw_targets(image: np.ndarray, annotations: Iterable[Mapping] | None, *,
                 labels: bool = True, mask_alpha: float = 0.45, width: int | None = None,
                 scores: bool = True) -> np.ndarray:
    """A copy of ``image`` (``H x W`` or ``H x W x C`` uint8) with ``annotations`` drawn:
    masks and polygons filled (``mask_alpha``), boxes outlined (``width`` pixels, default
    by image size), each in its category's colour, with ``category`` (and ``score`` if
    given) written above the box. ``annotations``: a DataFrame (as from
    :func:`smartset.detection.annotations`) or dicts with ``category`` and either ``bbox``
    ``[x, y, w, h]`` or ``x``, ``y``, ``w``, ``h``; optional ``segmentation``. Returns
    ``H x W x 3`` uint8; the input is not modified."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, 2)
    elif array.shape[2] == 1:
        array = np.repeat(array, 3, 2)
    elif array.shape[2] > 3:
        array = array[:, :, :3]
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    height, width_px = array.shape[:2]
    rows = _rows(annotations)
    out = array.astype(np.float32)
    boxes = []
    for row in rows:
        bbox = row.get("bbox")
        if bbox is None:
            bbox = (row["x"], row["y"], row["w"], row["h"])
        colour = np.array(category_colour(row.get("category")), np.float32)
        seg = row.get("segmentation")
        if isinstance(seg, float):  # NaN from a DataFrame
            seg = None
        if seg is not None and (isinstance(seg, dict) or len(seg)):
            try:
                mask = _rle.annotation_mask(seg, bbox, height, width_px)
            except (ValueError, KeyError):
                mask = None
            if mask is not None:
                out[mask] = (1 - mask_alpha) * out[mask] + mask_alpha * colour
        boxes.append((bbox, tuple(int(v) for v in colour), row))
    canvas = Image.fromarray(out.round().astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    line = width or max(1, round(max(height, width_px) / 200))
    try:
        font = ImageFont.load_default(size=max(10, round(max(height, width_px) / 40)))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for (x, y, w, h), colour, row in boxes:
        # a box under a pixel wide (a weak detector's, a scaled-down tile's) is drawn as
        # a pixel: Pillow refuses a rectangle whose end lies before its start
        draw.rectangle([x, y, x + max(w - 1, 0), y + max(h - 1, 0)], outline=colour,
                       width=line)
        if labels:
            text = str(row.get("category", ""))
            score = row.get("score")
            if scores and score is not None and score == score:
                text += f" {float(score):.2f}"
            draw.text((x + 1, max(0, y - 12)), text, fill=colour, font=font)
    return np.asarray(canvas)
