"""OpenCV kernels for the fused warp of ``uint8`` CPU batches, one image at a time.

Why by hand: ``grid_sample`` works in float, so a ``uint8`` batch pays for a float copy of
its pixels, a float sampling grid of every output pixel (8 bytes a pixel) and a rounding
pass, about 0.8 ms per 224 x 224 photo on one core. OpenCV samples ``uint8`` directly with
fixed-point weights and builds what it needs in cache-sized blocks:

- a crop resized (a map that is an axis-aligned scale of a pixel box inside the source:
  random resized crop, resize) is ``cv2.resize`` of the box's view, each channel plane
  written straight into the output (no layout change, no sampling grid);
- other affine and projective maps are ``cv2.warpAffine`` / ``cv2.warpPerspective`` with
  the backward matrix (``WARP_INVERSE_MAP``);
- maps given per pixel (grid and optical distortion, and elastic fields fused with the
  affine steps: the float path's lattice upsampled, in source pixels) are sampled with
  ``cv2.remap``: grid and optical distortion through OpenCV's fixed-point maps
  (``cv2.convertMaps`` to ``CV_16SC2``, 1/32 pixel), elastic fields through the float32
  maps themselves (OpenCV 5.0 samples 1- and 4-channel images faster from float maps,
  and within a level of the float path on every pixel; 3 channels are sampled as 4).

The conventions are the fused warp's: pixel centres at integer coordinates (OpenCV's
own), bilinear weights, the Keras fill modes as OpenCV borders (``constant``,
``nearest`` = replicate, ``reflect`` = half-sample symmetric, ``wrap``). OpenCV rounds
coordinates to 1/32 pixel and weights to 11 or 15 bits, so a pixel may differ from the
float path by a level or two (``tests/test_augment_warps.py`` bounds it); every image is
computed alone, so a batch gives what its samples give one at a time, bit for bit.

Images are spread over a small thread pool (OpenCV releases the GIL) when more than one
thread is allowed; OpenCV's own pool is held at one thread meanwhile, so the two never
oversubscribe the cores.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from smartset._threads import thread_pool

__all__ = ["usable", "resize_rows", "matrix_rows", "remap_rows"]

_MAX_CHANNELS = 4  # OpenCV's warps take up to 4 interleaved channels


def _cv2():
    import cv2

    return cv2


def usable(x: torch.Tensor, *, mode: str, keep_float: bool) -> bool:
    """Whether the OpenCV kernels apply: ``uint8`` on the CPU, bilinear, ``uint8`` out."""
    return (x.dtype == torch.uint8 and x.device.type == "cpu" and mode == "bilinear"
            and not keep_float and x.shape[1] >= 1)


def _border(fill: str, fill_value: float):
    cv2 = _cv2()
    mode = {"constant": cv2.BORDER_CONSTANT, "nearest": cv2.BORDER_REPLICATE,
            "reflect": cv2.BORDER_REFLECT, "wrap": cv2.BORDER_WRAP}[fill]
    value = float(np.clip(np.floor(float(fill_value) + 0.5), 0, 255))  # rounded half up
    return mode, (value, value, value, value)


# -- one image, channels-first in and out --------------------------------------------------
def _per_group(image: np.ndarray, out: np.ndarray, kernel: Callable) -> None:
    """``kernel(src, dst)`` over groups of at most 4 channels (one group usually). A group
    of 3 is sampled as 4 (its first plane twice): OpenCV 5's 4-channel warps and remaps are
    about twice as fast as its 3-channel ones, with the same values in every channel
    (``tests/test_augment_warps.py``)."""
    channels = image.shape[0]
    if channels == 1:
        kernel(image[0], out[0])
        return
    for start in range(0, channels, _MAX_CHANNELS):
        part = image[start:start + _MAX_CHANNELS]
        if len(part) == 1:
            kernel(part[0], out[start])
            continue
        cv2 = _cv2()
        planes = list(part)
        targets = list(out[start:start + len(part)])
        if len(planes) == 3:
            planes.append(planes[0])
            targets.append(np.empty_like(targets[0]))
        src = cv2.merge(planes)
        dst = np.empty((out.shape[1], out.shape[2], len(planes)), np.uint8)
        kernel(src, dst)
        cv2.split(dst, targets)


# -- the loop over images ---------------------------------------------------------------------
_POOL_MIN_VALUES = 1 << 14  # values per work item (about 74 x 74 RGB) to use the pool
def _pool(threads: int) -> ThreadPoolExecutor:
    """The process's kept thread pool (one per process id: a forked child gets its own)."""
    return thread_pool(threads)


