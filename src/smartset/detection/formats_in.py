"""Reading annotation formats into an :class:`~smartset.detection.AnnotationSet`.

=========  ===================================================================================
format     looks like
=========  ===================================================================================
``coco``   one ``.json`` with ``images``, ``annotations``, ``categories`` (boxes, polygons,
           RLE masks); images under the file's folder, ``images/`` or a split folder
``yolo``   ``data.yaml`` (``path``, ``train``/``val``/``test``, ``names``) with
           ``images/...`` and ``labels/...`` (one ``.txt`` per image: ``class cx cy w h``
           normalised, or ``class x1 y1 x2 y2 ...`` polygons), or a flat folder with
           ``classes.txt``/``obj.names``
``voc``    Pascal VOC: ``Annotations/*.xml`` and ``JPEGImages/`` (or XML beside the images),
           splits from ``ImageSets/Main/*.txt``
``masks``  ``images/`` and ``masks/`` (or ``labels/``, ``annotations/``,
           ``SegmentationClass/``): PNG masks of class ids (grayscale or palette) matched by
           name, with a class map (``classes.json``, ``class_map.json``, ``labelmap.txt``
           or ``classes.txt``)
``pairs``  one folder of images, each with its mask beside it (``x.jpg`` + ``x_mask.png``,
           ``_label``, ``_seg``, ``_gt``), class map as for ``masks``
=========  ===================================================================================

Readers parse and record what they cannot parse (bad records, unknown categories, duplicate
ids, annotations without an image) as issues; :func:`smartset.detection.validate` then
checks paths and geometry against the images.
"""

from __future__ import annotations

import json
import math
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from smartset.detection import _rle
from smartset.detection._model import Annotation, AnnotationSet, ImageRecord
from smartset.errors import SourceError
from smartset.imageio import IMAGE_EXTENSIONS
from smartset.ingest._sources import label_problem

_INT64 = 1 << 63
_MAX_SIDE = 1 << 31


def _coco_id(value):
    """``value`` when it can be an id (an integer within 64 bits, or non-empty text), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else None
    if isinstance(value, str) and value and len(value) <= 200:
        return value
    return None


def _load_json(path: Path):
    """``path`` parsed as JSON, or a :class:`SourceError` naming the file and the fix."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise SourceError(f"'{path}' is not valid JSON (line {error.lineno}, column "
                          f"{error.colno}: {error.msg}). Fix the file and import again.") from None
    except RecursionError:
        raise SourceError(f"'{path}' nests JSON too deeply to read. Fix the file and import "
                          f"again.") from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise SourceError(f"'{path}' holds a value JSON readers refuse ({error}). Fix the "
                          f"file and import again.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SourceError(f"Cannot read '{path}': {error}.") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SourceError(f"Cannot read '{path}' as UTF-8 text ({error}). Save it as UTF-8 "
                          f"and import again.") from None

__all__ = ["FORMATS", "detect_format", "read_annotations", "read_coco", "read_yolo",
           "read_voc", "read_masks", "read_pairs", "read_class_map", "image_size"]

FORMATS = ("coco", "yolo", "voc", "masks", "pairs")
MASK_DIRS = ("masks", "labels", "annotations", "SegmentationClass", "SegmentationClassPNG",
             "segmentations", "gt")
IMAGE_DIRS = ("images", "JPEGImages", "imgs", "img")
PAIR_SUFFIXES = ("_mask", "_label", "_labels", "_seg", "_gt", ".mask")
CLASS_MAP_FILES = ("classes.json", "class_map.json", "labelmap.txt", "classes.txt", "obj.names")
VOID_VALUES = (255,)  # Pascal VOC's object borders: not a class, not an issue
_STANDARD_COCO_ANN = {"id", "image_id", "category_id", "bbox", "segmentation", "area"}
_STANDARD_COCO_IMAGE = {"id", "file_name", "width", "height"}


def _split_of(text: str) -> str | None:
    words = re.split(r"[^a-z]+", text.lower())
    for word in words:
        for name, split in (("train", "train"), ("training", "train"), ("val", "val"),
                            ("valid", "val"), ("validation", "val"), ("test", "test")):
            if word.startswith(name) and (word == name or word[len(name):].isdigit()):
                return split
    return None


