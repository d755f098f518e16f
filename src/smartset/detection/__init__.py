"""Detection and segmentation data sets: annotation formats in and out, validation with
named issues, box- and mask-aware audit, augmentation policies per task, and evaluation by
condition (the knife study) and by count (the whale study).

    >>> from smartset import detection as det
    >>> det.synth_shapes("shapes", 40, seed=0, conditions=True)        # doctest: +SKIP
    >>> report = det.import_annotations(ws, "shapes/annotations.json")  # doctest: +SKIP
    >>> det.annotations(ws).groupby("category").size()                  # doctest: +SKIP
    >>> gt, images = det.ground_truth(ws)                               # doctest: +SKIP
    >>> pred = det.detect_images(images["path"], keys=images["image"])  # doctest: +SKIP
    >>> det.knife_table(gt, pred, det.image_conditions(images))         # doctest: +SKIP

Names load on first use, so ``import smartset.detection`` (and the CLI) stay fast.
"""


# no "from __future__ import annotations": `annotations` is a name here
from smartset._lazy import lazy_exports

_EXPORTS = {
    "smartset.detection._model": ["AnnotationSet", "Annotation", "ImageRecord",
                                  "AnnotationIssue", "ISSUE_REASONS"],
    "smartset.detection.formats_in": ["FORMATS", "detect_format", "read_annotations",
                                      "read_coco", "read_yolo", "read_voc", "read_masks",
                                      "read_pairs"],
    "smartset.detection.validation": ["validate", "check_paths", "safe_relpath"],
    "smartset.detection.formats_out": ["EXPORT_FORMATS", "export"],
    "smartset.detection.store": ["ImportReport", "import_annotations", "import_set",
                                 "annotations", "categories", "relabel_box", "delete_box",
                                 "add_box", "undo_annotation", "annotation_history",
                                 "create_version", "annotation_pin"],
    "smartset.detection.evaluation": ["box_iou", "match_detections", "evaluate_detections",
                                      "coco_map", "knife_table", "counting_f1",
                                      "segmentation_metrics", "size_bucket", "ground_truth",
                                      "load_predictions", "image_conditions"],
    "smartset.detection.synth": ["SHAPES", "CONDITIONS", "synth_shapes", "shift_brightness",
                                 "brightness_condition", "baseline_detector", "detect_images"],
    "smartset.detection.draw": ["draw_targets"],
    "smartset.detection.audit": ["audit_annotations", "AnnotationAudit"],
    "smartset.detection.augment": ["TASK_POLICIES", "targets_for",
                                   "preview_targets", "expand_version"],
}

__all__, __getattr__, __dir__ = lazy_exports(
    "smartset.detection", _EXPORTS, {"rle": "smartset.detection._rle"})
