"""Augmentation for detection and segmentation: task policies, previews with the targets
drawn, and offline expansion that writes valid annotations for every new sample.

The augmentation engine (:mod:`smartset.augment`) moves boxes and masks with the image;
this module turns catalog annotations into its typed targets (boxes with the object index
as label, one mask channel per object), and moved targets back into annotations: a box
clipped to the image (dropped below ``min_visibility`` of its area), a mask re-encoded as
RLE with its box recomputed from the moved pixels.

Task policies (:data:`smartset.augment.TASK_POLICIES`, taken by name wherever a policy is,
``smartset augment run`` included):

- ``whale-scale``: scale down and up (0.5x to 2x) with flips: the whale study's key to
  generalising from high to low resolution (aerial to satellite);
- ``knife-light``: darkening (gamma 1.2 to 3), the uneven warm light and glare of a lamp
  (``lamp``) and CLAHE, with horizontal flips: the learning half of the knife study's
  DaCoLT for surveillance video;
- ``detection-basic``: small rotations, translations, flips and brightness.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np

from smartset._atomic import atomic_path
from smartset._names import remove_tree, safe_name
from smartset.augment.policy import TASK_POLICIES, resolve_policy
from smartset.detection import _rle
from smartset.detection._model import Annotation
from smartset.errors import VersionError
from smartset.workspace import check_version_name

__all__ = ["TASK_POLICIES", "targets_for", "annotations_from_targets",
           "preview_targets", "expand_version"]

def targets_for(groups, height: int, width: int, *, min_visibility: float = 0.3):
    """Typed targets for a batch of images of one size: ``groups[i]`` is the annotation
    rows (a DataFrame) of image ``i``. Returns ``(BoundingBoxes, Masks or None)``; box
    labels are the row positions, so survivors can be traced back."""
    import torch

    from smartset.augment.targets import BoundingBoxes, Masks

    boxes, labels = [], []
    k = max([len(g) for g in groups] + [0])
    masks = np.zeros((len(groups), max(k, 1), height, width), np.uint8)
    any_mask = False
    for i, group in enumerate(groups):
        boxes.append(torch.tensor(group[["x", "y", "w", "h"]].to_numpy(np.float32)).reshape(-1, 4))
        labels.append(torch.arange(len(group)))
        for j, seg in enumerate(group["segmentation"]):
            if seg is not None and (isinstance(seg, dict) or len(seg)):
                masks[i, j] = _rle.annotation_mask(seg, None, height, width)
                any_mask = True
    bb = BoundingBoxes(boxes, "xywh", (height, width), labels, min_visibility=min_visibility)
    return bb, (Masks(torch.from_numpy(masks)) if any_mask else None)


def annotations_from_targets(group, boxes, masks, index: int) -> list[Annotation]:
    """Annotations of augmented image ``index`` from the moved targets (see module doc)."""
    out = []
    moved = boxes.boxes[index].tolist()
    survivors = boxes.labels[index].tolist()
    rows = group.to_dict("records")
    for box, j in zip(moved, survivors):
        row = rows[j]
        x, y, w, h = box
        seg = None
        if masks is not None and row["segmentation"] is not None:
            mask = masks.data[index, j].numpy().astype(bool)
            if mask.any():
                seg = _rle.encode(mask)
                x, y, w, h = _rle.rle_bbox(seg)
        if w <= 0 or h <= 0:
            continue
        attributes = {k: v for k, v in (row.get("attributes") or {}).items() if k != "area"}
        out.append(Annotation("", row["category"], (x, y, w, h), seg, attributes,
                              f"{row['id']}"))
    return out


def _load(path: str, mode: str | None):
    import torch

    from smartset.imageio import load_image

    array = load_image(path, mode=mode)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def preview_targets(ws, *, policy, n: int = 4, k: int = 3, seed: int = 0,
                    version: str | None = None, out: str | Path | None = None,
                    mode: str | None = "RGB") -> dict:
    """A PNG grid: ``n`` annotated samples (columns, those with most objects first) with
    their targets drawn, then ``k`` rows of augmentations by ``policy`` with the moved
    targets drawn. Default file: ``reports/augment/preview-targets-POLICY.png``."""
    from PIL import Image

    from smartset.augment.policy import augment
    from smartset.detection.draw import draw_targets
    from smartset.detection.store import annotations

    policy = resolve_policy(policy)
    ann = annotations(ws, version)
    if ann.empty:
        raise VersionError("There are no annotations to preview; import some first "
                           "('smartset annotations import').")
    counts = ann.groupby("sample_id").size().sort_values(ascending=False, kind="stable")
    chosen = list(counts.index[:n])
    paths = ann.drop_duplicates("sample_id").set_index("sample_id")["path"]
    rng = np.random.default_rng(seed)
    columns = []
    for sid in chosen:
        group = ann[ann["sample_id"] == sid].reset_index(drop=True)
        image = _load(paths[sid], mode)
        height, width = image.shape[1:]
        batch = image[None].repeat(k, 1, 1, 1)
        boxes, masks = targets_for([group] * k, height, width)
        result = augment((batch, boxes, masks) if masks is not None else (batch, boxes),
                         policy, seed=rng)
        out_images, out_boxes, *rest = result.output
        out_masks = rest[0] if rest else None
        tiles = [draw_targets(image.permute(1, 2, 0).numpy(), group)]
        for i in range(k):
            moved = annotations_from_targets(group, out_boxes, out_masks, i)
            tiles.append(draw_targets(out_images[i].permute(1, 2, 0).numpy(),
                                      [{"category": a.category, "bbox": a.bbox,
                                        "segmentation": a.segmentation} for a in moved]))
        columns.append(tiles)
    cell = 160
    grid = Image.new("RGB", (len(columns) * (cell + 4) + 4, (k + 1) * (cell + 4) + 4), "white")
    for c, tiles in enumerate(columns):
        for r, tile in enumerate(tiles):
            picture = Image.fromarray(tile)
            picture.thumbnail((cell, cell))
            grid.paste(picture, (4 + c * (cell + 4), 4 + r * (cell + 4)))
    target = Path(out) if out else ws.reports_dir / "augment" / f"preview-targets-{safe_name(policy.label)}.png"
    with atomic_path(target) as tmp:
        grid.save(tmp, format="PNG")
    return {"path": str(target), "samples": chosen, "policy": policy.label, "rows": k + 1}


def expand_version(ws, *, policy, factor: int = 2, version: str | None = None,
                   name: str | None = None, seed: int = 0, min_visibility: float = 0.3,
                   mode: str | None = None, description: str | None = None,
                   splits=None) -> dict:
    """Write version ``name``: the samples of ``version`` (live: originals only) plus
    ``factor - 1`` augmented copies of each, with their annotations moved by ``policy``
    (a task policy such as ``whale-scale``/``knife-light``, or any augment policy). Copies
    are PNGs under ``data/augment-NAME/``, registered as derived samples with lineage (the
    replay record of each); their annotations are stored with origin ``augment``, and the
    version pins them. ``splits``: the splits whose samples get copies (default: every
    split but test/val, whose samples join the version as they are; ``"all"``: every one;
    see :func:`smartset.augment.offline.augmented_splits`). Returns a summary dict."""
    started = time.perf_counter()
    if name is not None:  # it names a folder: checked before anything is read or written
        check_version_name(name)
    ws.catalog.check_writable()
    policy = resolve_policy(policy)
    if isinstance(factor, bool) or int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be a whole number >= 1, got {factor!r}")
    factor = int(factor)
    name = check_version_name(name or safe_name(f"{version or 'live'}-{policy.label}-x{factor}"))
    with ws.catalog.exclusive("annotations augment"):
        return _expand_locked(ws, started, policy=policy, factor=factor, version=version,
                              name=name, seed=seed, min_visibility=min_visibility, mode=mode,
                              description=description, splits=splits)


def _expand_locked(ws, started, *, policy, factor, version, name, seed, min_visibility, mode,
                   description, splits) -> dict:
    from smartset.augment.offline import _clear_leftovers, augmented_splits
    from smartset.augment.policy import augment
    from smartset.detection.store import AnnotationSet, _merge_categories, _write_annotations, \
        annotations

    if name in set(ws.versions()["name"]):
        raise VersionError(f"Version {name!r} exists already; versions are immutable, so "
                           f"choose a new name.")
    frame = ws.samples(version)
    if version is None:
        frame = frame[frame["origin_id"].isna()]
    chosen = augmented_splits(frame["split"], splits)
    kept = frame[~frame["split"].isin(chosen)]
    frame = frame[frame["split"].isin(chosen)]
    ann = annotations(ws, version)
    groups = {sid: g.reset_index(drop=True) for sid, g in ann.groupby("sample_id", sort=False)}
    empty = ann.iloc[:0]
    folder = ws.path / "data" / f"augment-{name}"
    _clear_leftovers(ws, folder)  # inside the workspace only, and never a catalog's files
    copies = factor - 1
    relpaths, origins, records, new_anns, dropped = [], [], [], [], 0
    try:
        for index, (sid, path) in enumerate(zip(frame["id"], frame["path"])):
            if not copies:
                break
            image = _load(path, mode)
            height, width = image.shape[1:]
            group = groups.get(sid, empty)
            batch = image[None].repeat(copies, 1, 1, 1)
            boxes, masks = targets_for([group] * copies, height, width,
                                       min_visibility=min_visibility)
            rng = np.random.default_rng([seed, index])
            if group.empty:  # no targets to move (the engine wants at least one box)
                result = augment(batch, policy, seed=rng)
                out_images, out_boxes, out_masks = result.output, boxes, None
            else:
                result = augment((batch, boxes, masks) if masks is not None else (batch, boxes),
                                 policy, seed=rng)
                out_images, out_boxes, *rest = result.output
                out_masks = rest[0] if rest else None
            pixels = out_images.permute(0, 2, 3, 1).contiguous().numpy()
            for copy in range(copies):
                relpath = f"{sid[:2]}/{sid}-{copy + 1}.png"
                _write_png(folder / relpath, pixels[copy])
                moved = annotations_from_targets(group, out_boxes, out_masks, copy)
                dropped += len(group) - len(moved)
                record = dict(result.records[copy])
                record["copy"] = copy + 1
                relpaths.append(relpath)
                origins.append(sid)
                records.append(record)
                new_anns.append(moved)
        flat_count = sum(len(a) for a in new_anns)
        summary = {"policy": policy.spec(), "factor": factor, "seed": seed,
                   "source_version": version, "n_original": len(frame),
                   "n_augmented": len(relpaths), "annotations_written": flat_count,
                   "annotations_dropped": dropped, "augmented_splits": chosen,
                   "n_kept_as_is": len(kept),
                   "kept_splits": {str(k): int(v) for k, v in kept["split"].value_counts().items()}}

        def with_annotations(con, new_ids):
            """In the samples' transaction: their moved annotations, then the version's
            pin of the annotations current now (as ``detection.store.create_version``)."""
            flat, owners = [], []
            for sid, anns in zip(new_ids, new_anns):
                for i, a in enumerate(anns):
                    flat.append(Annotation(sid, a.category, a.bbox, a.segmentation,
                                           a.attributes, f"{sid}#{i}"))
                    owners.append(sid)
            if flat:
                aset = AnnotationSet("augment", "", f"augment:{name}", categories={})
                aset.annotations = flat
                _merge_categories(con, aset)
                _write_annotations(con, flat, {s: s for s in owners}, f"augment:{name}",
                                   "smartset", origin="augment",
                                   reason=f"moved by policy {policy.label!r} (seed {seed})")
            from smartset.events import ANNOTATIONS

            return {"annotation_event_id": ANNOTATIONS.last_id(con)}

        # The copies, their annotations and the version in one transaction: a failure or a
        # kill before it commits leaves nothing in the catalog (a re-run clears the folder).
        new_ids, info = ws.add_derived_version(
            name, folder, relpaths, origin_ids=origins, params=records, stage="augment",
            sample_ids=list(frame["id"]) + list(kept["id"]), version_params=summary,
            description=description or f"{version or 'live catalog'} x{factor} with task "
                                       f"policy {policy.label!r} (seed {seed})",
            before_version=with_annotations, parent=version)
    except BaseException:
        try:  # files of a version that committed are never removed
            if name not in ws.version_names():
                remove_tree(ws.path, folder)
        except (sqlite3.Error, OSError):
            pass
        raise
    return {**summary, "version": info["name"], "n_samples": info["n_samples"],
            "folder": str(folder), "policy": policy.label,
            "seconds": round(time.perf_counter() - started, 3)}


def _write_png(target: Path, array: np.ndarray) -> None:
    from PIL import Image

    image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    with atomic_path(target) as tmp:
        image.save(tmp, format="PNG", compress_level=1)