def image_size(path: str | Path) -> tuple[int, int] | None:
    """``(width, height)`` from the file's header, or None if it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk(root: Path) -> list[str]:
    out = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        rel = os.path.relpath(folder, root)
        for name in sorted(names):
            out.append(name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}")
    return out


# -- detection ---------------------------------------------------------------------------
def _coco_keys(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16).decode("utf-8", "ignore")
    except OSError:
        return False
    return '"images"' in head or '"annotations"' in head or '"categories"' in head


def detect_format(path: str | Path) -> str:
    """Name the annotation format of ``path`` (a file or a folder); see :data:`FORMATS`."""
    path = Path(path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".json" and _coco_keys(path):
            return "coco"
        if suffix in (".yaml", ".yml"):
            return "yolo"
        if suffix == ".xml":
            return "voc"
        raise SourceError(f"Cannot tell the annotation format of '{path}': expected a COCO "
                          f".json, a YOLO data.yaml or a VOC .xml. Pass --format.")
    if not path.is_dir():
        raise SourceError(f"Annotation source '{path}' does not exist. Check the path.")
    names = set(os.listdir(path))
    if any(n.lower().endswith((".yaml", ".yml")) for n in names):
        return "yolo"
    if "Annotations" in names or any(n.lower().endswith(".xml") for n in names):
        return "voc"
    jsons = [path / n for n in sorted(names) if n.lower().endswith(".json")
             and n not in CLASS_MAP_FILES]
    if "annotations" in names and (path / "annotations").is_dir():
        jsons += sorted((path / "annotations").glob("*.json"))
    if any(_coco_keys(j) for j in jsons):
        return "coco"
    if any(d in names for d in IMAGE_DIRS) and any(d in names for d in MASK_DIRS):
        masks = next(path / d for d in MASK_DIRS if d in names)
        if any(n.lower().endswith(".txt") for n in os.listdir(masks)):
            return "yolo"
        return "masks"
    files = _walk(path)
    stems = {os.path.splitext(f)[0] for f in files if _is_image(f)}
    if any(s.endswith(PAIR_SUFFIXES) and s.rsplit("_", 1)[0] in stems or
           s.endswith(".mask") and s[:-5] in stems for s in stems):
        return "pairs"
    if any(f.endswith(".txt") and os.path.basename(f) not in CLASS_MAP_FILES for f in files):
        return "yolo"
    raise SourceError(f"Cannot tell the annotation format of folder '{path}': found no COCO "
                      f"JSON, data.yaml, YOLO .txt labels, VOC XML or image/mask pairs. "
                      f"Pass --format (one of {', '.join(FORMATS)}).")


def read_annotations(path: str | Path, *, format: str | None = None,
                     root: str | Path | None = None, **options) -> AnnotationSet:
    """Read annotations in ``format`` (detected if None) from ``path``; ``root``: the folder
    image paths are relative to (default: found next to the annotations)."""
    path = Path(path).expanduser().resolve()
    format = format or detect_format(path)
    readers = {"coco": read_coco, "yolo": read_yolo, "voc": read_voc, "masks": read_masks,
               "pairs": read_pairs}
    if format not in readers:
        raise SourceError(f"Unknown annotation format {format!r}; choose one of "
                          f"{', '.join(FORMATS)}.")
    return readers[format](path, root=root, **options)


# -- COCO ---------------------------------------------------------------------------------
def _coco_root(path: Path, files: list[str]) -> Path:
    candidates = [path.parent, path.parent / "images", path.parent.parent]
    split = _split_of(path.stem)
    for folder in (path.parent.parent, path.parent):
        for name in ([f"{split}2017", split] if split else []) + ["images"]:
            candidates.append(folder / name)
            candidates.append(folder / "images" / name)
    probe = [f for f in files[:20] if isinstance(f, str) and not os.path.isabs(f)]
    for folder in candidates:
        if probe and all((folder / f).exists() for f in probe[:5]):
            return folder
    return path.parent


def read_coco(path: str | Path, *, root: str | Path | None = None) -> AnnotationSet:
    """A COCO instances file: images, categories, annotations with boxes, polygons or RLE."""
    path = Path(path)
    if path.is_dir():
        found = [p for p in sorted(path.glob("*.json")) + sorted(path.glob("annotations/*.json"))
                 if p.name not in CLASS_MAP_FILES and _coco_keys(p)]
        if not found:
            raise SourceError(f"No COCO .json in '{path}'.")
        path = found[0]
    data = _load_json(path)
    if not isinstance(data, dict) or not all(isinstance(data.get(key) or [], list)
                                             for key in ("images", "annotations", "categories")):
        raise SourceError(f"'{path}' is not a COCO file: expected an object with 'images', "
                          f"'annotations' and 'categories' lists.")
    where = path.name
    raw_images = data.get("images") or []
    files = [im.get("file_name") for im in raw_images if isinstance(im, dict)]
    root_path = Path(root).resolve() if root else _coco_root(path, files)
    out = AnnotationSet("coco", str(root_path), str(path))
    split = _split_of(path.stem)
    for cat in data.get("categories") or []:
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            out.issue("bad_annotation", f"{where}: category {cat!r}"[:200],
                      "a category needs 'id' and 'name'; dropped.")
            continue
        number = _coco_id(cat["id"])
        if number is None:
            out.issue("bad_annotation", f"{where}: category {str(cat)[:80]}",
                      "a category id must be an integer within 64 bits (or text); dropped.")
            continue
        if not isinstance(cat["name"], (str, int)) or label_problem(str(cat["name"])):
            problem = label_problem(str(cat["name"])) or "it is not text"
            out.issue("bad_annotation", f"{where}: category {number}",
                      f"its name {str(cat['name'])[:40]!r} is refused: {problem}; dropped with "
                      f"its annotations. Give the category a name.")
            continue
        if number in out.categories:
            out.issue("duplicate_id", f"{where}: category id {number}",
                      f"category id {number} is declared twice ({out.categories[number]!r} "
                      f"and {cat['name']!r}); the first is kept. Give each category its own id.")
            continue
        out.categories[number] = str(cat["name"])
        if isinstance(cat.get("supercategory"), str) and not label_problem(cat["supercategory"]):
            out.supercategories[str(cat["name"])] = str(cat["supercategory"])
    by_id: dict = {}
    for im in raw_images:
        if not isinstance(im, dict) or _coco_id(im.get("id")) is None \
                or not isinstance(im.get("file_name"), str) or not im["file_name"] \
                or "\x00" in im["file_name"]:
            out.issue("bad_annotation", f"{where}: image {str(im)[:80]}",
                      "an image needs an 'id' (an integer within 64 bits) and a "
                      "'file_name'; dropped.")
            continue
        if im["id"] in by_id:
            out.issue("duplicate_id", f"{where}: image id {im['id']}",
                      f"image id {im['id']} is listed twice ('{by_id[im['id']].file}' and "
                      f"'{im['file_name']}'); the first is kept. Give each image its own id.")
            continue
        record = ImageRecord(im["file_name"], _int_or_none(im.get("width")),
                             _int_or_none(im.get("height")), split, str(im["id"]),
                             {k: v for k, v in im.items() if k not in _STANDARD_COCO_IMAGE})
        by_id[im["id"]] = record
        out.images.append(record)
    seen: set = set()
    append = out.annotations.append
    categories = out.categories
    for ann in data.get("annotations") or []:
        if not isinstance(ann, dict):
            out.issue("bad_annotation", f"{where}: annotation {str(ann)[:60]}",
                      "an annotation must be an object; dropped.")
            continue
        key = ann.get("id")
        label = f"{where}: annotation {str(key)[:40]}"
        if key is not None and _coco_id(key) is None:
            out.issue("bad_annotation", label, "an annotation id must be an integer within 64 "
                      "bits (or text); dropped.")
            continue
        if _coco_id(ann.get("image_id")) is None or _coco_id(ann.get("category_id")) is None:
            out.issue("bad_annotation", label, "'image_id' and 'category_id' must be integers "
                      "within 64 bits (or text); dropped.")
            continue
        if key is not None:
            if key in seen:
                out.issue("duplicate_id", label, f"annotation id {key} is used twice; the "
                          f"first is kept. Give each annotation its own id.")
                continue
            seen.add(key)
        image = by_id.get(ann.get("image_id"))
        if image is None:
            out.issue("orphan_annotation", label,
                      f"image_id {ann.get('image_id')!r} is not in 'images'; dropped. Add the "
                      f"image to 'images' or remove the annotation.")
            continue
        name = categories.get(ann.get("category_id"))
        if name is None:
            out.issue("unknown_category", label,
                      f"category_id {ann.get('category_id')!r} is not in 'categories' "
                      f"({', '.join(f'{k}={v}' for k, v in list(categories.items())[:10])}); "
                      f"dropped. Add the category or fix the id.")
            continue
        bbox = ann.get("bbox")
        segmentation = ann.get("segmentation") or None
        if bbox is not None:
            try:
                if not isinstance(bbox, (list, tuple)) or any(
                        isinstance(v, (bool, str)) for v in bbox):
                    raise TypeError(bbox)
                x, y, w, h = (float(v) for v in bbox)
                if not all(map(math.isfinite, (x, y, w, h))):
                    raise ValueError(bbox)
            except (TypeError, ValueError, OverflowError):
                out.issue("bad_annotation", label, f"bbox {str(bbox)[:80]} is not four finite "
                          f"numbers [x, y, width, height]; dropped.")
                continue
            bbox = (x, y, w, h)
        elif segmentation is None:
            out.issue("bad_annotation", label, "it has neither 'bbox' nor 'segmentation'; "
                      "dropped.")
            continue
        extra = {k: v for k, v in ann.items() if k not in _STANDARD_COCO_ANN}
        if not extra.get("iscrowd"):
            extra.pop("iscrowd", None)
        append(Annotation(image.file, name, bbox, segmentation, extra,
                          None if key is None else str(key)))
    return out


def _int_or_none(value):
    """A positive image side below 2^31, or None."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if 0 < number < _MAX_SIDE else None


