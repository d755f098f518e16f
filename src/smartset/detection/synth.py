"""Simulated detection data: geometric shapes with exact boxes and masks, brightness-shifted
copies (the knife study's conditions), and a baseline detector to evaluate end to end.

``synth_shapes`` writes ``images/*.png``, a COCO file (squares and triangles as polygons,
circles as RLE masks: both kinds of segmentation), and the same objects as semantic masks
(``masks/*.png`` with ``classes.json``), so one set exercises the box, polygon, RLE and mask
paths. The baseline detector thresholds the grey image and takes connected components:
it works in good light and fails in the dark, which is what the knife table shows.

``difficulty="hard"`` makes the set a harder test bench (the easy one is solved by a
threshold in good light): bright unlabelled clutter (thin bars, elongated ellipses and
rings that a threshold also picks up), bars partly occluding objects (the annotation is
the visible part, written as RLE), motion blur, a busier background and more sensor noise;
its ``artificial`` condition is strong light (overexposure, a saturated glare spot, washed-out
contrast), like the knife study's.

``low`` is night for both difficulties: values x 0.3 plus N(0, 6) sensor noise. A real
camera's dark frame is dark *and* noisy (read and shot noise do not scale down with the
light); the easy set's earlier ``low`` (values x 0.5, no noise) was dusk, and it barely hurt
a detector on pretrained features (plain training lost 0.005 F1 from high to low), so it
could not tell a method that copes with the dark from one that does not.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from smartset._atomic import atomic_path, write_text
from smartset._random import SeedLike, resolve_rng
from smartset.detection import _rle

__all__ = ["SHAPES", "CONDITIONS", "DIFFICULTIES", "synth_shapes", "shift_brightness", "brightness_condition",
           "baseline_detector", "baseline_segmenter", "detect_images"]

SHAPES = ("circle", "square", "triangle")
CONDITIONS = ("high", "medium", "low", "artificial")
DIFFICULTIES = ("easy", "hard")
_FILL = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}


def _shape_mask(kind: str, cx: float, cy: float, side: float, height: int, width: int,
                rng: np.random.Generator) -> tuple[np.ndarray, list | None]:
    """(mask, polygon or None) of one shape; polygons rasterise as COCO does."""
    if kind == "circle":
        ys, xs = np.mgrid[0:height, 0:width]
        r = side / 2
        return ((xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2 <= r * r), None
    half = side / 2
    if kind == "square":
        points = [cx - half, cy - half, cx + half, cy - half, cx + half, cy + half,
                  cx - half, cy + half]
    else:
        points = [cx, cy - half, cx + half, cy + half, cx - half, cy + half]
    points = [round(float(p), 2) for p in points]
    return _rle.decode(_rle.polygons_to_rle([points], height, width)).astype(bool), [points]


def synth_shapes(out_dir: str | Path, n: int = 40, *, seed: SeedLike = 0,
                 size: tuple[int, int] = (128, 128), classes: Sequence[str] = SHAPES,
                 max_objects: int = 4, side: tuple[int, int] = (8, 100),
                 empty_fraction: float = 0.1,
                 conditions: Sequence[str] | bool = False, difficulty: str = "easy") -> dict:
    """Write ``n`` images of non-overlapping shapes with exact annotations to ``out_dir``.

    ``size``: ``(height, width)``; ``classes``: a subset of :data:`SHAPES`; each image holds
    0 (``empty_fraction`` of them) to ``max_objects`` shapes of side ``side`` pixels (a
    range spanning COCO's small, medium and large objects). ``conditions``: ``True`` (all
    of :data:`CONDITIONS`) or a list: each image is written once per condition (the
    original counts as ``medium``; ``NAME_low.png`` etc. are brightness-shifted copies with
    the same objects; image metadata ``condition``), the knife study's setting.
    ``difficulty``: ``easy`` (default) or ``hard`` (clutter, occlusion, motion blur, noise
    and harsher conditions; see the module docstring).
    Files: ``images/``, ``annotations.json`` (COCO), ``masks/`` + ``classes.json``
    (semantic masks). Returns a summary dict with the paths.
    """
    rng = resolve_rng(seed)
    unknown = sorted(set(classes) - set(SHAPES))
    if unknown:
        raise ValueError(f"synth_shapes: unknown shape(s) {unknown}; shapes: {', '.join(SHAPES)}")
    if conditions is True:
        conditions = CONDITIONS
    conditions = list(conditions or [])
    bad = sorted(set(conditions) - set(CONDITIONS))
    if bad:
        raise ValueError(f"synth_shapes: unknown condition(s) {bad}; conditions: "
                         f"{', '.join(CONDITIONS)}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"synth_shapes: unknown difficulty {difficulty!r}; difficulties: "
                         f"{', '.join(DIFFICULTIES)}")
    hard = difficulty == "hard"
    height, width = (int(v) for v in size)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    numbers = {name: SHAPES.index(name) + 1 for name in classes}
    coco = {"images": [], "annotations": [],
            "categories": [{"id": numbers[c], "name": c, "supercategory": "shape"}
                           for c in classes]}
    ys, xs = np.mgrid[0:height, 0:width]
    # The easy set's night noise comes from a stream of its own: the easy low once drew
    # nothing, and this keeps every other image of a seed's easy set as it was. The hard
    # set drew its low noise from the scene stream from the start, and still does.
    night = rng if hard else _side_stream(rng)
    for index in range(n):
        texture = 40 + 18 * np.sin(xs / rng.uniform(6, 20) + rng.uniform(0, 6)) \
            * np.cos(ys / rng.uniform(6, 20))
        image = np.clip(texture[..., None] + rng.normal(0, 6, (height, width, 3)), 0, 255)
        if hard:  # a busier, brighter background: patches that come near the objects' grey
            image = _hard_background(image, xs, ys, rng)
        semantic = np.zeros((height, width), np.uint8)
        objects = []
        count = 0 if rng.random() < empty_fraction else int(rng.integers(1, max_objects + 1))
        for _ in range(count * 20):
            if len(objects) == count:
                break
            kind = classes[int(rng.integers(len(classes)))]
            s = float(rng.uniform(*side) if rng.random() < 0.5 else
                      np.exp(rng.uniform(np.log(side[0]), np.log(side[1]))))
            s = min(s, min(height, width) - 4)
            cx, cy = rng.uniform(s / 2 + 1, width - s / 2 - 1), rng.uniform(s / 2 + 1, height - s / 2 - 1)
            mask, polygon = _shape_mask(kind, cx, cy, s, height, width, rng)
            grown = mask | np.roll(mask, 2, 0) | np.roll(mask, -2, 0) | np.roll(mask, 2, 1) \
                | np.roll(mask, -2, 1)
            if mask.sum() < 9 or (grown & (semantic > 0)).any():
                continue
            colour = rng.uniform(150, 250, 3)
            image[mask] = colour + rng.normal(0, 4, (int(mask.sum()), 3))
            semantic[mask] = numbers[kind]
            objects.append((kind, mask, polygon))
        if hard:
            image, semantic, objects = _hard_scene(image, semantic, objects, rng)
        name = f"shape_{index:04d}"
        pixels = np.clip(image, 0, 255).round().astype(np.uint8)
        # the original is the "medium" condition; the others are shifted copies of it
        variants = [(f"_{c}" if c != "medium" else "", c) for c in conditions] or [("", None)]
        for suffix, condition in variants:
            file = f"{name}{suffix}.png"
            shifted = pixels if condition in (None, "medium") else shift_brightness(
                pixels, condition, seed=night if condition == "low" else rng,
                difficulty=difficulty)
            _save(out / "images" / file, shifted)
            _save(out / "masks" / file, semantic)
            image_id = len(coco["images"]) + 1
            coco["images"].append({"id": image_id, "file_name": file, "width": width,
                                   "height": height,
                                   **({"condition": condition} if condition else {})})
            for kind, mask, polygon in objects:
                rle = _rle.encode(mask)
                x, y, w, h = _rle.rle_bbox(rle)
                coco["annotations"].append({
                    "id": len(coco["annotations"]) + 1, "image_id": image_id,
                    "category_id": numbers[kind], "bbox": [x, y, w, h],
                    "area": float(mask.sum()), "iscrowd": 0,
                    "segmentation": polygon if polygon is not None else rle})
    write_text(out / "annotations.json", json.dumps(coco))
    write_text(out / "classes.json", json.dumps({"0": "background", **{
        str(numbers[c]): c for c in classes}}, indent=1))
    return {"folder": str(out), "coco": str(out / "annotations.json"),
            "masks": str(out / "masks"), "images": len(coco["images"]),
            "objects": len(coco["annotations"]), "conditions": conditions,
            "difficulty": difficulty}


def _side_stream(rng: np.random.Generator) -> np.random.Generator:
    """A generator independent of ``rng`` that leaves ``rng``'s own draws as they were
    (a spawned child; one seeded from ``rng`` when it has no seed sequence to spawn from)."""
    try:
        return rng.spawn(1)[0]
    except (TypeError, ValueError, AttributeError):
        return np.random.default_rng(int(rng.integers(2 ** 63)))


def _hard_background(image: np.ndarray, xs: np.ndarray, ys: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Brighter blotches (up to ~140 grey) and more noise on the background."""
    height, width = image.shape[:2]
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.1, 0.35) * max(height, width)
        blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * r * r))
        image = image + rng.uniform(30, 80) * blob[..., None]
    return image + rng.normal(0, 6, image.shape)


