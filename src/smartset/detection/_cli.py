"""``smartset annotations`` (import, export, list, audit, relabel, delete, undo, history,
augment, preview), ``smartset detect`` (baseline, evaluate, evaluate-masks) and ``smartset
synth shapes``. Mounted by the main CLI with ``app.add_typer``; importing this module does
not import pandas or torch (commands do, when run)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from smartset._cli_common import (JsonOption, SmartsetGroup, Table, WorkspaceOption, deprecated,
                                  handle_errors, open_workspace, print_json, show_progress,
                                  table_text)
from smartset._cli_common import out as console

annotations_app = typer.Typer(
    help="Detection and segmentation annotations: import (COCO, YOLO, VOC, masks, pairs), "
         "list, audit, change boxes as events, augment with targets ('smartset export' writes "
         "them).",
    no_args_is_help=True, cls=SmartsetGroup, rich_markup_mode=None)
detect_app = typer.Typer(help="Evaluate detections: baseline detector, precision/recall/F1, "
                              "COCO mAP, the knife table by condition and size, counting F1, "
                              "segmentation IoU/Dice.", no_args_is_help=True,
                      cls=SmartsetGroup, rich_markup_mode=None)
synth_app = typer.Typer(help="Simulated data sets with exact annotations.", no_args_is_help=True,
                        cls=SmartsetGroup, rich_markup_mode=None)

VersionOption = Annotated[Optional[str], typer.Option(
    help="Version to use (default: the live catalog).")]


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _clean(value):
    """NaN -> None, recursively, so --json output is valid JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return _clean(value.item())
    return value