# -- YOLO ---------------------------------------------------------------------------------
def _checked_names(names: dict, where) -> dict[int, str]:
    """A class map ``{id: name}`` with integer ids and acceptable names, or a SourceError."""
    out = {}
    for key, value in names.items():
        try:
            number = int(key)
        except (TypeError, ValueError, OverflowError):
            number = None
        if number is None or isinstance(key, (bool, float)) or not -_INT64 <= number < _INT64:
            raise SourceError(f"Class map '{where}': id {str(key)[:40]!r} is not an integer; "
                              f"give each class an integer id.")
        if not isinstance(value, (str, int)) or isinstance(value, bool) \
                or label_problem(str(value)):
            problem = label_problem(str(value)) or "it is not text"
            raise SourceError(f"Class map '{where}': the name of class {number} "
                              f"({str(value)[:40]!r}) is refused: {problem}. Fix the name.")
        out[number] = str(value)
    return out


def _names_from(value, where="names") -> dict[int, str]:
    if isinstance(value, dict):
        return _checked_names(value, where)
    if isinstance(value, (list, tuple)):
        return _checked_names(dict(enumerate(value)), where)
    return {}


def _read_names_file(path: Path) -> dict[int, str]:
    lines = [line.strip() for line in _read_text(path).splitlines()]
    return _checked_names(dict(enumerate(line for line in lines if line)), path)


