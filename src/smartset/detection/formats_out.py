"""Writing a version out: COCO, YOLO, Pascal VOC, PNG masks and image/mask pairs for
detection and segmentation; ImageFolder trees and CSV for classification; a Hugging Face
``imagefolder`` layout (``metadata.jsonl`` per split, loaded by
``datasets.load_dataset("imagefolder", data_dir=OUT)``), saved with ``datasets`` too when it
is installed. Any version can leave smartset: a cleaned or augmented one included.

Images are copied (or hard-linked, ``images="link"``) beside the annotations, so the export
is a self-contained folder; files are written atomically. Reading an export back with
:func:`~smartset.detection.import_annotations` gives the same annotations (tested per format).

Every name ingest accepts can be exported: control characters (a newline, a tab) in a file
name become ``_``, and a name too long to leave room for the derived files and the atomic
write's temporary name (over :data:`MAX_NAME_BYTES`) is shortened, keeping its extension and
a hash of the full name. A detection format (COCO, YOLO, VOC, masks, pairs) of a version
that has labels but no annotations is refused, naming the formats that keep labels.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from smartset._atomic import atomic_path, write_text
from smartset.detection import _rle
from smartset.errors import SourceError

__all__ = ["EXPORT_FORMATS", "LABEL_FORMATS", "MAX_NAME_BYTES", "export"]

EXPORT_FORMATS = ("coco", "yolo", "voc", "masks", "pairs", "imagefolder", "csv", "hf")
#: the formats that keep image-level (classification) labels
LABEL_FORMATS = ("imagefolder", "csv", "hf")
_SPLITS = ("train", "val", "test")
#: the longest exported file name, in bytes: file systems allow 255, and the export adds up
#: to 16 to an image's name for its derived files (``x_mask.png``, ``x.xml``, a ``id-``
#: prefix) plus 14 for the temporary name of an atomic write
MAX_NAME_BYTES = 200


def _safe_part(part: str, limit: int = MAX_NAME_BYTES) -> str:
    """One path component that every exporter can write: control characters become ``_``;
    a name over ``limit`` bytes keeps its extension and gets a hash of the full name."""
    clean = "".join("_" if ord(ch) < 32 or ord(ch) == 127 else ch for ch in str(part))
    if clean in ("", ".", ".."):
        clean = f"_{clean}"
    if len(os.fsencode(clean)) <= limit:
        return clean
    stem, ext = os.path.splitext(clean)
    if len(os.fsencode(ext)) > 16:
        stem, ext = clean, ""
    tag = "~" + hashlib.sha1(os.fsencode(str(part))).hexdigest()[:10]
    room = limit - len(os.fsencode(ext)) - len(tag)
    # cut at a byte count, dropping a character cut in half (and any undecodable byte)
    return os.fsencode(stem)[:room].decode("utf-8", "ignore") + tag + ext


def _safe_path(relpath: str) -> str:
    return "/".join(_safe_part(p) for p in str(relpath).split("/"))


def _num(value: float) -> float | int:
    value = float(value)
    return int(value) if value.is_integer() else round(value, 4)


def _names(frame: pd.DataFrame, *, flat: bool = False) -> list[str]:
    """A file name per sample: its relative path (``flat``: its base name), or
    ``id-name`` where names repeat."""
    names = [_safe_part(os.path.basename(r)) if flat else _safe_path(r) for r in frame["relpath"]]
    counts = Counter(names)
    return [name if counts[name] == 1 else _safe_part(f"{sid}-{os.path.basename(name)}")
            for sid, name in zip(frame["id"], names)]


def _place(source: str, target: Path, how: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    if how == "link":
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _split(value) -> str:
    return value if value in _SPLITS else "train"


def export(ws, version: str | None, out_dir: str | Path, *, format: str = "coco",
           images: str = "copy", palette: bool = False) -> dict:
    """Write ``version`` (None: the live catalog) to ``out_dir`` in ``format``: one of
    :data:`EXPORT_FORMATS`. ``images``: ``copy`` or ``link`` (hard links where the file
    system allows). ``palette``: write masks as palette PNGs (VOC colours) instead of
    grayscale ids. Returns a summary: files written, images, annotations, what was left
    out and why (e.g. boxes, which a mask cannot hold), seconds."""
    from smartset.detection.store import annotations, categories, image_meta, supercategories

    if format not in EXPORT_FORMATS:
        raise SourceError(f"Unknown export format {format!r}; choose one of "
                          f"{', '.join(EXPORT_FORMATS)}.")
    if images not in ("copy", "link"):
        raise SourceError(f"images must be 'copy' or 'link', got {images!r}.")
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = ws.samples(version).sort_values(["relpath", "id"], kind="stable").reset_index(drop=True)
    # YOLO finds a label by the image path's last "images" folder: keep names flat there
    frame["name"] = _names(frame, flat=format == "yolo")
    ann = annotations(ws, version)
    labeled = int(frame["label"].notna().sum()) if "label" in frame else 0
    if format not in LABEL_FORMATS and not len(ann) and labeled:
        where = f"Version {version!r}" if version else "The live catalog"
        raise SourceError(
            f"{where} has {labeled} labeled image(s) and no boxes or masks: --format {format} "
            f"holds annotations only, so the labels would be lost. Export a classification set "
            f"with --format imagefolder (SPLIT/CLASS/IMAGE), csv (labels.csv) or hf "
            f"(datasets.load_dataset, label as a ClassLabel).")
    cats = categories(ws)
    meta = image_meta(ws)
    writer = {"coco": _coco, "yolo": _yolo, "voc": _voc, "masks": _masks, "pairs": _pairs,
              "imagefolder": _imagefolder, "csv": _csv, "hf": _hf}[format]
    supers = supercategories(ws)
    summary = writer(out, frame, ann, cats, meta, images, palette=palette, supers=supers)
    summary.update({"format": format, "out": str(out), "version": version,
                    "images": summary.get("images", len(frame)),
                    "seconds": round(time.perf_counter() - started, 4)})
    return summary


def _groups(ann: pd.DataFrame) -> dict[str, list[dict]]:
    """Annotation rows as plain dicts, by sample id (in the frame's order)."""
    out: dict[str, list[dict]] = {}
    for record in ann.to_dict("records"):
        out.setdefault(record["sample_id"], []).append(record)
    return out


def _put(target: Path, text: str) -> None:
    """Write ``text`` under a temporary name beside ``target``, then rename (one writer per
    export folder, so a fixed temporary name is safe and cheaper than ``mkstemp``)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)


# -- COCO ---------------------------------------------------------------------------------------
def _coco(out, frame, ann, cats, meta, how, *, supers=None, **_):
    numbers = {name: number for number, name in cats.items()}
    images, annotations = [], []
    image_ids = {}
    for i, (sid, name, path, width, height) in enumerate(zip(
            frame["id"], frame["name"], frame["path"], frame["width"], frame["height"]), 1):
        image_ids[sid] = i
        images.append({"id": i, "file_name": name, "width": int(width), "height": int(height),
                       **meta.get(sid, {})})
        _place(path, out / "images" / name, how)
    used = set()
    for row in ann.to_dict("records"):
        seg = row["segmentation"]
        attributes = row["attributes"]
        record = {"id": len(annotations) + 1, "image_id": image_ids[row["sample_id"]],
                  "category_id": numbers[row["category"]],
                  "bbox": [_num(row["x"]), _num(row["y"]), _num(row["w"]), _num(row["h"])],
                  "area": _num(row["area"]), "iscrowd": int(bool(attributes.get("iscrowd"))),
                  "segmentation": seg if seg is not None else []}
        record.update({k: v for k, v in attributes.items() if k != "iscrowd"})
        annotations.append(record)
        used.add(row["category"])
    categories = [{"id": n, "name": c, "supercategory": (supers or {}).get(c) or "object"}
                  for n, c in cats.items() if c in used or not len(ann)]
    write_text(out / "annotations.json", json.dumps(
        {"info": {"description": "exported by smartset"}, "images": images,
         "annotations": annotations, "categories": categories}))
    return {"files": ["annotations.json", "images/"], "annotations": len(annotations)}


# -- YOLO ---------------------------------------------------------------------------------------
def _yolo(out, frame, ann, cats, meta, how, **_):
    order = {name: i for i, (_, name) in enumerate(sorted(cats.items()))}
    groups = _groups(ann)
    used_splits = set()
    written = skipped = 0
    for sid, name, path, width, height, split in zip(
            frame["id"], frame["name"], frame["path"], frame["width"], frame["height"],
            frame["split"]):
        split = _split(split)
        used_splits.add(split)
        _place(path, out / "images" / split / name, how)
        lines = []
        for row in groups.get(sid, ()):
            seg, cls = row["segmentation"], order[row["category"]]
            if isinstance(seg, list) and seg:
                flat = max(seg, key=len)
                lines.append(f"{cls} " + " ".join(
                    f"{v / (width if i % 2 == 0 else height):.6f}" for i, v in enumerate(flat)))
                skipped += len(seg) > 1
            else:
                x, y, w, h = row["x"], row["y"], row["w"], row["h"]
                lines.append(f"{cls} {(x + w / 2) / width:.6f} {(y + h / 2) / height:.6f} "
                             f"{w / width:.6f} {h / height:.6f}")
            written += 1
        _put((out / "labels" / split / name).with_suffix(".txt"),
             "\n".join(lines) + ("\n" if lines else ""))
    spec = {"path": ".", **{s: f"images/{s}" for s in _SPLITS if s in used_splits},
            "names": {i: name for name, i in sorted(order.items(), key=lambda kv: kv[1])}}
    import yaml

    write_text(out / "data.yaml", yaml.safe_dump(spec, sort_keys=False))
    return {"files": ["data.yaml", "images/", "labels/"], "annotations": written,
            "left_out": {"extra_polygons": skipped} if skipped else {}}


# -- Pascal VOC -----------------------------------------------------------------------------------
def _voc(out, frame, ann, cats, meta, how, **_):
    from xml.sax.saxutils import escape

    groups = _groups(ann)
    sets: dict[str, list[str]] = {}
    written = 0
    for sid, name, path, width, height, split, channels in zip(
            frame["id"], frame["name"], frame["path"], frame["width"], frame["height"],
            frame["split"], frame["channels"]):
        _place(path, out / "JPEGImages" / name, how)
        parts = ["<annotation>\n  <folder>JPEGImages</folder>\n",
                 f"  <filename>{escape(name)}</filename>\n  <size>\n"
                 f"    <width>{int(width)}</width>\n    <height>{int(height)}</height>\n"
                 f"    <depth>{int(channels or 3)}</depth>\n  </size>\n"
                 f"  <segmented>0</segmented>\n"]
        for row in groups.get(sid, ()):
            attributes = row["attributes"]
            tags = "".join(f"    <{tag}>{escape(str(attributes.get(tag, 0)))}</{tag}>\n"
                           for tag in ("truncated", "difficult", "occluded")
                           if tag in attributes or tag != "occluded")
            x, y, w, h = row["x"], row["y"], row["w"], row["h"]
            parts.append(
                f"  <object>\n    <name>{escape(row['category'])}</name>\n"
                f"    <pose>{escape(str(attributes.get('pose', 'Unspecified')))}</pose>\n{tags}"
                f"    <bndbox>\n      <xmin>{_num(x + 1)}</xmin>\n      <ymin>{_num(y + 1)}</ymin>\n"
                f"      <xmax>{_num(x + w)}</xmax>\n      <ymax>{_num(y + h)}</ymax>\n"
                f"    </bndbox>\n  </object>\n")
            written += 1
        parts.append("</annotation>\n")
        stem = os.path.splitext(name)[0]
        _put(out / "Annotations" / f"{stem}.xml", "".join(parts))
        sets.setdefault(_split(split), []).append(stem)
    for split, stems in sets.items():
        write_text(out / "ImageSets" / "Main" / f"{split}.txt", "\n".join(stems) + "\n")
    return {"files": ["Annotations/", "JPEGImages/", "ImageSets/Main/"], "annotations": written}


# -- masks ------------------------------------------------------------------------------------------
_VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128, 0, 128, 128,
                128, 128, 128, 64, 0, 0, 192, 0, 0, 64, 128, 0, 192, 128, 0, 64, 0, 128, 192, 0,
                128, 64, 128, 128, 192, 128, 128, 0, 64, 0, 128, 64, 0, 0, 192, 0, 128, 192, 0,
                0, 64, 128]


def _write_mask(target: Path, mask: np.ndarray, palette: bool) -> None:
    image = Image.fromarray(mask)
    if palette:
        image = image.convert("P")
        image.putpalette(_VOC_PALETTE + [0] * (768 - len(_VOC_PALETTE)))
    with atomic_path(target) as tmp:
        image.save(tmp, format="PNG")


def _paint_masks(out, frame, ann, cats, how, palette, mask_target, image_target):
    numbers = {name: number for number, name in cats.items()}
    if numbers and max(numbers.values()) > 255:
        raise SourceError("Mask export holds class ids up to 255; this catalog numbers "
                          f"categories up to {max(numbers.values())}.")
    groups = _groups(ann)
    boxes = painted = 0
    for sid, name, path, width, height in zip(frame["id"], frame["name"], frame["path"],
                                              frame["width"], frame["height"]):
        _place(path, image_target(name), how)
        items = []
        for row in sorted(groups.get(sid, ()), key=lambda r: -r["area"]):
            if row["segmentation"] is None:
                boxes += 1
                continue
            items.append((numbers[row["category"]], row["segmentation"], None))
        painted += len(items)
        _write_mask(mask_target(name), _rle.paint(items, int(height), int(width)), palette)
    used = {c for c in ann["category"]} if len(ann) else set(cats.values())
    class_map = {"0": "background", **{str(n): c for n, c in cats.items() if c in used}}
    write_text(out / "classes.json", json.dumps(class_map, indent=1) + "\n")
    return {"annotations": painted,
            "left_out": {"boxes_without_mask": boxes} if boxes else {}}


def _masks(out, frame, ann, cats, meta, how, *, palette=False, **_):
    summary = _paint_masks(
        out, frame, ann, cats, how, palette,
        lambda name: (out / "masks" / name).with_suffix(".png"),
        lambda name: out / "images" / name)
    return {"files": ["images/", "masks/", "classes.json"], **summary}


def _pairs(out, frame, ann, cats, meta, how, *, palette=False, **_):
    summary = _paint_masks(
        out, frame, ann, cats, how, palette,
        lambda name: out / f"{os.path.splitext(name)[0]}_mask.png",
        lambda name: out / name)
    return {"files": ["IMAGE + IMAGE_mask.png", "classes.json"], **summary}


# -- classification -----------------------------------------------------------------------------------
def _imagefolder(out, frame, ann, cats, meta, how, **_):
    counts: Counter = Counter()
    skipped = 0
    for sid, rel, path, label, split in zip(frame["id"], frame["relpath"], frame["path"],
                                            frame["label"], frame["split"]):
        if label is None:
            skipped += 1
            continue
        base = _safe_part(os.path.basename(rel))
        target = out / _split(split) / _safe_part(str(label).replace("/", "_")) / base
        if target.exists():
            target = target.with_name(_safe_part(f"{sid}-{base}"))
        _place(path, target, how)
        counts[label] += 1
    return {"files": ["SPLIT/CLASS/IMAGE"], "images": sum(counts.values()),
            "classes": dict(counts), "annotations": 0,
            "left_out": {"unlabeled": skipped} if skipped else {}}


def _csv(out, frame, ann, cats, meta, how, **_):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "split"])
    for name, path, label, split in zip(frame["name"], frame["path"], frame["label"],
                                        frame["split"]):
        _place(path, out / "images" / name, how)
        writer.writerow([f"images/{name}", "" if label is None else label, split])
    write_text(out / "labels.csv", buffer.getvalue())
    return {"files": ["labels.csv", "images/"], "annotations": 0}


# -- Hugging Face ---------------------------------------------------------------------------------------
def _hf_classification(out, frame, labels: list[str], how) -> dict:
    import yaml

    splits = _hf_classes(out, frame, labels, how)
    schema = [{"name": "image", "dtype": "image"},
              {"name": "label", "dtype": {"class_label": {"names": {
                  str(i): n for i, n in enumerate(labels)}}}}]
    card = {"configs": [{"config_name": "default", "data_files": [
                {"split": "validation" if s == "val" else s, "path": f"{s}/**"} for s in splits],
                         "features": schema}]}
    write_text(out / "README.md", "---\n" + yaml.safe_dump(card, sort_keys=False,
                                                            allow_unicode=True)
               + "---\n\n# Exported by smartset\n\nHugging Face's image-folder layout "
               "(`SPLIT/CLASS/IMAGE`): `datasets.load_dataset(\"PATH\")` and "
               "`load_dataset(\"imagefolder\", data_dir=PATH)` both give `label` as a "
               f"ClassLabel of {', '.join(labels)}. `samples.csv` maps each file to its "
               "smartset sample id and size; `hf_dataset/` (written when `datasets` is "
               "installed) is the typed `DatasetDict` for `load_from_disk`.\n")
    result = {"files": ["SPLIT/CLASS/IMAGE", "samples.csv", "README.md"],
              "images": len(frame), "annotations": 0, "datasets": None}
    return _hf_save(out, result, labels, None)


def _hf_schema(labels: list[str] | None, categories: list[str] | None) -> list[dict]:
    """The features of the export in the dataset card's YAML form (read by
    ``datasets.load_dataset(OUT)``): ``label`` a ClassLabel of the image labels (only where
    there are labels), ``objects`` typed boxes with a ClassLabel category (only where there
    are annotations); never an all-null column."""
    def class_label(names):
        return {"class_label": {"names": {str(i): n for i, n in enumerate(names)}}}

    schema = [{"name": "image", "dtype": "image"}, {"name": "sample_id", "dtype": "string"}]
    if labels is not None:
        schema.append({"name": "label", "dtype": class_label(labels)})
    schema += [{"name": "width", "dtype": "int64"}, {"name": "height", "dtype": "int64"}]
    if categories is not None:
        schema.append({"name": "objects", "struct": [
            {"name": "bbox", "sequence": {"sequence": "float32", "length": 4}},
            {"name": "category", "sequence": class_label(categories)},
            {"name": "area", "sequence": "float32"},
            {"name": "id", "sequence": "string"}]})
    return schema


def _hf_features(datasets, labels: list[str] | None, categories: list[str] | None):
    """The same features built with ``datasets`` (for the saved DatasetDict)."""
    seq = getattr(datasets, "List", None) or datasets.Sequence
    features = {"image": datasets.Image(), "sample_id": datasets.Value("string")}
    if labels is not None:
        features["label"] = datasets.ClassLabel(names=labels)
    features.update(width=datasets.Value("int64"), height=datasets.Value("int64"))
    if categories is not None:
        features["objects"] = {"bbox": seq(seq(datasets.Value("float32"), length=4)),
                               "category": seq(datasets.ClassLabel(names=categories)),
                               "area": seq(datasets.Value("float32")),
                               "id": seq(datasets.Value("string"))}
    return datasets.Features(features)


def _hf_classes(out, frame, labels: list[str], how: str) -> list[str]:
    """A classification set in Hugging Face's own image-folder layout, ``SPLIT/CLASS/IMAGE``
    with no ``metadata.jsonl``: both ``load_dataset(OUT)`` and ``load_dataset("imagefolder",
    data_dir=OUT)`` then type ``label`` as a ClassLabel (the builder infers labels from the
    folders only where no metadata file exists). Sample ids, sizes and where each file
    went are in ``samples.csv`` beside the splits (not a data file of the dataset)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["split", "file_name", "sample_id", "label", "width", "height"])
    splits: set[str] = set()
    for sid, name, path, label, split, width, height in zip(
            frame["id"], frame["name"], frame["path"], frame["label"], frame["split"],
            frame["width"], frame["height"]):
        split = _split(split)
        folder = _safe_part(str(label).replace("/", "_"))
        target = out / split / folder / os.path.basename(name)
        if target.exists():
            target = target.with_name(_safe_part(f"{sid}-{target.name}"))
        _place(path, target, how)
        splits.add(split)
        writer.writerow([split, target.relative_to(out / split).as_posix(), sid, label,
                         int(width), int(height)])
    write_text(out / "samples.csv", buffer.getvalue())
    return sorted(splits)


