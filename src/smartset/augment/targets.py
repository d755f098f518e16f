"""Typed targets that move with the image: boxes, masks and keypoints.

A plain ``torch.Tensor`` of shape ``N x C x H x W`` is an image batch. Targets carry what a
kernel needs to move them correctly: boxes their format and canvas size, masks their type
(resampled with nearest neighbour, never blended), keypoints their canvas size. Geometric
transforms move all of them with one fused warp; photometric ones pass them through.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from smartset.augment.errors import AugmentParameterError

__all__ = ["BoundingBoxes", "Masks", "Keypoints", "BOX_FORMATS"]

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def _as_list(items, name: str) -> list[torch.Tensor]:
    if isinstance(items, torch.Tensor):
        if items.ndim != 3:
            raise AugmentParameterError(f"{name}: a tensor must be N x M x D, got shape "
                                        f"{tuple(items.shape)}; pass a list for varying M.")
        return list(items.unbind(0))
    return [torch.as_tensor(t) for t in items]


@dataclass
class BoundingBoxes:
    """Boxes per sample: ``boxes[i]`` is an ``M_i x 4`` float tensor in ``format``
    (``xyxy``: corners, pixel edges, so a box over pixel columns 2..5 has x1=2, x2=6;
    ``xywh``: top-left and size; ``cxcywh``: centre and size) on a canvas of
    ``canvas_size = (H, W)``. ``labels[i]`` (optional) are kept in step with the boxes when
    boxes are dropped. ``min_visibility`` (fraction of a box's area left inside the canvas)
    and ``min_area`` (pixels) decide which boxes a geometric transform drops.
    """

    boxes: list[torch.Tensor]
    format: str = "xyxy"
    canvas_size: tuple[int, int] = (0, 0)
    labels: list[torch.Tensor] | None = None
    min_visibility: float = 0.0
    min_area: float = 1.0

    def __post_init__(self):
        self.boxes = [b.reshape(-1, 4) for b in _as_list(self.boxes, "boxes")]
        if self.format not in BOX_FORMATS:
            raise AugmentParameterError(f"box format {self.format!r} is not known; use one of "
                                        f"{', '.join(BOX_FORMATS)}.")
        if len(self.canvas_size) != 2 or min(self.canvas_size) < 1:
            raise AugmentParameterError(f"canvas_size must be (H, W) of the image, got "
                                        f"{self.canvas_size}.")
        self.canvas_size = (int(self.canvas_size[0]), int(self.canvas_size[1]))
        if self.labels is not None:
            self.labels = _as_list(self.labels, "labels") if isinstance(
                self.labels, torch.Tensor) and self.labels.ndim == 3 else [
                torch.as_tensor(t) for t in self.labels]
            if [len(t) for t in self.labels] != [len(b) for b in self.boxes]:
                raise AugmentParameterError("labels must have one entry per box, per sample.")

    def __len__(self) -> int:
        return len(self.boxes)

    def to_xyxy(self) -> list[torch.Tensor]:
        return [convert_boxes(b, self.format, "xyxy") for b in self.boxes]

    def replace(self, xyxy: Sequence[torch.Tensor], keep: Sequence[torch.Tensor] | None,
                canvas_size: tuple[int, int]) -> BoundingBoxes:
        """New boxes (given as xyxy) in this format; ``keep[i]`` selects surviving labels."""
        labels = None
        if self.labels is not None:
            labels = [lab[k] for lab, k in zip(self.labels, keep)] if keep is not None \
                else list(self.labels)
        return BoundingBoxes([convert_boxes(b, "xyxy", self.format) for b in xyxy],
                             self.format, canvas_size, labels, self.min_visibility,
                             self.min_area)

    def subset(self, rows: Sequence[int]) -> BoundingBoxes:
        return BoundingBoxes([self.boxes[i] for i in rows], self.format, self.canvas_size,
                             None if self.labels is None else [self.labels[i] for i in rows],
                             self.min_visibility, self.min_area)


def convert_boxes(boxes: torch.Tensor, source: str, target: str) -> torch.Tensor:
    """Convert ``M x 4`` boxes between ``xyxy``, ``xywh`` and ``cxcywh``."""
    if source == target:
        return boxes.clone()
    b = boxes.to(torch.float64) if not boxes.is_floating_point() else boxes
    if source == "xywh":
        b = torch.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], 1)
    elif source == "cxcywh":
        b = torch.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2,
                         b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1)
    if target == "xywh":
        b = torch.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
    elif target == "cxcywh":
        b = torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2,
                         b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
    return b.to(boxes.dtype) if boxes.is_floating_point() else b


@dataclass
class Masks:
    """Segmentation masks, ``N x K x H x W`` (integer, bool or float class maps). Geometric
    transforms resample them with nearest neighbour and fill new pixels with ``fill``."""

    data: torch.Tensor
    fill: float = 0

    def __post_init__(self):
        if not isinstance(self.data, torch.Tensor) or self.data.ndim != 4:
            raise AugmentParameterError(
                f"Masks needs an N x K x H x W tensor, got "
                f"{getattr(self.data, 'shape', type(self.data).__name__)}.")

    def __len__(self) -> int:
        return self.data.shape[0]


@dataclass
class Keypoints:
    """Points per sample: ``points[i]`` is ``M_i x 2`` (x, y) in pixel-centre coordinates
    (pixel column j has x = j) on a canvas of ``canvas_size = (H, W)``. ``visible[i]``
    says which lie inside the canvas; geometric transforms update it."""

    points: list[torch.Tensor]
    canvas_size: tuple[int, int] = (0, 0)
    visible: list[torch.Tensor] | None = field(default=None)

    def __post_init__(self):
        self.points = [p.reshape(-1, 2) for p in _as_list(self.points, "points")]
        if len(self.canvas_size) != 2 or min(self.canvas_size) < 1:
            raise AugmentParameterError(f"canvas_size must be (H, W) of the image, got "
                                        f"{self.canvas_size}.")
        self.canvas_size = (int(self.canvas_size[0]), int(self.canvas_size[1]))
        if self.visible is None:
            self.visible = [inside(p, self.canvas_size) for p in self.points]

    def __len__(self) -> int:
        return len(self.points)

    def subset(self, rows: Sequence[int]) -> Keypoints:
        return Keypoints([self.points[i] for i in rows], self.canvas_size,
                         [self.visible[i] for i in rows])


def inside(points: torch.Tensor, canvas_size: tuple[int, int]) -> torch.Tensor:
    height, width = canvas_size
    return ((points[:, 0] >= -0.5) & (points[:, 0] < width - 0.5)
            & (points[:, 1] >= -0.5) & (points[:, 1] < height - 0.5))