def _hard_scene(image: np.ndarray, semantic: np.ndarray, objects: list,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list]:
    """Clutter (unlabelled bright bars, thin ellipses, rings), occluding bars over some
    objects (annotations become the visible part), then motion blur on half the images."""
    import cv2

    height, width = semantic.shape
    canvas = np.ascontiguousarray(image.astype(np.float32))
    free = (semantic == 0).astype(np.uint8)
    for _ in range(int(rng.integers(1, 5))):  # clutter, kept off the objects
        layer = np.zeros((height, width), np.uint8)
        cx, cy = int(rng.uniform(0, width)), int(rng.uniform(0, height))
        span = int(rng.uniform(0.1, 0.45) * min(height, width))
        kind = rng.integers(3)
        if kind == 0:
            angle = rng.uniform(0, np.pi)
            dx, dy = int(span * np.cos(angle)), int(span * np.sin(angle))
            cv2.line(layer, (cx - dx, cy - dy), (cx + dx, cy + dy), 1,
                     int(rng.integers(1, 4)))
        elif kind == 1:
            cv2.ellipse(layer, (cx, cy), (max(2, span), max(1, span // int(rng.integers(3, 7)))),
                        float(rng.uniform(0, 180)), 0, 360, 1, -1)
        else:
            cv2.circle(layer, (cx, cy), max(3, span // 2), 1, int(rng.integers(1, 3)))
        grown = cv2.dilate(1 - free, np.ones((5, 5), np.uint8))
        where = (layer > 0) & (grown == 0)
        canvas[where] = rng.uniform(140, 240, 3)
    classes = semantic.copy()
    covered = np.zeros((height, width), bool)  # pixels hidden by the bars so far
    kept = []
    for kind, mask, polygon in objects:
        if (mask & covered).any():  # an earlier object's bar reaches this one
            mask, polygon = mask & ~covered, None
        if rng.random() < 0.35:  # a bar across part of the object, in background grey
            ys_, xs_ = np.nonzero(mask)
            x0, x1, y0, y1 = xs_.min(), xs_.max(), ys_.min(), ys_.max()
            bar = np.zeros((height, width), bool)
            if rng.random() < 0.5:
                x, half = int(rng.uniform(x0, x1 + 1)), max(1, (x1 - x0) // 6)
                bar[:, max(0, x - half):x + half] = True
            else:
                y, half = int(rng.uniform(y0, y1 + 1)), max(1, (y1 - y0) // 6)
                bar[max(0, y - half):y + half, :] = True
            bar &= _box_band(mask, 6)
            canvas[bar] = rng.uniform(30, 80, 3)
            covered |= bar
            kept = [(k, m & ~bar, None if (m & bar).any() else p) for k, m, p in kept]
            visible = mask & ~bar
            if visible.sum() < 0.5 * mask.sum():  # hidden too much: not an object to find
                canvas[visible] = rng.uniform(30, 80, 3)
                covered |= visible
                continue
            mask, polygon = visible, None
        kept.append((kind, mask, polygon))
    kept = [k for k in kept if k[1].sum() >= 9]
    semantic = np.zeros_like(semantic)
    for _, mask, _ in kept:
        semantic[mask] = classes[mask]
    if rng.random() < 0.5:  # motion blur of 3-9 pixels in a random direction
        length = int(rng.integers(3, 10))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0 / length
        rotation = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2),
                                           float(rng.uniform(0, 180)), 1.0)
        kernel = cv2.warpAffine(kernel, rotation, (length, length))
        kernel /= max(kernel.sum(), 1e-6)
        canvas = cv2.filter2D(canvas, -1, kernel, borderType=cv2.BORDER_REFLECT)
    canvas = canvas + rng.normal(0, 4, canvas.shape)
    return canvas, semantic, kept


def _box_band(mask: np.ndarray, margin: int) -> np.ndarray:
    """The part of the image within ``margin`` pixels of ``mask``'s box (so an occluding
    bar stays local to its object)."""
    ys_, xs_ = np.nonzero(mask)
    band = np.zeros(mask.shape, bool)
    band[max(0, ys_.min() - margin):ys_.max() + margin + 1,
         max(0, xs_.min() - margin):xs_.max() + margin + 1] = True
    return band


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG", compress_level=1)


def shift_brightness(image: np.ndarray, condition: str, *, seed: SeedLike = None,
                     difficulty: str = "easy") -> np.ndarray:
    """A copy of ``image`` (``H x W x 3`` uint8) as seen in ``condition``: ``high`` (bright
    day), ``medium`` (as is), ``low`` (night: values x 0.3 + N(0, 6) sensor noise, for both
    difficulties), ``artificial`` (night under a warm lamp: dark, with a yellow light falling
    off from a random point).

    ``difficulty="hard"``: ``artificial`` is strong light instead: contrast washed out
    towards a bright level, overexposed (x 1.5) with a saturated warm glare spot."""
    rng = resolve_rng(seed)
    x = image.astype(np.float32)
    if condition == "low":  # dark and noisy, as a camera's frame at night
        x = x * 0.3 + rng.normal(0, 6, x.shape)
    elif difficulty == "hard" and condition == "artificial":
        height, width = x.shape[:2]
        ys, xs = np.mgrid[0:height, 0:width]
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        glare = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * (0.3 * max(height, width)) ** 2))
        x = (0.55 * x + 0.45 * 170) * 1.5 \
            + 140 * glare[..., None] * np.array([1.0, 0.9, 0.7], np.float32)
    elif condition == "high":
        x = x * 1.15 + 20
    elif condition == "artificial":
        height, width = x.shape[:2]
        ys, xs = np.mgrid[0:height, 0:width]
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        light = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * (0.35 * max(height, width)) ** 2))
        x = x * (0.35 + 0.5 * light[..., None]) * np.array([1.0, 0.8, 0.45], np.float32) \
            + 55 * light[..., None] * np.array([1.0, 0.75, 0.3], np.float32)
    elif condition != "medium":
        raise ValueError(f"Unknown condition {condition!r}; conditions: {', '.join(CONDITIONS)}")
    return np.clip(x, 0, 255).round().astype(np.uint8)


