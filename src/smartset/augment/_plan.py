"""Running ``(transform, params)`` steps over a batch: inputs dispatched by type, runs of
geometric steps fused into one warp, photometric steps on the samples they apply to."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from smartset._threads import capped_threads
from smartset.augment import _geometry as geo
from smartset.augment._params import Params
from smartset.augment.errors import BatchShapeError
from smartset.augment.targets import BoundingBoxes, Keypoints, Masks, inside

_TARGETS = (Masks, BoundingBoxes, Keypoints)


def _type_name(obj) -> str:
    kind = type(obj)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def flatten(batch) -> tuple[list, Callable[[list], object]]:
    """The leaves of ``batch`` (tensors and typed targets) and a function rebuilding the
    same structure from new leaves. Unknown types raise ``TypeError`` naming them."""
    if isinstance(batch, torch.Tensor):
        if batch.ndim != 4:
            raise BatchShapeError(
                f"Expected an image batch N x C x H x W, got a tensor of shape "
                f"{tuple(batch.shape)}. For one image use image[None] (C x H x W) or "
                f"image[None, None] (H x W); stack images of one size with torch.stack.")
        return [batch], lambda leaves: leaves[0]
    if isinstance(batch, _TARGETS):
        return [batch], lambda leaves: leaves[0]
    if isinstance(batch, (tuple, list)):
        parts = [flatten(item) for item in batch]
        counts = [len(p[0]) for p in parts]

        def rebuild(leaves, parts=parts, counts=counts, kind=type(batch)):
            items, start = [], 0
            for (_, fn), count in zip(parts, counts):
                items.append(fn(leaves[start:start + count]))
                start += count
            return kind(items)
        return [leaf for p in parts for leaf in p[0]], rebuild
    if isinstance(batch, dict):
        keys = list(batch)
        parts = [flatten(batch[k]) for k in keys]
        counts = [len(p[0]) for p in parts]

        def rebuild_dict(leaves, parts=parts, counts=counts, keys=keys):
            out, start = {}, 0
            for key, (_, fn), count in zip(keys, parts, counts):
                out[key] = fn(leaves[start:start + count])
                start += count
            return out
        return [leaf for p in parts for leaf in p[0]], rebuild_dict
    raise TypeError(
        f"smartset.augment cannot transform an object of type {_type_name(batch)}: pass an "
        f"image batch (torch.Tensor N x C x H x W), Masks, BoundingBoxes, Keypoints, or a "
        f"tuple, list or dict of them (NumPy arrays: torch.from_numpy).")


def _geometry_of(leaves: list) -> tuple[int, tuple[int, int], int]:
    """(N, (H, W), C) shared by every leaf; mismatches raise BatchShapeError."""
    sizes, counts, channels = set(), set(), None
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            counts.add(leaf.shape[0])
            sizes.add(tuple(leaf.shape[2:]))
            channels = channels or leaf.shape[1]
        elif isinstance(leaf, Masks):
            counts.add(leaf.data.shape[0])
            sizes.add(tuple(leaf.data.shape[2:]))
        else:
            counts.add(len(leaf))
            sizes.add(leaf.canvas_size)
    if len(counts) > 1:
        raise BatchShapeError(f"The parts of one batch hold different numbers of samples: "
                              f"{sorted(counts)}.")
    if len(sizes) > 1:
        raise BatchShapeError(f"The parts of one batch have different canvas sizes (H, W): "
                              f"{sorted(sizes)}; give boxes and keypoints the image's size.")
    return counts.pop(), sizes.pop(), channels or 1


def batch_shape_of(batch) -> tuple[int, int, int, int]:
    n, (height, width), channels = _geometry_of(flatten(batch)[0])
    return (n, channels, height, width)


def run_steps(steps: list, batch) -> tuple[object, list[Params]]:
    """Apply ``steps`` (``(transform, params)`` pairs) to ``batch``; returns the result and
    the parameters as applied (centering shifts filled in)."""
    leaves, rebuild = flatten(batch)
    n, _, _ = _geometry_of(leaves)
    for transform, params in steps:
        if params.n != n:
            raise BatchShapeError(f"{transform.name}: parameters for {params.n} samples, "
                                  f"batch of {n}.")
    if len(steps) > 1 and torch.get_num_threads() > 1:
        # a policy's steps are many short torch/OpenCV calls: each parallel region waits at
        # its barrier for a thread whose core another process holds (10-40x slower on a busy
        # machine), so the whole run uses only the free cores (smartset._threads)
        with capped_threads("augment"):
            return _run_steps(steps, leaves, rebuild, n)
    return _run_steps(steps, leaves, rebuild, n)


def _run_steps(steps: list, leaves: list, rebuild, n: int) -> tuple[object, list[Params]]:
    resolved: list[Params] = []
    # the image leaves made by this run (not the caller's tensors, nor views of them): a
    # step applied to some samples writes their rows into such a leaf in place instead of
    # copying the whole batch first (a policy's OneOf is a row of such steps)
    inputs = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
    owned = [False] * len(leaves)
    i = 0
    while i < len(steps):
        transform = steps[i][0]
        if transform.kind == "geometric":
            j = i + 1
            while (j < len(steps) and steps[j][0].kind == "geometric"
                   and steps[j][0].fill_key == transform.fill_key):
                j += 1
            leaves, done = _run_geometric(steps[i:j], leaves)
            owned = [_made_here(leaf, inputs) for leaf in leaves]
            resolved.extend(done)
            i = j
        else:
            results = [_run_photometric(transform, steps[i][1], leaf, own)
                       for leaf, own in zip(leaves, owned)]
            leaves = [leaf for leaf, _ in results]
            owned = [own or _made_here(leaf, inputs) for leaf, own in results]
            resolved.append(steps[i][1])
            i += 1
    return rebuild(leaves), resolved


def _made_here(leaf, inputs: list) -> bool:
    """Whether ``leaf`` is a dense image tensor sharing no memory with the caller's
    ``inputs`` (then a later step of the same run may write into it)."""
    if (not isinstance(leaf, torch.Tensor) or leaf.layout != torch.strided
            or leaf.requires_grad or not leaf.is_contiguous() or leaf.numel() == 0):
        return False  # autograd may keep a tensor for its backward pass: never written
    storage = leaf.untyped_storage().data_ptr()
    return not any(x.layout == torch.strided and x.untyped_storage().data_ptr() == storage
                   for x in inputs)


def _run_photometric(transform, params: Params, leaf, owned: bool = False):
    """One photometric step on ``leaf``: ``(result, owned)``, ``owned`` saying the result
    may be written in place by the next step (``leaf`` itself when it was ``owned``: the
    applied rows are written into it, the other rows are already right)."""
    if not isinstance(leaf, torch.Tensor):
        return leaf, False  # targets do not change with pixel values
    transform._check_channels(leaf)
    applied = params.applied
    if len(applied) == 0:
        return (transform._apply_images(leaf, params) if transform.kind == "normalize"
                else leaf.clone()), False
    if applied.all():
        return _chunked(transform, leaf, params), False
    if not applied.any():
        return leaf, owned
    rows = np.flatnonzero(applied)
    part = _chunked(transform, _take_rows(leaf, rows), params.subset(rows))
    if part.dtype == leaf.dtype and owned:
        return _put_rows(leaf, rows, part), True
    out = leaf.to(part.dtype) if part.dtype != leaf.dtype else leaf.clone()
    return _put_rows(out, rows, part), not out.requires_grad


#: dtypes NumPy shares with torch: rows of CPU batches of these move as NumPy slices
_NUMPY_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool,
                 torch.float16, torch.float32, torch.float64)


def _numpy_rows(*tensors) -> bool:
    return all(t.device.type == "cpu" and t.dtype in _NUMPY_DTYPES and t.is_contiguous()
               and not t.requires_grad for t in tensors)


def _take_rows(x: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """``x.index_select(0, rows)``; on the CPU through NumPy, which copies whole rows
    (torch's index kernels address every element: 3-20x slower on image batches)."""
    if _numpy_rows(x):
        return torch.from_numpy(np.take(x.numpy(), rows, axis=0))
    return x.index_select(0, torch.as_tensor(rows, device=x.device))


def _put_rows(out: torch.Tensor, rows: np.ndarray, part: torch.Tensor) -> torch.Tensor:
    """``out[rows] = part`` in place (``index_copy_``; NumPy rows on the CPU)."""
    if _numpy_rows(out, part) and part.dtype == out.dtype:
        out.numpy()[rows] = part.numpy()
        return out
    return out.index_copy_(0, torch.as_tensor(rows, device=out.device), part.to(out.dtype))


_CHUNK_VALUES = 1 << 18  # values per photometric chunk: its float temporaries stay in cache


def _chunked(transform, x: torch.Tensor, params: Params) -> torch.Tensor:
    """``transform._apply_images`` over chunks of samples of about ``_CHUNK_VALUES`` values:
    a chain of whole-batch float temporaries of large images costs more in memory traffic
    (fresh pages for every temporary) than the arithmetic. Transforms treat samples apart
    (the conformance suite checks it), so the result is the same bits; normalisations
    fitted on the batch as a whole are not chunked."""
    n = len(x)
    per = max(1, _CHUNK_VALUES // max(1, x[0].numel())) if n else 1
    whole = (getattr(transform, "opencv_uint8", False) and x.dtype == torch.uint8
             and x.device.type == "cpu")  # OpenCV a plane at a time: no float temporaries
    if n <= per or transform.kind == "normalize" or whole:
        return transform._apply_images(x, params)
    parts = [transform._apply_images(x[start:start + per],
                                     params.subset(np.arange(start, min(n, start + per))))
             for start in range(0, n, per)]
    return torch.cat(parts)


def _run_geometric(group: list, leaves: list) -> tuple[list, list[Params]]:
    n, size, channels = _geometry_of(leaves)
    fill, fill_value, interpolation = group[0][0].fill_key
    steps = []
    for transform, params in group:
        step = transform.geo_step(params, size)
        steps.append(step)
        size = step.size_out
    images = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
    if n == 0:
        return [_empty_like(leaf, size) for leaf in leaves], [p for _, p in group]
    steps = geo.resolve_centering(steps, images[0] if images else None, fill=fill,
                                  fill_value=fill_value, interpolation=interpolation)
    resolved = []
    for (transform, params), step in zip(group, steps):
        if step.shift is not None:
            params = Params(params.n, {**params.columns, "dx": step.shift[:, 0].copy(),
                                       "dy": step.shift[:, 1].copy()})
        resolved.append(params)
    warp = geo.FusedWarp(steps)
    out = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            out.append(warp.images(leaf, fill=fill, fill_value=fill_value,
                                   interpolation=interpolation))
        elif isinstance(leaf, Masks):
            out.append(Masks(warp.masks(leaf.data, fill=fill, fill_value=leaf.fill), leaf.fill))
        elif isinstance(leaf, BoundingBoxes):
            boxes, keep = warp.boxes(leaf.to_xyxy(), min_visibility=leaf.min_visibility,
                                     min_area=leaf.min_area)
            out.append(leaf.replace(boxes, keep, size))
        else:
            points = warp.points(leaf.points)
            visible = [v & inside(p, size) for v, p in zip(leaf.visible, points)]
            out.append(Keypoints(points, size, visible))
    return out, resolved


def _empty_like(leaf, size):
    if isinstance(leaf, torch.Tensor):
        return leaf.new_empty((0, leaf.shape[1], *size))
    if isinstance(leaf, Masks):
        return Masks(leaf.data.new_empty((0, leaf.data.shape[1], *size)), leaf.fill)
    if isinstance(leaf, BoundingBoxes):
        return leaf.replace([], [], size)
    return Keypoints([], size, [])