@contextlib.contextmanager
def _single_threaded():
    cv2 = _cv2()
    before = cv2.getNumThreads(), torch.get_num_threads()
    if before[0] != 1:
        cv2.setNumThreads(1)
    if before[1] != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before[0] != 1:
            cv2.setNumThreads(before[0])
        if before[1] != 1:
            torch.set_num_threads(before[1])


def _each(count: int, work: Callable[[int], None], threads: int, pixels: int) -> None:
    """``work(k)`` for k in range(count) (``pixels`` values each): in this thread, or
    spread over ``threads`` threads (contiguous runs) when each item is worth it (small
    images are bound by the Python work between OpenCV calls, which holds the GIL).
    OpenCV and torch run one thread each meanwhile (torch ops in ``work`` release the
    GIL)."""
    with _single_threaded():
        if threads <= 1 or count < threads or pixels < _POOL_MIN_VALUES:
            for k in range(count):
                work(k)
            return
        bounds = np.linspace(0, count, threads + 1).round().astype(int)

        def run(lo_hi):
            for k in range(*lo_hi):
                work(k)
        list(_pool(threads).map(run, zip(bounds[:-1], bounds[1:])))


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.numpy() if x.is_contiguous() else x.contiguous().numpy()


# -- the kernels ---------------------------------------------------------------------------------
def resize_rows(x: torch.Tensor, out: torch.Tensor, rows: np.ndarray, boxes: np.ndarray,
                threads: int = 1) -> None:
    """``out[rows[k]]`` = the pixel box ``boxes[k]`` (left, top, width, height) of
    ``x[rows[k]]`` resized bilinearly to the output size (``cv2.resize``: edges of the box
    replicated, as torchvision and albumentations crop and resize)."""
    cv2 = _cv2()
    src, dst = _numpy(x), out.numpy()
    height, width = out.shape[2:]
    channels = x.shape[1]

    def work(k):
        i = int(rows[k])
        left, top, w, h = (int(v) for v in boxes[k])
        view = src[i, :, top:top + h, left:left + w]
        for c in range(channels):  # plane by plane: no change of layout either way
            cv2.resize(view[c], (width, height), dst=dst[i, c], interpolation=cv2.INTER_LINEAR)
    _each(len(rows), work, threads, height * width * channels)


def matrix_rows(x: torch.Tensor, out: torch.Tensor, rows: np.ndarray, backward: np.ndarray,
                fill: str, fill_value: float, threads: int = 1) -> None:
    """``out[rows[k]]`` = ``x[rows[k]]`` sampled at ``backward[k]`` (3 x 3, output pixel to
    source pixel; projective where its last row is not ``0 0 1``)."""
    cv2 = _cv2()
    src, dst = _numpy(x), out.numpy()
    height, width = out.shape[2:]
    border, value = _border(fill, fill_value)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP

    def work(k):
        i = int(rows[k])
        m = backward[k]
        if np.any(m[2, :2] != 0):
            def kernel(s, d, m=m):
                cv2.warpPerspective(s, m, (width, height), dst=d, flags=flags,
                                    borderMode=border, borderValue=value)
        else:
            affine = np.ascontiguousarray(m[:2])

            def kernel(s, d, affine=affine):
                cv2.warpAffine(s, affine, (width, height), dst=d, flags=flags,
                               borderMode=border, borderValue=value)
        _per_group(src[i], dst[i], kernel)
    _each(len(rows), work, threads, height * width * x.shape[1])


def _fixed_axes(px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, ...]:
    """The per-axis parts of OpenCV's fixed-point maps (1/32 pixel, round half to even,
    saturated as ``cv2.convertMaps``) of separable maps ``px`` (``n x W``) and ``py``
    (``n x H``), for every row at once: the x and y pixel words (uint32, the y word shifted
    into the high half on little-endian machines) and the x and y sub-pixel indices
    (uint16, y's times 32). :func:`_fixed_from_axes` puts one row's together."""
    ix = np.rint(px.astype(np.float32) * 32)
    iy = np.rint(py.astype(np.float32) * 32)
    np.clip(ix, -(1 << 20), 1 << 20, out=ix)
    np.clip(iy, -(1 << 20), 1 << 20, out=iy)
    ix, iy = ix.astype(np.int32), iy.astype(np.int32)
    wx = np.clip(ix >> 5, -32768, 32767).astype(np.int16).view(np.uint16).astype(np.uint32)
    wy = np.clip(iy >> 5, -32768, 32767).astype(np.int16).view(np.uint16).astype(np.uint32)
    if sys.byteorder == "little":  # each (x, y) int16 pair as one int32: one broadcast
        wy <<= np.uint32(16)
    return wx, wy, (ix & 31).astype(np.uint16), ((iy & 31) * 32).astype(np.uint16)