def _label_path(image: Path) -> Path:
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def read_yolo(path: str | Path, *, root: str | Path | None = None) -> AnnotationSet:
    """YOLO labels: a ``data.yaml`` (or a folder holding one), or a folder of images with
    ``.txt`` labels beside them or under ``labels/``, class names from ``classes.txt``."""
    path = Path(path)
    yaml_file = path if path.is_file() else next(
        (p for p in sorted(path.glob("*.y*ml")) if p.suffix.lower() in (".yaml", ".yml")), None)
    base = (yaml_file.parent if yaml_file else path).resolve()
    out = AnnotationSet("yolo", str(base), str(yaml_file or path))
    splits: list[tuple[str | None, Path]] = []
    if yaml_file is not None:
        import yaml

        try:
            spec = yaml.safe_load(_read_text(yaml_file)) or {}
        except (yaml.YAMLError, RecursionError, ValueError) as error:
            raise SourceError(f"'{yaml_file}' is not valid YAML: {error}") from None
        if not isinstance(spec, dict):
            raise SourceError(f"'{yaml_file}' is not a YOLO data.yaml: expected a mapping with "
                              f"'names' and 'train'/'val'/'test' folders.")
        out.categories = _names_from(spec.get("names"), yaml_file)
        given = spec.get("path")
        if given is not None and not isinstance(given, str):
            given = str(given)
        if given and "\x00" in given:
            raise SourceError(f"'{yaml_file}': 'path' holds a NUL character. Fix it.")
        if given:
            candidate = (base / given).resolve()
            if _inside(candidate, base):
                base = candidate
            elif not os.path.isabs(str(given)) or candidate != base:
                out.issue("path_escape", f"{yaml_file.name}: path",
                          f"'path: {given}' leaves the data set folder '{base}'; refused, the "
                          f"folder of data.yaml is used. Make 'path' relative (or '.').")
        out.root = str(base)
        for split in ("train", "val", "test"):
            entries = spec.get(split)
            if entries is not None and not isinstance(entries, (str, list)):
                entries = str(entries)
            for entry in [entries] if isinstance(entries, str) else entries or []:
                if not isinstance(entry, str) or not entry or "\x00" in entry:
                    out.issue("bad_file", f"{yaml_file.name}: {split}",
                              f"'{split}' entry {str(entry)[:40]!r} is not a folder or list "
                              f"name; refused.")
                    continue
                folder = (base / entry).resolve()
                if not _inside(folder, base):
                    out.issue("path_escape", f"{yaml_file.name}: {split}",
                              f"'{split}: {entry}' leaves the data set folder '{base}'; "
                              f"refused. Keep images inside the folder of data.yaml.")
                    continue
                splits.append((split, folder))
    else:
        for name in CLASS_MAP_FILES:
            if (base / name).is_file() and name.endswith((".txt", ".names")):
                out.categories = _read_names_file(base / name)
                break
        splits.append((None, base / "images" if (base / "images").is_dir() else base))
    if root:
        out.root = str(Path(root).resolve())
    root_path = Path(out.root)
    known_labels: set[Path] = set()
    for split, folder in splits:
        if folder.suffix == ".txt" and folder.is_file():  # a list of image paths
            listed = [line.strip() for line in _read_text(folder).splitlines()
                      if line.strip() and "\x00" not in line]
            images = [(root_path / p).resolve() for p in listed]
        elif folder.is_dir():
            images = [folder / f for f in _walk(folder) if _is_image(f)]
        else:
            out.issue("image_missing", f"{split}: {folder}",
                      f"the {split} folder '{folder}' does not exist; nothing read from it.")
            continue
        for image in images:
            rel = str(image.resolve())  # made relative below
            label = _label_path(image)
            known_labels.add(label)
            size = image_size(image) if image.exists() else None
            record = ImageRecord(rel, *(size or (None, None)), split)
            out.images.append(record)
            if label.is_file():
                _read_yolo_labels(out, label, record, root_path)
    if not out.categories:
        numbers = sorted({int(a.category) for a in out.annotations})
        out.categories = {n: str(n) for n in numbers}
    else:
        names = out.categories
        kept = []
        for ann in out.annotations:
            number = int(ann.category)
            if number in names:
                ann.category = names[number]
                kept.append(ann)
            else:
                out.issue("unknown_category", f"{ann.key}",
                          f"class {number} is not in names (0..{max(names)}); dropped. Add it "
                          f"to 'names' in data.yaml or fix the label.")
        out.annotations = kept
    _relative_to_images(out, None if root else root_path / "images")
    for folder in {_label_path(f / "x.jpg").parent for _, f in splits if f.is_dir()}:
        if folder.is_dir() and folder != root_path:
            for rel in _walk(folder):
                label = folder / rel
                if rel.endswith(".txt") and label not in known_labels \
                        and label.name not in CLASS_MAP_FILES:
                    out.issue("orphan_annotation", os.path.relpath(label, root_path),
                              "a label file with no image of the same name; dropped. Add "
                              "the image or delete the label file.")
    return out


