"""On-the-fly augmentation for training: a ``torch`` Dataset wrapper, deterministic per
(seed, epoch, index) whatever the batch composition, the worker count or the order.

Two ways to run, same images:

- ``mode="item"``: each ``dataset[i]`` is augmented on its own (in DataLoader workers);
- ``mode="batch"`` (fast): items come back as decoded, and ``collate_fn`` stacks a batch and
  augments it at once, one fused resampling for the whole batch.

Sample ``i`` of epoch ``e`` draws its parameters from ``numpy.random.default_rng([seed, e,
i])``, so both modes, any batch size and any number of workers give the same augmented
images. The epoch lives in shared memory: ``set_epoch`` reaches persistent workers too.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate

from smartset._threads import worker_init_fn
from smartset.augment._params import Params
from smartset.augment.errors import BatchShapeError
from smartset.augment.policy import PolicyParams, resolve_policy
from smartset.augment._validation import check_choice

__all__ = ["AugmentedDataset"]


class AugmentedDataset(Dataset):
    """Augment the images of ``dataset`` (items ``(image, target)``, ``image`` a
    ``C x H x W`` tensor, as :class:`smartset.data.ImageDataset` gives) with ``policy``.

    Parameters
    ----------
    dataset : a map-style dataset of ``(image, target)`` (or of images).
    policy : a policy, transform, named policy or policy file.
    seed : the run's seed; with the epoch and the index it fixes every sample's parameters.
    mode : ``"item"`` (augment in ``__getitem__``) or ``"batch"`` (augment in
        :meth:`collate_fn`; pass it to the DataLoader).
    size : ``(H, W)`` to resize every image to before augmenting (bilinear, antialiased), so
        images of mixed sizes can share a batch; None keeps sizes (a batch of mixed sizes
        then raises :class:`~smartset.augment.BatchShapeError`).
    return_params : also return each sample's parameter record (a JSON dict, see
        :func:`smartset.augment.replay`).
    """

    #: pass as ``DataLoader(worker_init_fn=AugmentedDataset.worker_init_fn)``: 1 torch and
    #: 1 OpenCV thread per worker (the workers are the parallelism; see smartset._threads)
    worker_init_fn = staticmethod(worker_init_fn)

    def __init__(self, dataset, policy, *, seed: int = 0, mode: str = "item",
                 size: tuple[int, int] | None = None, return_params: bool = False):
        check_choice("AugmentedDataset", "mode", mode, ("item", "batch"))
        self.dataset = dataset
        self.policy = resolve_policy(policy)
        self.seed = int(seed)
        self.mode = mode
        self.size = None if size is None else (int(size[0]), int(size[-1]))
        self.return_params = return_params
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: new parameters for every sample (visible to workers)."""
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return len(self.dataset)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def _load(self, index: int):
        item = self.dataset[index]
        image, target = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, None)
        if not isinstance(image, torch.Tensor) or image.ndim != 3:
            raise TypeError(f"AugmentedDataset needs C x H x W image tensors, item {index} gave "
                            f"{type(image).__name__} {tuple(getattr(image, 'shape', ()))}.")
        if self.size is not None and tuple(image.shape[1:]) != self.size:
            image = _resize(image, self.size)
        return image, target

    def _params(self, indices, shape) -> PolicyParams:
        parts = [self.policy.make_params((1, *shape), self.rng(i)) for i in indices]
        return PolicyParams(self.policy, [Params.concat([p.params[j] for p in parts])
                                          for j in range(len(parts[0].params))], len(parts))

    def __getitem__(self, index: int):
        image, target = self._load(index)
        if self.mode == "batch":
            return image, target, int(index)
        params = self._params([index], tuple(image.shape))
        out, applied = self.policy._run(image[None], params)
        if self.return_params:
            return out[0], target, applied.record(0)
        return out[0], target

    def collate_fn(self, items):
        """Stack ``(image, target, index)`` items (``mode="batch"``) and augment the batch."""
        images, targets, indices = zip(*items)
        shapes = sorted({tuple(im.shape) for im in images})
        if len(shapes) > 1:
            raise BatchShapeError(f"Images of one batch differ in size: {shapes[:4]}. Pass "
                                  f"size=(H, W) to AugmentedDataset to resize them, or use "
                                  f"batch_size=1.")
        batch = torch.stack(images)
        params = self._params(indices, shapes[0])
        out, applied = self.policy._run(batch, params)
        collated = default_collate(list(targets)) if targets[0] is not None else None
        if self.return_params:
            return out, collated, applied.records()
        return out, collated


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    work = image.to(torch.float32)[None]
    out = F.interpolate(work, size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    if image.is_floating_point():
        return out.to(image.dtype)
    return out.round_().clamp_(0, 255 if image.dtype == torch.uint8 else out.max()).to(image.dtype)
