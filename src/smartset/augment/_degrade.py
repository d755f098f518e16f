"""Degradation and RandAugment kernels: motion blur, lower resolution, JPEG re-compression,
posterize, solarize, autocontrast, equalize, colour (``N x C x H x W``, dtype and device
kept, input never changed in place; re-exported by :mod:`smartset.augment.functional`).

Written by hand rather than taken from OpenCV per image (as albumentations does) so a batch
runs as a few tensor operations with a fixed order of sums per sample: a batch gives the
bits its samples give one at a time. The exceptions say why where they occur (JPEG).
"""

from __future__ import annotations

import functools

import numpy as np

from smartset._threads import capped_threads, limit_threads
from smartset._torch import require_torch

torch = require_torch("smartset.augment")
F = torch.nn.functional

__all__ = ["motion_blur", "motion_offsets", "downscale", "jpeg", "posterize", "solarize",
           "autocontrast", "equalize", "adjust_color"]


def _to_float(x):
    from smartset.augment.functional import to_float

    return to_float(x)


def _from_float(y, dtype):
    from smartset.augment.functional import from_float

    return from_float(y, dtype)


def _reflect_index(size: int, r: int, device) -> torch.Tensor:
    """Indices padding an axis by ``r`` on both sides, reflected without repeating the edge
    (OpenCV's BORDER_REFLECT_101), replicated when the axis is too short to reflect."""
    i = torch.arange(-r, size + r, device=device)
    if size == 1:
        return torch.zeros_like(i)
    period = 2 * (size - 1)
    i = torch.remainder(i, period)
    return torch.where(i >= size, period - i, i)


# -- motion blur -------------------------------------------------------------------------
def motion_offsets(length: int, angle: float) -> np.ndarray:
    """The ``length`` (odd) whole-pixel taps ``(dy, dx)`` of a straight line centred on the
    pixel at ``angle`` degrees (counter-clockwise as displayed), one per step along it."""
    t = np.arange(length, dtype=np.float64) - (length - 1) / 2
    theta = np.deg2rad(angle)
    dx = np.round(t * np.cos(theta)).astype(np.int64)
    dy = np.round(-t * np.sin(theta)).astype(np.int64)
    return np.stack([dy, dx], 1)