def brightness_condition(image: np.ndarray, *, high: float = 0.4, low: float = 0.2,
                         warm: float = 1.4) -> str:
    """The knife study's brightness bucket of an image (``H x W [x 3]`` uint8): ``high``
    (mean luminance >= ``high``), ``low`` (< ``low``), ``medium`` between, and
    ``artificial``: not bright, with a warm cast (mean red over mean blue >= ``warm``), as
    under sodium or tungsten lamps."""
    x = np.asarray(image, np.float32) / 255.0
    if x.ndim == 3 and x.shape[2] >= 3:
        lum = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
        cast = float(x[..., 0].mean() / max(x[..., 2].mean(), 1e-3))
    else:
        lum, cast = x.reshape(x.shape[:2]), 1.0
    mean = float(lum.mean())
    if mean < high and cast >= warm:
        return "artificial"
    return "high" if mean >= high else "low" if mean < low else "medium"


def baseline_detector(image: np.ndarray, *, threshold: float | str = 110,
                      min_area: int = 9, classes: Sequence[str] = SHAPES) -> list[dict]:
    """Detect bright shapes in ``image`` (``H x W`` or ``H x W x 3`` uint8): pixels of the
    grey image above ``threshold`` (a value, or ``"otsu"``), connected components of at
    least ``min_area`` pixels, each classed by how much of its box it fills (square ~1,
    circle ~pi/4, triangle ~1/2). Returns ``[{"category", "bbox": [x, y, w, h], "score"}]``;
    the score is higher the closer the fill is to the class's and the larger the object."""
    import cv2

    grey = np.asarray(image)
    if grey.ndim == 3:
        grey = cv2.cvtColor(np.ascontiguousarray(grey[..., :3]), cv2.COLOR_RGB2GRAY)
    if threshold == "otsu":
        _, binary = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    else:
        binary = (grey > float(threshold)).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    found = []
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        if area < min_area:
            continue
        fill = area / float(w * h)
        kind = min(classes, key=lambda c: abs(_FILL[c] - fill))
        closeness = max(0.0, 1.0 - abs(_FILL[kind] - fill) / 0.25)
        score = round(0.5 * closeness + 0.5 * min(1.0, area / 400.0), 4)
        found.append({"category": kind, "bbox": [float(x), float(y), float(w), float(h)],
                      "score": max(score, 0.01)})
    return found