# -- annotations ------------------------------------------------------------------------------
@annotations_app.command("import")
@handle_errors
def import_(
    source: Annotated[Path, typer.Argument(help="Annotation file or folder (COCO .json, "
                                                "data.yaml, VOC folder, mask folder, ...).")],
    format: Annotated[Optional[str], typer.Option(
        help="coco, yolo, voc, masks or pairs (default: detected).")] = None,
    root: Annotated[Optional[Path], typer.Option(
        help="Folder the image paths are relative to (default: found).")] = None,
    split: Annotated[Optional[str], typer.Option(
        help="Split of images whose source does not say (default train).")] = None,
    engine: Annotated[Optional[str], typer.Option(help="serial or local (process pool).")] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ingest the images and import their annotations; bad records become named issues."""
    from smartset.detection.store import import_annotations

    ws = open_workspace(workspace)
    report = import_annotations(ws, source, format=format, root=root, split=split,
                                engine=engine, show_progress=show_progress(as_json))
    if as_json:
        print_json(report.to_dict())
        return
    console.print(f"{report.format} annotations from {report.source.split(':', 1)[1]}: "
                  f"{report.images} images, {report.new} new, {report.updated} changed, "
                  f"{report.unchanged} unchanged objects in {report.seconds['total']:.2f} s")
    if report.categories:
        console.print("classes: " + ", ".join(f"{k} {v}" for k, v in report.categories.items()))
    if report.issues:
        console.print("issues: " + ", ".join(f"{k} {v}" for k, v in report.issues.items())
                      + " (details: smartset issues)")
        for example in report.issue_examples[:5]:
            console.print(f"  {example['reason']}: {example['where']}: {example['detail']}",
                          highlight=False, markup=False)


@annotations_app.command("export", hidden=True)
@handle_errors
def export_(
    out: Annotated[Path, typer.Argument(help="Folder to write.")],
    format: Annotated[str, typer.Option(
        help="coco, yolo, voc, masks, pairs, imagefolder, csv or hf.")] = "coco",
    version: VersionOption = None,
    images: Annotated[str, typer.Option(help="copy or link (hard links) the images.")] = "copy",
    palette: Annotated[bool, typer.Option(help="Masks as palette PNGs (VOC colours).")] = False,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Deprecated: 'smartset export'. Write a version in a format other tools read."""
    from smartset.detection.formats_out import export

    deprecated("smartset annotations export OUT --format F",
               "smartset export --out OUT --format F")
    result = export(open_workspace(workspace), version, out, format=format, images=images,
                    palette=palette)
    if as_json:
        print_json(result)
        return
    left = result.get("left_out") or {}
    console.print(f"{result['format']}: {result['images']} images, {result['annotations']} "
                  f"annotations -> {result['out']} ({result['seconds']:.2f} s)"
                  + (f"; left out: {left}" if left else ""))


@annotations_app.command("list")
@handle_errors
def list_(
    version: VersionOption = None,
    sample: Annotated[Optional[str], typer.Option(help="Only this sample id.")] = None,
    limit: Annotated[int, typer.Option(help="Rows to show (0: all).")] = 20,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """The annotations: id, sample, category, box, kind."""
    from smartset.detection.store import annotations

    frame = annotations(open_workspace(workspace), version,
                        sample_ids=[sample] if sample else None)
    shown = frame if not limit else frame.head(limit)
    columns = ["id", "sample_id", "relpath", "category", "kind", "x", "y", "w", "h", "event_id"]
    if as_json:
        print_json({"count": len(frame), "annotations": _clean(
            shown[columns + ["attributes"]].to_dict("records"))})
        return
    table = Table(title=f"{len(frame)} annotations" + (f" (first {limit})" if len(frame) > len(shown) else ""))
    for column in columns:
        table.add_column(column)
    for row in shown[columns].itertuples(index=False):
        table.add_row(*[_fmt(v, 1) if isinstance(v, float) else str(v) for v in row])
    console.print(table)


@annotations_app.command("audit")
@handle_errors
def audit(
    version: VersionOption = None,
    duplicate_iou: Annotated[float, typer.Option(help="Same-class boxes overlapping more are duplicates.")] = 0.9,
    tiny_mask: Annotated[float, typer.Option(help="Masks covering less of the image are flagged.")] = 0.001,
    full_mask: Annotated[float, typer.Option(help="Masks covering more of the image are flagged.")] = 0.95,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Instances per class, empty images, box sizes and aspects, border objects, duplicate
    boxes, tiny or full masks, pixel imbalance."""
    from smartset.detection.audit import audit_annotations

    result = audit_annotations(open_workspace(workspace), version, duplicate_iou=duplicate_iou,
                               tiny_mask=tiny_mask, full_mask=full_mask)
    if as_json:
        print_json(_clean(result.to_dict()))
        return
    s = result.summary
    console.print(f"{s['images']} images, {s['objects']} objects; {s['images_without_objects']} "
                  f"images without objects; boxes per image mean {s['boxes_per_image']['mean']:.2f}, "
                  f"max {s['boxes_per_image']['max']}")
    console.print("classes: " + ", ".join(f"{k} {v}" for k, v in s["classes"].items())
                  + (f" (imbalance {s['imbalance']:.2f})" if s["imbalance"] else ""))
    console.print("sizes: " + ", ".join(f"{k} {v}" for k, v in s["sizes_total"].items()))
    console.print(f"touching the border {s['touching_border']}, duplicate boxes "
                  f"{s['duplicate_boxes']}, tiny masks {s['tiny_masks']}, full masks "
                  f"{s['full_masks']}")
    if s["pixels"]:
        console.print("pixels: " + ", ".join(f"{k} {v}" for k, v in s["pixels"]["per_class"].items())
                      + f"; background {s['pixels']['background_share']:.1%}")
    console.print(f"report: {result.paths.get('json')}")


@annotations_app.command("relabel")
@handle_errors
def relabel(
    annotation_ids: Annotated[list[str], typer.Argument(help="Annotation ids.")],
    to: Annotated[Optional[str], typer.Option("--to", help="The new category.")] = None,
    category: Annotated[Optional[str], typer.Option(
        "--category", hidden=True, help="Deprecated: --to.")] = None,
    reason: Annotated[Optional[str], typer.Option(help="Why (kept in the history).")] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give boxes a new category (an appended event each)."""
    from smartset.detection.store import relabel_box

    if category is not None:
        deprecated("smartset annotations relabel --category C", "smartset annotations "
                   "relabel --to C")
        if to is not None and to != category:
            raise typer.BadParameter("give --to only (--category is its old spelling).")
        to = category
    if to is None:
        raise typer.BadParameter("give the new category with --to.", param_hint="'--to'")
    events = relabel_box(open_workspace(workspace), annotation_ids, to, reason=reason,
                         origin="cli")
    print_json({"events": events}) if as_json else console.print(f"events {events}")


@annotations_app.command("delete")
@handle_errors
def delete(
    annotation_ids: Annotated[list[str], typer.Argument(help="Annotation ids.")],
    reason: Annotated[Optional[str], typer.Option(help="Why (kept in the history).")] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete boxes (an appended event each; 'undo' brings one back)."""
    from smartset.detection.store import delete_box

    events = delete_box(open_workspace(workspace), annotation_ids, reason=reason, origin="cli")
    print_json({"events": events}) if as_json else console.print(f"events {events}")


@annotations_app.command("undo")
@handle_errors
def undo(
    event_id: Annotated[int, typer.Argument(help="The annotation event to revert.")],
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revert an annotation event (appends an event restoring the state before it)."""
    from smartset.detection.store import undo_annotation

    event = undo_annotation(open_workspace(workspace), event_id)
    print_json({"event": event}) if as_json else console.print(f"event {event}")


@annotations_app.command("history")
@handle_errors
def history(
    annotation: Annotated[Optional[str], typer.Option(help="One annotation id.")] = None,
    sample: Annotated[Optional[str], typer.Option(help="One sample id.")] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every annotation event: who, when, old and new category, why."""
    from smartset.detection.store import annotation_history

    frame = annotation_history(open_workspace(workspace), annotation, sample_id=sample)
    if as_json:
        print_json(_clean(frame.to_dict("records")))
        return
    table = Table(title=f"{len(frame)} annotation events")
    for column in ("id", "annotation_id", "previous_category", "category", "deleted", "author",
                   "origin", "reason"):
        table.add_column(column)
    for row in frame.tail(50).itertuples(index=False):
        table.add_row(str(row.id), row.annotation_id, table_text(row.previous_category),
                      table_text(row.category), table_text(row.deleted),
                      table_text(row.author), table_text(row.origin), table_text(row.reason))
    console.print(table)


@annotations_app.command("augment")
@handle_errors
def augment(
    policy: Annotated[str, typer.Option(help="whale-scale, knife-light, detection-basic, or any "
                                             "augment policy.")],
    factor: Annotated[int, typer.Option(min=1, help="Size of the new version over the source's.")] = 2,
    version: VersionOption = None,
    name: Annotated[Optional[str], typer.Option(help="Name of the new version.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random parameter.")] = 0,
    min_visibility: Annotated[float, typer.Option(
        help="Drop moved boxes keeping less of their area.")] = 0.3,
    split: Annotated[Optional[list[str]], typer.Option(
        help="Augment this split (repeatable; 'all': every split). Default: every split but "
             "test/val, whose images join the new version unaugmented.")] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """A new version with augmented copies whose boxes and masks moved with the image."""
    from smartset.detection.augment import expand_version

    result = expand_version(open_workspace(workspace), policy=policy, factor=factor,
                            version=version, name=name, seed=seed, min_visibility=min_visibility,
                            splits=split)
    if as_json:
        print_json(result)
        return
    console.print(f"Version {result['version']!r}: {result['n_samples']} samples "
                  f"({result['n_augmented']} augmented copies of split "
                  f"{', '.join(result['augmented_splits']) or 'none'}), "
                  f"{result['annotations_written']} annotations written, "
                  f"{result['annotations_dropped']} dropped (moved out)")
    if result["n_kept_as_is"]:
        kept = ", ".join(f"{k} {v}" for k, v in result["kept_splits"].items())
        console.print(f"Not augmented, kept as they are: {kept} (held-out splits; --split all "
                      f"to augment them too)")


@annotations_app.command("preview")
@handle_errors
def preview(
    policy: Annotated[str, typer.Option(help="Task policy or augment policy.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Samples (columns).")] = 4,
    k: Annotated[int, typer.Option("--k", min=1, help="Augmentations per sample.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    version: VersionOption = None,
    out: Annotated[Optional[Path], typer.Option(help="PNG to write.")] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """A PNG grid of augmentations with boxes and masks drawn."""
    from smartset.detection.augment import preview_targets

    result = preview_targets(open_workspace(workspace), policy=policy, n=n, k=k, seed=seed,
                             version=version, out=out)
    print_json(result) if as_json else console.print(f"Preview: {result['path']}")


# -- detect -----------------------------------------------------------------------------------
@detect_app.command("baseline")
@handle_errors
def baseline(
    out: Annotated[Path, typer.Option(help="COCO results file to write.")] = Path("predictions.json"),
    version: VersionOption = None,
    threshold: Annotated[str, typer.Option(help="Grey threshold (0-255) or 'otsu'.")] = "110",
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the baseline detector (threshold + connected components) on a version's images
    and write its detections as a COCO results file."""
    from smartset._atomic import write_text
    from smartset.detection.evaluation import ground_truth
    from smartset.detection.store import categories
    from smartset.detection.synth import detect_images

    ws = open_workspace(workspace)
    _, images = ground_truth(ws, version)
    pred = detect_images(list(images["path"]), keys=list(images["image"]),
                         threshold=threshold if threshold == "otsu" else float(threshold))
    numbers = {name: n for n, name in categories(ws).items()}
    coco_id = dict(zip(images["image"], images["coco_id"]))
    results = [{"image_id": int(coco_id[r.image]), "sample_id": r.image,
                "category_id": numbers.get(r.category), "category": r.category,
                "bbox": [r.x, r.y, r.w, r.h], "score": r.score}
               for r in pred.itertuples(index=False)]
    write_text(out, json.dumps(results))
    summary = {"predictions": len(results), "images": len(images), "path": str(out)}
    print_json(summary) if as_json else console.print(
        f"{len(results)} detections on {len(images)} images -> {out}")


@detect_app.command("evaluate")
@handle_errors
def evaluate(
    predictions: Annotated[Path, typer.Argument(help="COCO results .json or a folder of YOLO .txt.")],
    version: VersionOption = None,
    iou: Annotated[float, typer.Option(help="IoU a detection needs to be a true positive.")] = 0.5,
    score_threshold: Annotated[float, typer.Option(help="Detections scoring less are left out "
                                                        "(precision/recall/F1, table, counts).")] = 0.5,
    conditions: Annotated[Literal["auto", "meta", "pixels", "none"], typer.Option(
        help="Condition per image for the knife table: auto (image metadata, else measured "
             "brightness), meta, pixels, or none.")] = "auto",
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Precision, recall, F1 at IoU, COCO mAP@[.5:.95], the knife table (condition x size)
    and counting F1 of predictions against a version's annotations."""
    import pandas as pd

    from smartset.detection.evaluation import evaluate_predictions

    result = evaluate_predictions(open_workspace(workspace), predictions, version,
                                  iou_threshold=iou, score_threshold=score_threshold,
                                  conditions=conditions)
    montage = result["montage"]
    table = pd.DataFrame(result["knife_table"])
    if as_json:
        print_json(result)
        return
    m = result["metrics"]
    console.print(f"IoU >= {iou}, score >= {score_threshold}: precision {_fmt(m['precision'])}, "
                  f"recall {_fmt(m['recall'])}, F1 {_fmt(m['f1'])} (TP {m['tp']}, FP {m['fp']}, "
                  f"FN {m['fn']}); COCO mAP@[.5:.95] {_fmt(m['map'])}, mAP50 {_fmt(m['map50'])}")
    _print_table(table)
    c = result["counting"]
    console.print(f"counting: F1 {_fmt(c['f1'])} (MAE {_fmt(c['mae'], 2)} objects per image); "
                  f"presence F1 {_fmt(c['presence']['f1'])}")
    if montage:
        console.print(f"worst false positives and misses: {montage['path']}", highlight=False)


def _print_table(frame) -> None:
    table = Table(title="By condition and object size (the knife study's table)")
    for column in frame.columns:
        table.add_column(column, justify="left" if column in ("condition", "size") else "right")
    for row in frame.itertuples(index=False):
        table.add_row(*[_fmt(v) if isinstance(v, float) else str(v) for v in row])
    console.print(table)


@detect_app.command("evaluate-masks")
@handle_errors
def evaluate_masks(
    predictions: Annotated[Optional[Path], typer.Argument(
        help="Folder of predicted class-id PNG masks named like the images.")] = None,
    baseline: Annotated[bool, typer.Option(help="Evaluate the baseline segmenter instead.")] = False,
    version: VersionOption = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per-class IoU and Dice, pixel accuracy and mean IoU of predicted masks."""
    from smartset.detection.evaluation import evaluate_masks as score_masks

    if predictions is None and not baseline:
        raise typer.BadParameter("give a folder of predicted masks, or --baseline.")
    result = score_masks(open_workspace(workspace), None if baseline else predictions,
                         version, baseline=baseline)
    if as_json:
        print_json(result)
        return
    table = Table(title=f"Segmentation: pixel accuracy {_fmt(result['pixel_accuracy'])}, "
                        f"mean IoU {_fmt(result['mean_iou'])}")
    for column in ("class", "IoU", "Dice", "gt pixels", "predicted pixels"):
        table.add_column(column)
    for name, v in result["per_class"].items():
        table.add_row(name, _fmt(v["iou"]), _fmt(v["dice"]), str(v["gt_pixels"]),
                      str(v["pred_pixels"]))
    console.print(table)


# -- synth ------------------------------------------------------------------------------------
@synth_app.command("shapes")
@handle_errors
def shapes(
    out: Annotated[Path, typer.Argument(help="Folder to write (images/, annotations.json, masks/).")],
    n: Annotated[int, typer.Option("--n", min=1, help="Images (before condition copies).")] = 40,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    size: Annotated[int, typer.Option(min=32, help="Image side in pixels.")] = 128,
    conditions: Annotated[bool, typer.Option(
        help="Also write brightness-shifted copies (high; low: night, values x 0.3 plus "
             "sensor noise; artificial: a warm lamp; the original is medium).")] = False,
    difficulty: Annotated[str, typer.Option(
        help="easy, or hard: clutter, occlusion, motion blur, noise and glaring "
             "artificial light.")] = "easy",
    as_json: JsonOption = False,
) -> None:
    """Geometric shapes with exact boxes, polygons and masks (a simulation to test with)."""
    from smartset.detection.synth import synth_shapes

    if difficulty not in ("easy", "hard"):
        raise typer.BadParameter(f"{difficulty!r} is not one of 'easy', 'hard'.",
                                 param_hint="'--difficulty'")
    result = synth_shapes(out, n, seed=seed, size=(size, size), conditions=conditions,
                          difficulty=difficulty)
    print_json(result) if as_json else console.print(
        f"{result['images']} images, {result['objects']} objects -> {result['folder']} "
        f"(COCO: {result['coco']}; masks: {result['masks']})")


# detect train/predict and study dacolt/scale register themselves on detect_app and study_app
from smartset.detection import _model_cli  # noqa: E402,F401