def motion_blur(x: torch.Tensor, length, angle) -> torch.Tensor:
    """Motion blur (albumentations' ``MotionBlur``): the mean over a straight line of
    ``length`` pixels (odd, per sample) through each pixel at ``angle`` degrees (per
    sample), borders reflected. Integer images are summed exactly and rounded half up.

    Samples whose lines rasterise alike are summed together, one shifted slice of the
    padded batch per tap, in the line's tap order (the same sums as a sample alone)."""
    n, channels, height, width = x.shape
    if n == 0:
        return x.clone()
    lengths = np.broadcast_to(np.asarray(length, np.int64), (n,))
    angles = np.broadcast_to(np.asarray(angle, np.float64), (n,))
    if _opencv_ready(x) and bool((lengths % 2 == 1).all()):
        return _motion_blur_opencv(x, lengths, angles)
    taps = [motion_offsets(int(k), float(a)) for k, a in zip(lengths, angles)]
    r = int(max(np.abs(t).max() for t in taps))
    exact = not x.dtype.is_floating_point
    # integers are summed in float32 (exact below 2**24) or float64, which SIMD adds fast
    work = x.dtype if not exact else (torch.float32 if x.dtype in (torch.uint8, torch.int8,
                                                                     torch.int16, torch.bool)
                                      else torch.float64)
    if r < height and r < width:
        padded = F.pad(x.to(work), (r, r, r, r), mode="reflect")
    else:
        padded = x.to(work).index_select(2, _reflect_index(height, r, x.device)).index_select(
            3, _reflect_index(width, r, x.device))
    groups: dict[bytes, list[int]] = {}
    for i, t in enumerate(taps):
        groups.setdefault(t.tobytes() + bytes([len(t) % 256]), []).append(i)
    out = torch.empty_like(x)
    for rows in groups.values():
        line = taps[rows[0]]
        k = len(line)
        index = torch.as_tensor(rows, device=x.device)
        part = padded.index_select(0, index) if len(rows) < n else padded
        acc = None
        for dy, dx in line:
            view = part[:, :, r + dy:r + dy + height, r + dx:r + dx + width]
            acc = view.clone() if acc is None else acc.add_(view)
        if exact:  # the exact rounded mean: (sum + k // 2) / k is exact enough to floor
            info = torch.iinfo(x.dtype)
            value = acc.add_(k // 2).div_(k).floor_()
            value = value.clamp_(info.min, info.max).to(x.dtype)
        else:
            value = acc / float(k)
        if len(rows) == n:
            return value
        out[index] = value
    return out


def _line_cells(lengths: np.ndarray, angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`motion_offsets` of a batch at once: ``dy``, ``dx`` (N x max length, the same
    float64 rounding as one line at a time), taps past a sample's length zero."""
    steps = np.arange(int(lengths.max()), dtype=np.float64)
    t = steps[None, :] - (lengths[:, None] - 1) / 2
    theta = np.deg2rad(angles)[:, None]
    used = steps[None, :] < lengths[:, None]
    dx = np.where(used, np.round(t * np.cos(theta)), 0).astype(np.int64)
    dy = np.where(used, np.round(-t * np.sin(theta)), 0).astype(np.int64)
    return dy, dx


def _motion_blur_opencv(x: torch.Tensor, lengths: np.ndarray,
                        angles: np.ndarray) -> torch.Tensor:
    """8-bit CPU images, odd lengths: OpenCV's ``filter2D`` with the line's taps weighted
    ``1 / length``, straight to 8 bits. It sums in float32 and rounds to nearest; with an odd
    length the exact mean is never half-way between two levels (``2 s / k`` is whole only when
    ``s / k`` is), and float32's error (< 1e-4 of a level) is far below the ``1 / (2 k)``
    margin, so the result is the exact rounded mean of :func:`motion_blur`'s rule (tested
    against it). Small images: the batch is padded once (reflected) and the samples sharing a
    line are stacked into one tall image, one call per distinct line (36 for lengths 3-7);
    larger ones: one call per plane, its border reflected by OpenCV, written in place."""
    import cv2

    n, channels, height, width = x.shape
    dy, dx = _line_cells(lengths, angles)
    r = int(max(np.abs(dy).max(), np.abs(dx).max()))
    # a line's cells as sorted codes (unused taps -1): one group per distinct kernel
    codes = np.where(np.arange(dy.shape[1]) < lengths[:, None],
                     (dy + r) * (2 * r + 1) + (dx + r), -1)
    rows = np.column_stack([lengths, np.sort(codes, 1)])
    base = (2 * r + 1) ** 2 + 1  # the codes and -1, shifted by one: digits of one number
    if rows.shape[1] * np.log2(max(base, int(lengths.max()) + 1)) < 62:
        packed = ((rows + 1) * base ** np.arange(rows.shape[1])).sum(1)
        _, first, inverse = np.unique(packed, return_index=True, return_inverse=True)
        keys = rows[first]
    else:
        keys, inverse = np.unique(rows, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    kernels = [_line_kernel(r, tuple(key.tolist())) for key in keys]
    if height * width <= _SMALL_PLANE:
        # samples sorted by line, padded once: each line's samples are one tall image
        order = np.argsort(inverse, kind="stable")
        # C order throughout: a run of samples is then one tall image OpenCV writes in place
        padded = _reflect_pad(np.take(x.contiguous().numpy(), order, axis=0), r)
        src = padded.reshape(n, -1, width + 2 * r)
        dst = np.empty(src.shape, np.uint8)
        bounds = np.searchsorted(inverse[order], np.arange(len(keys) + 1))
        for g, kernel in enumerate(kernels):
            a, b = int(bounds[g]), int(bounds[g + 1])
            cv2.filter2D(src[a:b].reshape(-1, width + 2 * r), cv2.CV_8U, kernel,
                         dst=dst[a:b].reshape(-1, width + 2 * r),
                         borderType=cv2.BORDER_REFLECT_101)
        out = np.empty((n, channels, height, width), np.uint8)
        out[order] = dst.reshape(padded.shape)[:, :, r:r + height, r:r + width]
        return torch.from_numpy(out)
    out = torch.empty_like(x)
    per_plane = [kernels[g] for g in np.repeat(inverse, channels).tolist()]
    _planes(lambda plane, dst, kernel: cv2.filter2D(plane, cv2.CV_8U, kernel, dst=dst,
                                                    borderType=cv2.BORDER_REFLECT_101),
            x.contiguous().view(n * channels, height, width).numpy(),
            out.view(n * channels, height, width).numpy(), per_plane, heavy=True)
    return out


def _reflect_pad(x: np.ndarray, r: int) -> np.ndarray:
    """``x`` (N x C x H x W) padded by ``r`` on both sides of H and W as
    :func:`_reflect_index` pads (BORDER_REFLECT_101; replicated where an axis is too short
    to reflect): one copy into the padded array, the borders filled by slices."""
    n, channels, height, width = x.shape
    if r >= height or r >= width:  # reflections of reflections: index once
        rows = _reflect_index(height, r, "cpu").numpy()
        cols = _reflect_index(width, r, "cpu").numpy()
        return np.ascontiguousarray(x[:, :, rows][:, :, :, cols])
    out = np.empty((n, channels, height + 2 * r, width + 2 * r), x.dtype)
    out[:, :, r:r + height, r:r + width] = x
    for i in range(1, r + 1):  # rows first (inner columns), then whole columns
        out[:, :, r - i, r:r + width] = x[:, :, i]
        out[:, :, r + height - 1 + i, r:r + width] = x[:, :, height - 1 - i]
    for i in range(1, r + 1):
        out[:, :, :, r - i] = out[:, :, :, r + i]
        out[:, :, :, r + width - 1 + i] = out[:, :, :, r + width - 1 - i]
    return out


@functools.lru_cache(maxsize=1024)
def _line_kernel(r: int, key: tuple) -> np.ndarray:
    """The smallest float32 kernel centred on the pixel (odd height and width, each the
    line's reach that way) weighting ``1 / length`` each cell of a line given as
    ``(length, code, ...)``, a code ``(dy + r) * (2 r + 1) + (dx + r)`` (-1: no tap). A line
    near the horizontal is a 1-3 row kernel: OpenCV then reads 3-7x fewer taps than a
    square one (the taps left out weigh 0)."""
    length, cells = key[0], [divmod(c, 2 * r + 1) for c in key[1:] if c >= 0]
    ry = max(abs(dy - r) for dy, _ in cells)
    rx = max(abs(dx - r) for _, dx in cells)
    kernel = np.zeros((2 * ry + 1, 2 * rx + 1), np.float32)
    for dy, dx in cells:
        kernel[dy - r + ry, dx - r + rx] += 1.0
    return kernel / np.float32(length)


# -- lower resolution --------------------------------------------------------------------
def downscale(x: torch.Tensor, scale, *, upsample: str = "bilinear") -> torch.Tensor:
    """Lower the resolution and come back (albumentations' ``Downscale``, the whale study's
    aerial -> satellite shift): shrink by ``scale`` (per sample, in (0, 1]) with area
    averaging, as a coarser sensor would, then enlarge to the original size with
    ``upsample`` (``bilinear`` or ``nearest``). 8-bit images on the CPU go through
    OpenCV's ``resize`` (INTER_AREA, then INTER_LINEAR/NEAREST) a plane at a time; other
    dtypes through ``adaptive_avg_pool2d`` and ``interpolate``."""
    n, _, height, width = x.shape
    if n == 0:
        return x.clone()
    scales = np.broadcast_to(np.asarray(scale, np.float64), (n,))
    sizes = np.stack([np.maximum(1, np.round(height * scales)),
                      np.maximum(1, np.round(width * scales))], 1).astype(np.int64)
    if _opencv_ready(x):  # 8-bit: OpenCV's area shrinking and bilinear enlarging per plane
        import cv2

        back = cv2.INTER_NEAREST if upsample == "nearest" else cv2.INTER_LINEAR
        out = torch.empty_like(x)
        if x.shape[1] == 3 and height * width > _SMALL_PLANE:
            # the planes interleaved once, shrunk and enlarged as one 3-channel image, split
            # straight into the result: OpenCV's 3-channel area and bilinear resizes are
            # faster than three planes each (same bits: every channel is summed alone)
            def one(sample, dst, size):
                small = cv2.resize(cv2.merge((sample[0], sample[1], sample[2])),
                                   (size[1], size[0]), interpolation=cv2.INTER_AREA)
                cv2.split(cv2.resize(small, (width, height), interpolation=back), list(dst))
            _planes(one, x.contiguous().numpy(), out.numpy(), sizes.tolist(), heavy=True)
            return out
        per_plane = np.repeat(sizes, x.shape[1], axis=0).tolist()
        _planes(lambda plane, dst, size: cv2.resize(
            cv2.resize(plane, (size[1], size[0]), interpolation=cv2.INTER_AREA),
            (width, height), dst=dst, interpolation=back),
            x.contiguous().view(-1, height, width).numpy(),
            out.view(-1, height, width).numpy(), per_plane,
            heavy=height * width > _SMALL_PLANE)
        return out
    keys = sizes[:, 0] * (width + 1) + sizes[:, 1]
    y = _to_float(x)
    out = torch.empty_like(y)
    for key in np.unique(keys):
        sel = np.flatnonzero(keys == key)
        index = torch.as_tensor(sel, device=x.device)
        part = y.index_select(0, index) if len(sel) < n else y
        size = (int(sizes[sel[0], 0]), int(sizes[sel[0], 1]))
        small = F.adaptive_avg_pool2d(part, size)
        if upsample == "nearest":
            back = F.interpolate(small, size=(height, width), mode="nearest-exact")
        else:
            back = F.interpolate(small, size=(height, width), mode="bilinear",
                                 align_corners=False)
        out[index] = back
    return _from_float(out, x.dtype)


# -- JPEG --------------------------------------------------------------------------------
def _jpeg_one(image: np.ndarray, quality: int, out: np.ndarray) -> None:
    """One image through OpenCV's codec: ``image`` and ``out`` are ``C x H x W`` planes
    (C 1 or 3, RGB). Colour planes are interleaved as BGR by ``cv2.merge`` (OpenCV's order:
    luma and chroma right) and the decoded BGR image split back into the RGB planes of
    ``out``: no layout change of the batch and no colour-swap pass around the codec."""
    import cv2

    colour = len(image) == 3
    source = cv2.merge((image[2], image[1], image[0])) if colour else image[0]
    ok, data = cv2.imencode(".jpg", source, (cv2.IMWRITE_JPEG_QUALITY, int(quality)))
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    # what imencode wrote has no EXIF: the orientation lookup is skipped (same pixels)
    if colour:
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        cv2.split(decoded, (out[2], out[1], out[0]))
    else:
        out[0] = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)


def jpeg(x: torch.Tensor, quality) -> torch.Tensor:
    """JPEG re-compression ("crappify", albumentations' ``ImageCompression``): encode at
    ``quality`` (1-100, per sample) and decode, with OpenCV's libjpeg (4:2:0 chroma for
    RGB). 1 or 3 channels; float images are quantised to 8 bits on the way.

    Per sample by nature: a JPEG codec takes one image at a time. Each sample's planes go
    to the codec as they lie in the batch (colour interleaved by ``cv2.merge``, decoded
    planes written by ``cv2.split`` straight into the result); large images are spread
    over ``torch.get_num_threads()`` threads of the kept pool (OpenCV releases the GIL).
    Each is encoded alone, so a batch gives the bits its samples give one at a time."""
    n, channels, height, width = x.shape
    if n == 0:
        return x.clone()
    if channels not in (1, 3):
        raise ValueError(f"jpeg needs 1 or 3 channels, got {channels}")
    qualities = np.broadcast_to(np.asarray(quality, np.int64), (n,)).tolist()
    if x.dtype == torch.uint8:
        levels = x
    else:
        levels = (_to_float(x).clamp(0, 1) * 255).round_().to(torch.uint8)
    levels = levels.cpu().contiguous()
    result = torch.empty_like(levels)
    images, out = levels.numpy(), result.numpy()

    def run(start, stop):
        if channels == 3:
            for k in range(start, stop):
                _jpeg_one(images[k], qualities[k], out[k])
            return
        # grey: the codec calls inline (a 28 x 28 digit's round trip is ~20 us: the Python
        # around it counts)
        import cv2

        encode, decode, key = cv2.imencode, cv2.imdecode, cv2.IMWRITE_JPEG_QUALITY
        flags = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION
        planes, targets = images[:, 0], out[:, 0]
        for k in range(start, stop):
            ok, data = encode(".jpg", planes[k], (key, qualities[k]))
            if not ok:
                raise RuntimeError("OpenCV could not encode a JPEG")
            targets[k] = decode(data, flags)
    # threads only for large images: a small image's codec call is too short to share the
    # GIL well on a busy machine (see _planes)
    threads = max(1, min(torch.get_num_threads(), n // 8)) if height * width > _SMALL_PLANE else 1
    if threads > 1:
        bounds = np.linspace(0, n, threads + 1).astype(int)
        list(_pool(threads).map(run, bounds[:-1], bounds[1:]))
    else:
        run(0, n)
    result = result.to(x.device)
    if x.dtype == torch.uint8:
        return result
    return _from_float(result.to(torch.float32) / 255.0, x.dtype)


# -- RandAugment's colour operations ------------------------------------------------------
def _levels(x: torch.Tensor) -> torch.Tensor:
    """8-bit levels (uint8) of an image batch."""
    if x.dtype == torch.uint8:
        return x
    return (_to_float(x).clamp(0, 1) * 255).round_().to(torch.uint8)


def _from_levels(levels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.uint8:
        return levels
    return _from_float(levels.to(torch.float32) / 255.0, dtype)


def posterize(x: torch.Tensor, bits) -> torch.Tensor:
    """Keep the top ``bits`` (1-8, per sample) of each 8-bit level (PIL's ``posterize``)."""
    n = len(x)
    if n == 0:
        return x.clone()
    b = np.broadcast_to(np.asarray(bits, np.int64), (n,))
    mask = torch.as_tensor((256 - 2 ** (8 - b)).astype(np.uint8), device=x.device)
    if x.device.type == "cpu" and x.dtype == torch.uint8 and torch.get_num_threads() > 1:
        # one AND per byte is bound by memory, not by the core: a second thread gives the
        # same wall time for twice the CPU (64 x 3 x 224 x 224: 1.03 ms on 1 thread, 1.09 ms
        # and 1.97 CPU-ms on 2), so 8-bit batches take one pass on one thread
        with limit_threads(1):
            return x & mask.view(n, 1, 1, 1)
    if x.device.type == "cpu" and torch.get_num_threads() > 1:
        # float input: the conversions are worth torch's threads, but only as many as cores
        # are free (a parallel region waits at its barrier for a thread whose core another
        # process holds)
        with capped_threads("augment"):
            return _from_levels(_levels(x) & mask.view(n, 1, 1, 1), x.dtype)
    return _from_levels(_levels(x) & mask.view(n, 1, 1, 1), x.dtype)


#: planes of at most this many pixels count as small: batched paths rather than a call each
_SMALL_PLANE = 64 * 64


def _planes(fn, src: np.ndarray, dst: np.ndarray, args, *, heavy: bool = False) -> None:
    """``fn(src[k], dst[k], args[k])`` for the planes ``src`` (K x ..., contiguous), ``fn``
    writing plane ``k`` of the result into ``dst[k]`` (an OpenCV call with ``dst=``: no
    temporary, no copy). The planes are split into one contiguous run per thread, over
    ``torch.get_num_threads()`` threads when each call is ``heavy`` (a filter, a resize, a
    lookup or a histogram of a large plane: tens of microseconds): OpenCV releases the GIL
    during a call, but between calls the threads take turns on it, and for short calls (a
    small plane) on a busy machine that costs more than it saves. Each plane alone, so a
    batch gives the bits of its samples."""
    count = len(src)

    def run(start, stop):
        for k in range(start, stop):
            fn(src[k], dst[k], args[k])
    threads = max(1, min(torch.get_num_threads(), count // 8)) if heavy else 1
    if threads == 1:
        run(0, count)
        return
    bounds = np.linspace(0, count, threads + 1).astype(int)
    # OpenCV and torch one thread each meanwhile: OpenCV would also split each call over
    # its own (spinning) threads, two pools on the same cores
    with limit_threads(1):
        list(_pool(threads).map(run, bounds[:-1], bounds[1:]))


def _pool(threads: int):
    """The process's kept thread pool (``smartset._threads.thread_pool``)."""
    from smartset._threads import thread_pool

    return thread_pool(threads)


def _opencv_ready(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.uint8 and x.shape[-1] > 0


def _lut(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Map the uint8 images ``x`` (N x C x H x W) through per-sample (N x 256) or
    per-channel (N x C x 256) uint8 tables, one lookup per value."""
    n, channels, height, width = x.shape
    rows = n * channels if table.ndim == 3 else n
    if _opencv_ready(x):  # OpenCV's LUT straight into the result: a sample (or plane) a call
        import cv2

        tables = table.reshape(rows, 256).contiguous().numpy()
        out = torch.empty_like(x)
        shape = (rows, -1, width)  # a sample's planes as one tall plane, or each plane
        # a lookup of a large plane is a scalar loop of tens of microseconds: worth a thread
        _planes(lambda plane, dst, lut: cv2.LUT(plane, lut, dst=dst),
                x.contiguous().view(shape).numpy(), out.view(shape).numpy(), tables,
                heavy=height * width > _SMALL_PLANE)
        return out
    flat = table.reshape(rows, 256)
    offsets = torch.arange(rows, device=x.device).view(-1, 1) * 256
    index = x.reshape(rows, -1).to(torch.int64) + offsets
    return flat.reshape(-1).take(index).view_as(x)


def _levels_as_images(n: int, device, dtype=torch.float32) -> torch.Tensor:
    """The 256 levels as ``n`` float images of one row, in [0, 1] as :func:`to_float`
    makes them, so a table computed on them equals the elementwise formula."""
    return (torch.arange(256, dtype=torch.float32, device=device) / 255.0).to(dtype).view(
        1, 1, 1, 256).expand(n, 1, 1, 256)


def solarize(x: torch.Tensor, threshold) -> torch.Tensor:
    """Invert the values at or above ``threshold`` (a fraction of the range, per sample)."""
    n = len(x)
    if n == 0:
        return x.clone()
    thresholds = np.broadcast_to(np.asarray(threshold, np.float64), (n,)).copy()

    def formula(y):
        t = torch.as_tensor(thresholds, device=x.device).to(y.dtype).view(n, 1, 1, 1)
        return torch.where(y >= t, 1.0 - y, y)
    if x.dtype == torch.uint8:
        # level v inverts when float32(v / 255) >= float32(t), as to_float makes v / 255
        levels = np.arange(256, dtype=np.float32) / np.float32(255)
        first = np.searchsorted(levels, thresholds.astype(np.float32), side="left")
        if _opencv_ready(x):
            return _solarize_uint8(x, first)
        v = np.arange(256)
        table = np.where(v[None] >= first[:, None], 255 - v, v).astype(np.uint8)
        return _lut(x, torch.from_numpy(table).to(x.device))
    return _from_float(formula(_to_float(x)), x.dtype)


def _solarize_uint8(x: torch.Tensor, first: np.ndarray) -> torch.Tensor:
    """Solarize 8-bit CPU images, the levels from ``first`` (per sample, 0-256) up
    inverted, without a lookup table: ``255 - v`` is ``v XOR 255``, so the result is
    ``v XOR mask`` with ``mask`` 255 where ``v >= first``, else 0 (the table's values exactly,
    tested against it). A lookup is a scalar load per byte (``cv2.LUT``); the comparison and
    the XOR are SIMD passes. Large images: ``cv2.threshold`` writes the mask into the result
    and ``cv2.bitwise_xor`` folds the image in, a sample at a time (its planes one tall
    plane, in cache between the two passes); small images: the same two steps in NumPy over
    the batch at once."""
    n = len(x)
    src = x.contiguous().view(n, -1).numpy()
    out = torch.empty_like(x)
    dst = out.view(n, -1).numpy()
    if x[0].numel() > _SMALL_PLANE:
        import cv2

        def one(sample, result, level):
            # OpenCV's 8-bit threshold: 255 where v > floor(t); t = first - 1 (-1: every
            # level, 255: none)
            cv2.threshold(sample, level - 1.0, 255, cv2.THRESH_BINARY, dst=result)
            cv2.bitwise_xor(sample, result, dst=result)
        _planes(one, src, dst, first.astype(np.float64).tolist(), heavy=True)
        return out
    # the mask as 0/1 bytes, times 255 (0 for samples where no level inverts), XOR v
    np.greater_equal(src, np.minimum(first, 255).astype(np.uint8)[:, None], out=dst.view(bool))
    np.multiply(dst, np.where(first <= 255, 255, 0).astype(np.uint8)[:, None], out=dst)
    np.bitwise_xor(dst, src, out=dst)
    return out


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each sample to the full range (channels with one value
    unchanged), as PIL's ``autocontrast`` with no cut-off."""
    if len(x) == 0:
        return x.clone()

    def formula(y, low, high):
        span = high - low
        flat = span <= 0
        out = (y - low) / torch.where(flat, torch.ones_like(span), span)
        return torch.where(flat, y, out)
    if x.dtype == torch.uint8:  # the same formula on the 256 levels, then a lookup
        n, channels = x.shape[:2]
        low = x.amin((2, 3), keepdim=True).to(torch.float32) / 255.0
        high = x.amax((2, 3), keepdim=True).to(torch.float32) / 255.0
        levels = _levels_as_images(n, x.device).expand(n, channels, 1, 256)
        return _lut(x, _from_float(formula(levels, low, high), torch.uint8).view(n, channels, 256))
    y = _to_float(x)
    return _from_float(formula(y, y.amin((2, 3), keepdim=True), y.amax((2, 3), keepdim=True)),
                       x.dtype)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per channel of each sample on 8-bit levels (PIL's
    ``equalize`` rule, as torchvision): integer arithmetic only."""
    n, channels, height, width = x.shape
    if n == 0:
        return x.clone()
    if _opencv_ready(x) and height * width > _SMALL_PLANE and height * width < 2**24:
        import cv2  # OpenCV's histogram of each plane (float32 counts: exact below 2**24)

        planes = x.contiguous().view(n * channels, height, width).numpy()
        counts = np.empty((n * channels, 256, 1), np.float32)
        _planes(lambda plane, dst, _: cv2.calcHist([plane], [0], None, [256], [0, 256],
                                                   hist=dst), planes, counts,
                [None] * len(planes), heavy=True)  # a scalar loop over a large plane
        hist = counts.reshape(-1, 256).astype(np.int64)
    elif _opencv_ready(x):  # small 8-bit planes: NumPy, each plane's levels offset once
        rows = n * channels
        index = np.add(x.contiguous().view(rows, -1).numpy(),
                       np.arange(0, 256 * rows, 256, dtype=np.intp)[:, None], dtype=np.intp)
        hist = np.bincount(index.reshape(-1), minlength=256 * rows).reshape(rows, 256)
    else:  # one bincount for the batch, each plane's levels offset into its own 256 bins
        levels = _levels(x).reshape(n * channels, height * width).to(torch.int64)
        offsets = torch.arange(n * channels, device=x.device).view(-1, 1) * 256
        hist = torch.bincount((levels + offsets).reshape(-1), minlength=256 * n * channels)
        hist = hist.view(n * channels, 256).cpu().numpy()
    table = _equalize_tables(hist)
    if _opencv_ready(x) and height * width <= _SMALL_PLANE:  # the offset levels index the tables
        return torch.from_numpy(np.take(table.reshape(-1), index)).view_as(x)
    mapped = _lut(_levels(x), torch.from_numpy(table).to(x.device).view(n, channels, 256))
    return _from_levels(mapped, x.dtype)


def _equalize_tables(hist: np.ndarray) -> np.ndarray:
    """PIL's equalisation tables (``K x 256`` uint8) from histograms (``K x 256`` counts),
    in NumPy: a few small rows, where a torch operation would start a thread team."""
    hist = np.asarray(hist, np.int64)
    k = len(hist)
    # the count of the last level present is left out of the step (PIL)
    last = 255 - np.argmax(hist[:, ::-1] > 0, 1)
    step = (hist.sum(1) - hist[np.arange(k), last]) // 255
    safe = np.maximum(step, 1)
    # floor((cum + step // 2) / step) in float64: exact for counts below 2**53 (a quotient
    # just under a whole number is at least 1 / step below it), and SIMD unlike int64 division;
    # the cumulative sum in int64 (a casting cumsum is several times slower), every other
    # step in place on one array
    lut = np.empty((k, 256), np.float64)
    lut[:, 0] = 0.0
    np.add(np.cumsum(hist[:, :-1], 1), (safe // 2)[:, None], out=lut[:, 1:])
    lut /= safe[:, None]
    np.floor(lut, out=lut)
    np.minimum(lut, 255, out=lut)
    out = lut.astype(np.uint8)
    flat = step == 0  # too few values to spread: unchanged
    if flat.any():
        out[flat] = np.arange(256, dtype=np.uint8)
    return out


def adjust_color(x: torch.Tensor, factor) -> torch.Tensor:
    """PIL's ``ImageEnhance.Color`` (RandAugment's "Color"): the saturation for RGB images;
    images with another channel count have no colour and are returned as they are."""
    if x.shape[1] != 3:
        return x.clone()
    from smartset.augment.functional import adjust_saturation

    return adjust_saturation(x, factor)
