"""The in-memory form every format reader produces and every writer consumes.

An :class:`AnnotationSet` holds the images (file paths relative to a root, sizes, splits,
metadata), the categories (number -> name) and the annotations, each a box in pixels
``(x, y, w, h)`` (top-left corner and size, COCO's convention) with an optional
segmentation: polygons ``[[x1, y1, x2, y2, ...], ...]`` or a COCO RLE dict. Problems met
while reading are :class:`AnnotationIssue` records with a named reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ImageRecord", "Annotation", "AnnotationIssue", "AnnotationSet", "ISSUE_REASONS"]

ISSUE_REASONS = {
    "box_outside_image": "a box lies wholly outside its image (dropped)",
    "box_clipped": "a box reaches outside its image (clipped to the image)",
    "box_degenerate": "a box has zero or negative width or height (dropped)",
    "polygon_degenerate": "a polygon has fewer than 3 points, an odd number of coordinates "
                          "or no area (kept as a box if the box is valid)",
    "rle_invalid": "an RLE mask cannot be decoded or has the wrong size (dropped)",
    "unknown_category": "an annotation names a category that is not declared (dropped)",
    "image_missing": "an image listed by the annotations does not exist (its annotations "
                     "are dropped)",
    "orphan_annotation": "an annotation points to no listed image (dropped)",
    "duplicate_id": "an image, annotation or category id is used twice (the first is kept)",
    "path_escape": "a path in the annotations leaves the data root (refused)",
    "image_size_mismatch": "the size written in the annotations differs from the file's",
    "mask_value_unknown": "mask pixels hold values the class map does not name (ignored)",
    "mask_size_mismatch": "a mask's size differs from its image's (dropped)",
    "mask_without_image": "a mask file has no image of the same name (dropped)",
    "bad_annotation": "an annotation record cannot be parsed (dropped)",
    "bad_file": "an annotation file cannot be parsed (its annotations are dropped)",
}
"""Every reason an annotation import records (shown by ``smartset issues``)."""


@dataclass
class ImageRecord:
    """One image: ``file`` relative to the set's root ('/'-separated)."""

    file: str
    width: int | None = None
    height: int | None = None
    split: str | None = None
    key: str | None = None        # the image's id in its source
    meta: dict = field(default_factory=dict)


@dataclass
class Annotation:
    """One object. ``bbox`` is ``(x, y, w, h)`` in pixels; ``segmentation`` is None (a box),
    a list of polygons, or a COCO RLE dict; ``kind`` follows from it."""

    file: str
    category: str
    bbox: tuple[float, float, float, float]
    segmentation: list | dict | None = None
    attributes: dict = field(default_factory=dict)
    key: str | None = None        # the annotation's id in its source

    @property
    def kind(self) -> str:
        if self.segmentation is None:
            return "box"
        return "mask" if isinstance(self.segmentation, dict) else "polygon"


@dataclass
class AnnotationIssue:
    """Something an import could not take as it is; ``where`` names the file and record."""

    reason: str
    where: str
    detail: str

    def to_dict(self) -> dict:
        return {"reason": self.reason, "where": self.where, "detail": self.detail}


@dataclass
class AnnotationSet:
    """Images, categories and annotations of one source, with the issues met reading it."""

    format: str
    root: str                     # folder the image files are relative to
    source: str                   # the annotation file or folder read
    images: list[ImageRecord] = field(default_factory=list)
    categories: dict[int, str] = field(default_factory=dict)
    supercategories: dict[str, str] = field(default_factory=dict)
    annotations: list[Annotation] = field(default_factory=list)
    issues: list[AnnotationIssue] = field(default_factory=list)

    def issue(self, reason: str, where: str, detail: str) -> None:
        self.issues.append(AnnotationIssue(reason, where, detail))

    def by_file(self) -> dict[str, list[Annotation]]:
        out: dict[str, list[Annotation]] = {image.file: [] for image in self.images}
        for ann in self.annotations:
            out.setdefault(ann.file, []).append(ann)
        return out