def _read_yolo_labels(out: AnnotationSet, label: Path, record: ImageRecord, root: Path) -> None:
    where = os.path.relpath(label, root).replace(os.sep, "/")
    try:
        lines = label.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        out.issue("bad_file", where, f"cannot read it ({error}); its labels are dropped.")
        return
    if record.width is None:
        if lines and any(line.strip() for line in lines):
            out.issue("image_missing", where, f"image '{record.file}' cannot be read, so its "
                      f"normalised labels cannot be placed; dropped.")
        return
    width, height = record.width, record.height
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        key = f"{where}:{number}"
        try:
            cls = int(fields[0])
            values = [float(v) for v in fields[1:]]
            if cls < 0 or not all(map(math.isfinite, values)):
                raise ValueError(line)
        except ValueError:
            out.issue("bad_annotation", key, f"line {number} {line.strip()!r} is not "
                      f"'class cx cy w h' numbers; dropped.")
            continue
        if len(values) == 4:
            cx, cy, w, h = values
            bbox = ((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height)
            segmentation = None
        elif len(values) >= 6 and len(values) % 2 == 0:
            xs = np.asarray(values[0::2]) * width
            ys = np.asarray(values[1::2]) * height
            segmentation = [[float(v) for pair in zip(xs, ys) for v in pair]]
            bbox = (float(xs.min()), float(ys.min()), float(xs.max() - xs.min()),
                    float(ys.max() - ys.min()))
        else:
            out.issue("bad_annotation", key, f"line {number} has {len(fields)} fields; a box "
                      f"needs 5 (class cx cy w h), a polygon an odd number >= 7; dropped.")
            continue
        out.annotations.append(Annotation(record.file, str(cls), bbox, segmentation, {}, key))


# -- Pascal VOC ---------------------------------------------------------------------------
def read_voc(path: str | Path, *, root: str | Path | None = None) -> AnnotationSet:
    """Pascal VOC XML: ``Annotations/*.xml`` with ``JPEGImages/``, or XML files beside the
    images; boxes are VOC's 1-based inclusive pixels, read as ``x = xmin - 1``,
    ``w = xmax - xmin + 1`` (detectron2's convention)."""
    path = Path(path)
    if path.is_file():
        base, xmls = path.parent, [path]
    else:
        base = path
        folder = path / "Annotations" if (path / "Annotations").is_dir() else path
        xmls = [folder / f for f in _walk(folder) if f.lower().endswith(".xml")]
    base = Path(root).resolve() if root else base.resolve()
    images_dir = base / "JPEGImages" if (base / "JPEGImages").is_dir() else None
    out = AnnotationSet("voc", str(base), str(path))
    splits = {}
    sets = base / "ImageSets" / "Main"
    for split in ("train", "val", "test"):
        if (sets / f"{split}.txt").is_file():
            for line in _read_text(sets / f"{split}.txt").split():
                splits[line] = split
    numbers: dict[str, int] = {}
    for xml in xmls:
        where = os.path.relpath(xml, base).replace(os.sep, "/")
        try:
            tree = ET.parse(xml).getroot()
        except (ET.ParseError, OSError, RecursionError, ValueError) as error:
            out.issue("bad_file", where, f"not valid XML ({error}); its boxes are dropped. "
                      f"Fix or re-export the file.")
            continue
        filename = (tree.findtext("filename") or "").strip()
        if not filename:
            filename = xml.with_suffix(".jpg").name
        if os.path.isabs(filename) or ".." in Path(filename).parts or "\x00" in filename:
            relfile = filename  # refused by validation, with the file named
        else:
            candidates = ([images_dir / filename] if images_dir else []) + [
                xml.parent / filename, base / filename]
            found = next((c for c in candidates if c.exists()), candidates[0])
            relfile = str(found.resolve())  # made relative to the root below
        size = tree.find("size")
        width = _int_or_none(size.findtext("width")) if size is not None else None
        height = _int_or_none(size.findtext("height")) if size is not None else None
        record = ImageRecord(relfile, width, height, splits.get(Path(filename).stem), None, {})
        out.images.append(record)
        for index, obj in enumerate(tree.findall("object")):
            key = f"{where}#{index}"
            name = (obj.findtext("name") or "").strip()
            box = obj.find("bndbox")
            try:
                xmin, ymin, xmax, ymax = (float(box.findtext(t)) for t in
                                          ("xmin", "ymin", "xmax", "ymax"))
                if not all(map(math.isfinite, (xmin, ymin, xmax, ymax))):
                    raise ValueError(box)
            except (AttributeError, TypeError, ValueError):
                out.issue("bad_annotation", key, "object without a numeric bndbox "
                          "(xmin, ymin, xmax, ymax); dropped.")
                continue
            if not name or label_problem(name):
                out.issue("bad_annotation", key, f"object without a usable <name> "
                          f"({label_problem(name) if name else 'none'}); dropped.")
                continue
            numbers.setdefault(name, len(numbers) + 1)
            attributes = {}
            for tag in ("difficult", "truncated", "occluded"):
                value = obj.findtext(tag)
                if value is not None and value.strip() not in ("", "0"):
                    attributes[tag] = _int_or_none(value.strip()) or value.strip()
            pose = (obj.findtext("pose") or "").strip()
            if pose and pose != "Unspecified":
                attributes["pose"] = pose
            out.annotations.append(Annotation(
                relfile, name, (xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1), None,
                attributes, key))
    out.categories = {n: name for name, n in numbers.items()}
    _relative_to_images(out, images_dir if images_dir and not root else None)
    return out


def _relative_to_images(out: AnnotationSet, images_dir: Path | None) -> None:
    """Make absolute image paths relative to ``images_dir`` if all lie in it, else to the
    set's root, so exports do not nest the source's image folder again."""
    absolute = [im.file for im in out.images if os.path.isabs(im.file)]
    root = Path(out.root)
    if images_dir is not None and absolute and all(
            _inside(Path(f), images_dir.resolve()) for f in absolute):
        root = images_dir.resolve()
        out.root = str(root)
    mapping = {f: os.path.relpath(f, root).replace(os.sep, "/") for f in absolute}
    for image in out.images:
        image.file = mapping.get(image.file, image.file)
    for ann in out.annotations:
        ann.file = mapping.get(ann.file, ann.file)


# -- segmentation masks ---------------------------------------------------------------------
def read_class_map(folder: Path) -> tuple[dict[int, str], str | None]:
    """``({pixel value: class name}, file)`` from the first class map file in ``folder``."""
    for name in CLASS_MAP_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".json"):
            data = _load_json(path)
            if isinstance(data, list):
                return _checked_names(dict(enumerate(data)), path), name
            if not isinstance(data, dict):
                raise SourceError(f"Class map '{path}' must be a list of names or an object "
                                  f"of id: name (or name: id). Fix the file.")
            if data and all(isinstance(v, int) and not isinstance(v, bool)
                            for v in data.values()):
                if len(set(data.values())) != len(data):
                    raise SourceError(f"Class map '{path}' gives two names the same id. Fix "
                                      f"the file.")
                return _checked_names({v: k for k, v in data.items()}, path), name
            return _checked_names(data, path), name
        if name == "labelmap.txt":  # VOC/CVAT: "name:r,g,b:parts:actions"
            lines = [line for line in _read_text(path).splitlines()
                     if line.strip() and not line.startswith("#")]
            return _checked_names({i: line.split(":")[0].strip()
                                   for i, line in enumerate(lines)}, path), name
        return _read_names_file(path), name
    return {}, None