def _fixed_from_axes(wx: np.ndarray, wy: np.ndarray, fx: np.ndarray,
                     fy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One row of :func:`_fixed_axes` as OpenCV's ``CV_16SC2`` + ``CV_16UC1`` maps: two
    broadcasts over the output pixels."""
    if sys.byteorder == "little":
        fixed = np.bitwise_or(wy[:, None], wx[None, :]).view(np.int16)
        fixed = fixed.reshape(len(wy), len(wx), 2)
    else:
        fixed = np.empty((len(wy), len(wx), 2), np.int16)
        fixed[..., 0] = wx.astype(np.uint16).view(np.int16)[None, :]
        fixed[..., 1] = wy.astype(np.uint16).view(np.int16)[:, None]
    return fixed, np.add(fy[:, None], fx[None, :])


def _fixed_separable(px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's fixed-point maps (``CV_16SC2`` + ``CV_16UC1``, 1/32 pixel) of the separable
    map ``(px[j], py[i])``, built by broadcasting the two axes: the same values as
    ``cv2.convertMaps`` of the full float maps (round half to even, saturated)."""
    return _fixed_from_axes(*(part[0] for part in _fixed_axes(px[None], py[None])))


def remap_rows(x: torch.Tensor, out: torch.Tensor, rows: np.ndarray,
               points: Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]], fill: str,
               fill_value: float, threads: int = 1, block_pixels: int = 1 << 18,
               maps: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None,
               separable: bool | None = None, fixed: bool = True) -> None:
    """``out[rows[k]]`` = ``x[rows[k]]`` sampled at ``points(rows_block)``: the source x
    and y of every output pixel as float32 tensors, each ``n x H x W``, or ``n x 1 x W``
    and ``n x H x 1`` when the map is separable (grid distortion), then the fixed-point
    maps are built from the two axes directly. Full maps are computed for blocks of about
    ``block_pixels`` output pixels (their float temporaries stay in cache) and converted
    per image with ``cv2.convertMaps``. ``maps`` (a row index to OpenCV's fixed-point maps)
    replaces ``points`` where a transform makes its maps itself. ``separable``: whether
    the maps are given as two axes (None: ask ``points`` for the first row). Full maps may
    be strided views (each image's plane contiguous, as ``map[:, 0]`` of ``n x 2 x H x W``).
    Coordinates are absolute source pixels, pixel centres at integers (OpenCV's convention;
    grid_sample's normalised coordinates must be converted before). ``fixed=False`` samples
    full maps as float32 (no ``cv2.convertMaps``): OpenCV 5 remaps 1- and 4-channel images
    faster from float maps than from fixed-point ones, and closer to the float path."""
    cv2 = _cv2()
    src, dst = _numpy(x), out.numpy()
    height, width = out.shape[2:]
    border, value = _border(fill, fill_value)

    def sample(i, fixed, fraction):
        def kernel(s, d):
            cv2.remap(s, fixed, fraction, cv2.INTER_LINEAR, dst=d, borderMode=border,
                      borderValue=value)
        _per_group(src[i], dst[i], kernel)

    if maps is not None:
        def work_own(k):
            sample(int(rows[k]), *maps(int(rows[k])))
        _each(len(rows), work_own, threads, height * width * x.shape[1])
        return
    # the first row tells whether the map is separable: it is, or not, for every row
    if separable is None:
        probe_x, probe_y = points(rows[:1])
        separable = probe_x.shape[1] == 1 and probe_y.shape[2] == 1
    if separable:  # the two axes, for every row
        map_x, map_y = (_numpy(m) for m in points(rows))
        # the axes' rounding for every row at once (small arrays: a call each would cost
        # more than the two broadcasts of an image)
        axes = _fixed_axes(map_x[:, 0], map_y[:, :, 0])

        def work(k):
            sample(int(rows[k]), *_fixed_from_axes(*(part[k] for part in axes)))
        _each(len(rows), work, threads, height * width * x.shape[1])
        return
    block = max(1, block_pixels // (height * width))
    starts = range(0, len(rows), block)

    def work_block(b):  # full maps for a block of rows, then each image of the block
        part = rows[starts[b]:starts[b] + block]
        map_x, map_y = (m.numpy() for m in points(part))  # strided views are fine
        map_x = np.broadcast_to(map_x, (len(part), height, width))
        map_y = np.broadcast_to(map_y, (len(part), height, width))
        for k in range(len(part)):
            first, second = np.ascontiguousarray(map_x[k]), np.ascontiguousarray(map_y[k])
            if fixed:
                first, second = cv2.convertMaps(first, second, cv2.CV_16SC2)
            sample(int(part[k]), first, second)
    _each(len(starts), work_block, threads, block * height * width * x.shape[1])