def _hf(out, frame, ann, cats, meta, how, **_):
    import yaml

    groups = _groups(ann)
    present = frame["label"].dropna()
    labels = sorted(set(present)) if len(present) else None
    categories = [name for _, name in sorted(cats.items())] if len(ann) else None
    if categories is None and labels is not None and len(present) == len(frame):
        return _hf_classification(out, frame, labels, how)
    lines: dict[str, list[str]] = {}
    for sid, name, path, label, split, width, height in zip(
            frame["id"], frame["name"], frame["path"], frame["label"], frame["split"],
            frame["width"], frame["height"]):
        split = _split(split)
        _place(path, out / split / name, how)
        record = {"file_name": name, "sample_id": sid}
        if labels is not None:
            record["label"] = None if pd.isna(label) else label
        record.update(width=int(width), height=int(height))
        if categories is not None:
            rows = groups.get(sid, [])
            record["objects"] = {
                "bbox": [[_num(r["x"]), _num(r["y"]), _num(r["w"]), _num(r["h"])] for r in rows],
                "category": [r["category"] for r in rows],
                "area": [_num(r["area"]) for r in rows],
                "id": [r["id"] for r in rows]}
        lines.setdefault(split, []).append(json.dumps(record))
    for split, records in lines.items():
        write_text(out / split / "metadata.jsonl", "\n".join(records) + "\n")
    card = {"configs": [{"config_name": "default", "data_files": [
                {"split": "validation" if s == "val" else s, "path": f"{s}/**"} for s in lines],
                         "features": _hf_schema(labels, categories)}]}
    what = []
    if labels is not None:
        what.append(f"`label` is a ClassLabel of {', '.join(labels)}")
    if categories is not None:
        what.append(f"`objects` holds COCO-style boxes `[x, y, w, h]` in pixels, `category` a "
                    f"ClassLabel of {', '.join(categories)}")
    card_yaml = yaml.safe_dump(card, sort_keys=False, allow_unicode=True)
    write_text(out / "README.md", "---\n" + card_yaml
               + "---\n\n# Exported by smartset\n\nLoad with `datasets.load_dataset(\"PATH\")` "
               "(with the features of the card above: " + ("; ".join(what) or "images only") + "). "
               "`load_dataset(\"imagefolder\", data_dir=PATH)` reads the same files but infers "
               "the types from `metadata.jsonl` (`label` as a string), and `hf_dataset/` (written "
               "when `datasets` is installed) is the typed `DatasetDict` for `load_from_disk`.\n")
    result = {"files": [f"{s}/metadata.jsonl" for s in lines] + ["README.md"],
              "annotations": len(ann), "datasets": None}
    return _hf_save(out, result, labels, categories)


def _hf_save(out, result: dict, labels, categories) -> dict:
    """With ``datasets`` installed: the export read back by its image-folder builder with
    the declared features and saved as a typed ``DatasetDict`` (``hf_dataset/``)."""
    try:
        import datasets
    except ImportError:
        return result
    import tempfile

    # a cache of its own, removed after: never a stale entry of the user's cache (keyed by
    # the files' names, not their folder), never a second copy left in ~/.cache
    # its bars say "Downloading data" of local files: quiet, so nobody thinks it fetches
    quiet = getattr(datasets, "is_progress_bar_enabled", lambda: False)()
    if quiet:
        datasets.disable_progress_bars()
    try:
        with tempfile.TemporaryDirectory(prefix=".hf-cache-", dir=out) as cache:
            dataset = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=cache,
                                            features=_hf_features(datasets, labels, categories))
            dataset.save_to_disk(str(out / "hf_dataset"))
    finally:
        if quiet:
            datasets.enable_progress_bars()
    result["datasets"] = str(out / "hf_dataset")
    result["files"].append("hf_dataset/")
    return result