_BACKGROUND = {"background", "_background_", "bg", "__background__"}


def _mask_annotations(out: AnnotationSet, record: ImageRecord, mask_path: Path,
                      class_map: dict[int, str], image_path: Path, where: str) -> None:
    size = image_size(image_path)
    try:
        with Image.open(mask_path) as mask_image:
            mask = np.asarray(mask_image)
    except (OSError, ValueError) as error:
        out.issue("bad_file", where, f"cannot read mask ({error}); dropped.")
        return
    if size is not None:
        record.width, record.height = size
    if mask.ndim == 3:
        if not (mask == mask[..., :1]).all():
            out.issue("bad_file", where, "an RGB colour mask; save masks as class ids "
                      "(grayscale or palette PNG); dropped.")
            return
        mask = mask[..., 0]
    if size is not None and (mask.shape[1], mask.shape[0]) != tuple(size):
        out.issue("mask_size_mismatch", where,
                  f"mask is {mask.shape[1]}x{mask.shape[0]}, its image '{record.file}' is "
                  f"{size[0]}x{size[1]}; dropped. Re-export the mask at the image's size.")
        return
    values = np.unique(mask)
    unknown = [int(v) for v in values if int(v) not in class_map and int(v) != 0
               and int(v) not in VOID_VALUES] if class_map else []
    if unknown:
        out.issue("mask_value_unknown", where,
                  f"pixel values {unknown[:10]} are not in the class map "
                  f"({', '.join(f'{k}={v}' for k, v in list(class_map.items())[:8])}); those "
                  f"pixels are ignored. Add them to the class map or fix the mask.")
    for value in values:
        value = int(value)
        if value == 0 and class_map.get(0, "background").lower() in _BACKGROUND:
            continue
        if value in VOID_VALUES and value not in class_map:
            continue
        if class_map and value not in class_map:
            continue
        name = class_map.get(value, str(value))
        rle = _rle.encode(mask == value)
        out.annotations.append(Annotation(record.file, name, _rle.rle_bbox(rle), rle,
                                          {"semantic": True}, f"{where}:{value}"))
    if not class_map:
        for value in values:
            if int(value) != 0 and int(value) not in VOID_VALUES:
                out.categories.setdefault(int(value), str(int(value)))