def baseline_segmenter(image: np.ndarray, classes: dict[str, int], *,
                       threshold: float | str = 110, min_area: int = 9) -> np.ndarray:
    """A class-id mask (``H x W`` uint8) from the baseline detector's components:
    each component's pixels get ``classes[category]`` (0 elsewhere)."""
    import cv2

    grey = np.asarray(image)
    if grey.ndim == 3:
        grey = cv2.cvtColor(np.ascontiguousarray(grey[..., :3]), cv2.COLOR_RGB2GRAY)
    binary = (grey > float(threshold)).astype(np.uint8) if threshold != "otsu" else \
        cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[1]
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    out = np.zeros(grey.shape, np.uint8)
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        if area < min_area:
            continue
        fill = area / float(w * h)
        kind = min(classes, key=lambda c: abs(_FILL.get(c, 0.75) - fill))
        out[labels == label] = classes[kind]
    return out


def detect_images(paths: Sequence[str | Path], *, keys: Sequence[str] | None = None,
                  **options):
    """Run :func:`baseline_detector` over image files; a predictions DataFrame with
    ``image`` (``keys[i]`` or the path), ``category``, ``x``, ``y``, ``w``, ``h``,
    ``score``."""
    import pandas as pd

    from smartset.imageio import load_image

    rows = []
    for i, path in enumerate(paths):
        key = keys[i] if keys is not None else str(path)
        for det in baseline_detector(load_image(path, mode="RGB"), **options):
            rows.append((key, det["category"], *det["bbox"], det["score"]))
    return pd.DataFrame(rows, columns=["image", "category", "x", "y", "w", "h", "score"])
