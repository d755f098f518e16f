"""A ``torch.utils.data.Dataset`` over a catalog version.

Images are decoded on access (in DataLoader workers when ``num_workers > 0``); labels are
mapped to indices by sorted class name. The dataset holds plain lists, not a catalog
connection, so it pickles into worker processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from smartset.imageio import load_image

from smartset._torch import require_torch

torch = require_torch("smartset.data")
Dataset = torch.utils.data.Dataset

__all__ = ["ImageDataset"]


class ImageDataset(Dataset):
    """Images and labels of a data set version, decoded on access.

    Each item is ``(image, target)``: ``image`` a ``uint8`` tensor ``C x H x W`` (or what
    ``transform`` returns from it), ``target`` the class index (``int``), a ``float32``
    tensor of regression targets, or ``-1`` for an unlabeled sample.

    Parameters
    ----------
    paths, labels, targets : per-sample lists (``labels``/``targets`` entries may be None).
    classes : class names in index order; default: sorted distinct labels.
    mode : ``"RGB"``, ``"L"``, ``"RGBA"``, or None for the nearest of those to the file's own;
        images are decoded by :func:`smartset.imageio.decode`, as every other stage decodes
        them (EXIF orientation applied, 16-bit and float images scaled to ``uint8``).
    transform : callable applied to the image tensor.
    ids : sample ids, kept for tracing a prediction back to its sample.
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[str | None] | None = None, *,
                 targets: Sequence[Sequence[float] | None] | None = None,
                 classes: Sequence[str] | None = None, mode: str | None = "RGB",
                 transform: Callable | None = None, ids: Sequence[str] | None = None):
        self.paths = list(paths)
        self.labels = list(labels) if labels is not None else [None] * len(self.paths)
        self.targets = list(targets) if targets is not None else [None] * len(self.paths)
        self.ids = list(ids) if ids is not None else [str(i) for i in range(len(self.paths))]
        if not len(self.labels) == len(self.targets) == len(self.ids) == len(self.paths):
            raise ValueError("paths, labels, targets and ids must have the same length")
        known = sorted({label for label in self.labels if label is not None})
        self.classes = list(classes) if classes is not None else known
        unknown = set(known) - set(self.classes)
        if unknown:
            raise ValueError(f"labels {sorted(unknown)[:5]} are not among classes {self.classes[:10]}")
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.mode = mode
        self.transform = transform

    @classmethod
    def from_workspace(cls, workspace, version: str | None = None, *,
                       split: str | Sequence[str] | None = None, **options) -> ImageDataset:
        frame = workspace.samples(version, split=split)
        return cls(frame["path"].tolist(), frame["label"].tolist(),
                   targets=frame["targets"].tolist(), ids=frame["id"].tolist(), **options)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        array = load_image(self.paths[index], mode=self.mode)
        if array.ndim == 2:
            array = array[:, :, None]
        image = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        if self.transform is not None:
            image = self.transform(image)
        if self.targets[index] is not None:
            return image, torch.tensor(self.targets[index], dtype=torch.float32)
        label = self.labels[index]
        return image, (self.class_to_idx[label] if label is not None else -1)