def read_masks(path: str | Path, *, root: str | Path | None = None) -> AnnotationSet:
    """``images/`` + ``masks/`` (or another mask folder): masks matched to images by name."""
    path = Path(path).resolve()
    images_dir = next((path / d for d in IMAGE_DIRS if (path / d).is_dir()), None)
    masks_dir = next((path / d for d in MASK_DIRS if (path / d).is_dir()), None)
    if images_dir is None or masks_dir is None:
        raise SourceError(f"'{path}' is not a mask folder: expected an image folder "
                          f"({', '.join(IMAGE_DIRS)}) and a mask folder ({', '.join(MASK_DIRS)}).")
    base = Path(root).resolve() if root else images_dir
    out = AnnotationSet("masks", str(base), str(path))
    class_map, _ = read_class_map(path)
    out.categories = {k: v for k, v in class_map.items() if v.lower() not in _BACKGROUND}
    masks = {os.path.splitext(f)[0]: masks_dir / f for f in _walk(masks_dir) if _is_image(f)}
    used = set()
    for rel in _walk(images_dir):
        if not _is_image(rel):
            continue
        image = images_dir / rel
        record = ImageRecord(os.path.relpath(image, base).replace(os.sep, "/"),
                             split=_split_of(rel.split("/")[0]) if "/" in rel else None)
        out.images.append(record)
        stem = os.path.splitext(rel)[0]
        if stem in masks:
            used.add(stem)
            where = os.path.relpath(masks[stem], path).replace(os.sep, "/")
            _mask_annotations(out, record, masks[stem], class_map, image, where)
    for stem in sorted(set(masks) - used):
        out.issue("mask_without_image", os.path.relpath(masks[stem], path),
                  f"no image named '{stem}.*' in '{images_dir.name}/'; dropped.")
    return out


