"""On-the-fly augmentation for training: a ``torch`` Dataset wrapper, deterministic per
(seed, epoch, index) whatever the batch composition, the worker count or the order.

Two ways to run, same images:

- ``mode="item"``: each ``dataset[i]`` is augmented on its own (in DataLoader workers);
- ``mode="batch"`` (fast): items come back as decoded, and ``collate_fn`` stacks a batch and
  augments it at once, one fused resampling for the whole batch.

Sample ``i`` of epoch ``e`` draws its parameters from a stream fixed by ``(seed, e, i)``
alone, so both modes, any batch size, any order and any number of workers give the same
augmented images. A batch draws every sample's parameters in one pass
(:class:`smartset.augment._rowrandom.RowRandom`: row ``k`` of each draw is a hash of the
seed, the epoch, the sample's index and the draw's number), and the noise of elastic and
noise transforms is addressed by the sample's index in one stream per epoch. Before the
first batch of an image shape the policy is checked to draw that way (a batch equals its
samples drawn one by one); a policy that does not (``same_on_batch``, a distribution
:class:`RowRandom` does not serve) falls back to a generator per sample,
``numpy.random.default_rng([seed, e, i])``, slower at small sizes, same guarantees.
In a DataLoader with a batch size, ``__getitems__`` fetches a batch's items in one call
(through the wrapped dataset's own ``__getitems__`` where it has one). The epoch lives in
shared memory: ``set_epoch`` reaches persistent workers too.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate

from smartset._threads import worker_init_fn
from smartset.augment._noise import STREAM_LIMIT
from smartset.augment._params import Params
from smartset.augment._rowrandom import NotRowwise, RowRandom, row_key
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
        self._rowwise: dict[tuple, bool] = {}  # image shape -> the policy draws per row

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: new parameters for every sample (visible to workers)."""
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return len(self.dataset)

    def rng(self, index: int) -> np.random.Generator:
        """The per-sample generator of the fallback path (see the module docstring)."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def uses_batched_draws(self, shape) -> bool:
        """Whether batches of images of ``shape`` (``C x H x W``) draw their parameters in
        one pass (checked once per shape: 16 samples drawn together equal them drawn one by
        one), rather than with a generator per sample."""
        shape = tuple(int(s) for s in shape)
        if shape not in self._rowwise:
            self._rowwise[shape] = _draws_per_row(self.policy, shape, self.seed)
        return self._rowwise[shape]

    def _load(self, index: int):
        return self._checked(self.dataset[index], index)

    def _checked(self, item, index: int):
        image, target = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, None)
        if not isinstance(image, torch.Tensor) or image.ndim != 3:
            raise TypeError(f"AugmentedDataset needs C x H x W image tensors, item {index} gave "
                            f"{type(image).__name__} {tuple(getattr(image, 'shape', ()))}.")
        if self.size is not None and tuple(image.shape[1:]) != self.size:
            image = _resize(image, self.size)
        return image, target

    def _params(self, indices, shape) -> PolicyParams:
        if self.uses_batched_draws(shape):
            return _row_params(self.policy, shape, self.seed, self.epoch, indices)
        parts = [self.policy.make_params((1, *shape), self.rng(i)) for i in indices]
        return PolicyParams(self.policy, [Params.concat([p.params[j] for p in parts])
                                          for j in range(len(parts[0].params))], len(parts))

    def __getitems__(self, indices):
        """The items of a batch of ``indices`` (torch's DataLoader calls this with a batch
        size set): one call of the wrapped dataset's ``__getitems__`` where it has one. In
        ``mode="item"`` a batch of images of one size is augmented in one call."""
        indices = [int(i) for i in indices]
        many = getattr(self.dataset, "__getitems__", None)
        items = many(indices) if many is not None else [self.dataset[i] for i in indices]
        loaded = [self._checked(item, i) for item, i in zip(items, indices)]
        if self.mode == "batch":
            return [(image, target, i) for (image, target), i in zip(loaded, indices)]
        if len({tuple(im.shape) for im, _ in loaded}) == 1:
            groups = [(loaded, indices)]
        else:  # images of several sizes: one at a time
            groups = [([item], [i]) for item, i in zip(loaded, indices)]
        result = []
        for part, rows in groups:
            out, applied = self._augment([im for im, _ in part], rows)
            for k, (_, target) in enumerate(part):
                result.append((out[k], target, applied.record(k)) if self.return_params
                              else (out[k], target))
        return result

    def _augment(self, images, indices):
        params = self._params(indices, tuple(images[0].shape))
        return self.policy._run(torch.stack(images), params)

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
        out, applied = self._augment(images, indices)
        collated = default_collate(list(targets)) if targets[0] is not None else None
        if self.return_params:
            return out, collated, applied.records()
        return out, collated


def _row_params(policy, shape, seed: int, epoch: int, indices) -> PolicyParams:
    """Every sample's parameters in one pass; the noise of leaf ``j`` is read at the
    sample's index of the stream of (seed, epoch, j)."""
    rows = np.asarray(indices, dtype=np.int64)
    params = policy.make_params((len(rows), *shape), RowRandom(_key(seed, epoch), rows))
    for j, leaf in enumerate(params.params):
        if "stream" in leaf.columns and "index" in leaf.columns:
            stream = _key(seed, epoch, j + 1) % STREAM_LIMIT
            leaf.columns["stream"] = np.full(len(rows), stream, dtype=np.int64)
            leaf.columns["index"] = rows.copy()
    return params


@functools.lru_cache(maxsize=256)
def _key(*parts: int) -> int:
    """:func:`row_key` of ``parts``, kept: every batch of an epoch asks for the same keys."""
    return row_key(*parts)


def _draws_per_row(policy, shape, seed: int, n: int = 16) -> bool:
    """Whether ``policy`` keeps :class:`RowRandom`'s contract on images of ``shape``: ``n``
    samples drawn together give the parameters they get drawn one by one."""
    rows = np.arange(n) * 7 + 3
    try:
        together = _row_params(policy, shape, seed, 0, rows)
        alone = [_row_params(policy, shape, seed, 0, rows[k:k + 1]) for k in range(n)]
    except NotRowwise:
        return False
    return all(Params.concat([a.params[j] for a in alone]) == together.params[j]
               for j in range(len(together.params)))


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    work = image.to(torch.float32)[None]
    out = F.interpolate(work, size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    if image.is_floating_point():
        return out.to(image.dtype)
    return out.round_().clamp_(0, 255 if image.dtype == torch.uint8 else out.max()).to(image.dtype)
