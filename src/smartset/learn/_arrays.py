"""Checks and conversions of image arrays and labels shared by the learning stage."""

from __future__ import annotations

import numpy as np

from smartset._torch import require_torch
from smartset.learn.errors import LearnError

torch = require_torch("smartset.learn")


def as_image_tensor(images) -> torch.Tensor:
    """``uint8`` images ``(N,H,W)``, ``(N,H,W,C)`` (NumPy) or ``N x C x H x W`` (torch) as a
    ``uint8`` tensor ``N x C x H x W``."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise LearnError(f"images tensor must be N x C x H x W, got shape {tuple(images.shape)}")
        tensor = images
    else:
        array = np.asarray(images)
        if array.dtype == object:
            raise LearnError("images have different sizes: resize them to one size first "
                             "(smartset.learn.load_version(..., size=64), or --size 64).")
        if array.ndim == 3:
            array = array[:, :, :, None]
        if array.ndim != 4:
            raise LearnError(f"images must be (N, H, W) or (N, H, W, C), got shape {array.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))
    if tensor.dtype != torch.uint8:
        raise LearnError(f"images must be uint8 (0-255), got {tensor.dtype}")
    if len(tensor) == 0:
        raise LearnError("no images to learn from")
    return tensor


def encode_labels(labels, classes=None) -> tuple[np.ndarray, list]:
    """Class indices and the class list; ``labels`` may be names or integers."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise LearnError(f"labels must be one-dimensional, got shape {labels.shape}")
    if any(label is None for label in labels.tolist()):
        raise LearnError("some samples have no label: label them, or leave them out of the "
                         "version (a model learns from labeled samples only).")
    known = sorted(set(labels.tolist()))
    classes = list(classes) if classes is not None else known
    if len(classes) < 2:
        raise LearnError(f"a classifier needs at least two classes, the data has "
                         f"{len(classes)} ({', '.join(map(str, classes))}): add samples of "
                         f"other classes, or train a regressor on targets.")
    index = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in known if c not in index]
    if unknown:
        raise LearnError(f"labels {unknown[:5]} are not among the classes {classes[:10]}")
    return np.array([index[v] for v in labels.tolist()], dtype=np.int64), classes


def as_targets(targets) -> np.ndarray:
    try:
        array = np.asarray(targets, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise LearnError(f"regression targets must be numbers: {error}") from None
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or not np.isfinite(array).all():
        raise LearnError("regression targets must be finite numbers, one row per image")
    return array