def read_pairs(path: str | Path, *, root: str | Path | None = None) -> AnnotationSet:
    """A folder of images, each with its mask beside it: ``x.jpg`` + ``x_mask.png``."""
    path = Path(path).resolve()
    base = Path(root).resolve() if root else path
    out = AnnotationSet("pairs", str(base), str(path))
    class_map, _ = read_class_map(path)
    out.categories = {k: v for k, v in class_map.items() if v.lower() not in _BACKGROUND}
    files = [f for f in _walk(path) if _is_image(f)]
    stems = {os.path.splitext(f)[0]: f for f in files}
    masks, images = {}, []
    for f in files:
        stem = os.path.splitext(f)[0]
        owner = next((stem[: -len(s)] for s in PAIR_SUFFIXES
                      if stem.endswith(s) and stem[: -len(s)] in stems), None)
        if owner is not None:
            masks[owner] = f
        elif not stem.endswith(PAIR_SUFFIXES):
            images.append(f)
        else:
            out.issue("mask_without_image", f, "no image of the same name beside it; dropped.")
    for rel in images:
        record = ImageRecord(os.path.relpath(path / rel, base).replace(os.sep, "/"))
        out.images.append(record)
        mask = masks.get(os.path.splitext(rel)[0])
        if mask is not None:
            _mask_annotations(out, record, path / mask, class_map, path / rel, mask)
    return out


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False
