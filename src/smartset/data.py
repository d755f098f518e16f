"""A ``torch.utils.data.Dataset`` over a catalog version.

Images are decoded on access (in DataLoader workers when ``num_workers > 0``); labels are
mapped to indices by sorted class name. The dataset holds plain lists, not a catalog
connection, so it pickles into worker processes.

``size`` resizes every image on access, the way fastai's ``Resize`` item transform and a
Hugging Face ``set_transform`` do, so photos of mixed sizes batch with PyTorch's default
collate. The resize is the one learn's ``load_version`` applies (the same decoder with the
same JPEG draft, bilinear, ``stretch`` or ``pad``), so a model trained by smartset sees the
same pixels as one trained on this dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from PIL import Image, ImageOps

from smartset._torch import require_torch
from smartset.imageio import decode

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
    size : ``int`` or ``(H, W)``: resize every image to it on access (after decoding, before
        ``transform``), so images of different sizes share a batch; None keeps each image's
        own size (a ``DataLoader`` then needs ``batch_size=1`` or its own ``collate_fn``).
    fit : with ``size``: ``"stretch"`` (default) or ``"pad"`` (keep the aspect ratio, pad
        with black), as in :func:`smartset.learn.load_version`.
    transform : any callable applied to the ``uint8`` image tensor ``C x H x W`` (after the
        resize), e.g. ``lambda t: t.float() / 255`` or a smartset augmentation policy
        (``smartset.augment.Compose([...])``, given the image as a batch of one; called
        with no seed, it draws fresh parameters each time: for replayable per-sample
        parameters wrap the dataset in :class:`smartset.augment.AugmentedDataset`).
    ids : sample ids, kept for tracing a prediction back to its sample.
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[str | None] | None = None, *,
                 targets: Sequence[Sequence[float] | None] | None = None,
                 classes: Sequence[str] | None = None, mode: str | None = "RGB",
                 size: int | Sequence[int] | None = None, fit: str = "stretch",
                 transform: Callable | None = None, ids: Sequence[str] | None = None):
        self.size = _check_size(size)
        if fit not in ("stretch", "pad"):
            raise ValueError(f"fit must be 'stretch' or 'pad', got {fit!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be a callable (a function or a policy), got "
                            f"{type(transform).__name__}")
        self.fit = fit
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
        """The samples of ``version`` (default: the live catalog), optionally of ``split``;
        ``options`` as for the constructor (``size``, ``fit``, ``mode``, ``transform``,
        ``classes``)."""
        frame = workspace.samples(version, split=split)
        return cls(frame["path"].tolist(), frame["label"].tolist(),
                   targets=frame["targets"].tolist(), ids=frame["id"].tolist(), **options)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        array = _load(self.paths[index], self.mode, self.size, self.fit)
        if array.ndim == 2:
            array = array[:, :, None]
        image = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        if self.transform is not None:
            if hasattr(self.transform, "make_params"):  # a smartset transform or policy
                image = self.transform(image[None])[0]  # takes a batch N x C x H x W
            else:
                image = self.transform(image)
        if self.targets[index] is not None:
            return image, torch.tensor(self.targets[index], dtype=torch.float32)
        label = self.labels[index]
        return image, (self.class_to_idx[label] if label is not None else -1)


def _check_size(size) -> tuple[int, int] | None:
    """``size`` as ``(H, W)``; one clear error for anything else."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be an int or (height, width), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return h, w


def _load(path: str, mode: str | None, size: tuple[int, int] | None, fit: str) -> np.ndarray:
    """Decode ``path`` (the one decoder) and resize it to ``size`` (``fit``: ``"stretch"``
    or ``"pad"``): the one decode-and-resize of the data set, learn's arrays and predict.
    ``H x W`` for gray images, ``H x W x C`` otherwise."""
    if size is None:
        return np.array(decode(path, mode=mode))  # writable: torch may change it
    image = decode(path, mode=mode, draft=2 * max(size))
    h, w = size
    if image.size != (w, h):
        if fit == "pad":
            image = ImageOps.pad(image, (w, h), Image.Resampling.BILINEAR, color=0)
        else:
            image = image.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.array(image, dtype=np.uint8)
