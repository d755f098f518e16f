"""Pure kernels over image batches ``N x C x H x W`` (``uint8`` or float; dtype and device
kept, input never changed in place).

Per-sample parameters are numbers (the same for every sample) or sequences/tensors of
length ``N``. Float images are taken to lie in ``[0, 1]`` and photometric results are
clamped to it (integer images to their dtype's range, rounded half to even); amounts such
as a noise ``std`` or a brightness shift are fractions of that range (1.0 or 255).

Geometric kernels (:func:`rotate`, :func:`translate`, :func:`affine`, :func:`elastic`,
:func:`center`, :func:`hflip`, :func:`vflip`, :func:`warp`) take ``fill`` (``constant``,
``nearest``, ``reflect``, ``wrap``, Keras semantics), ``fill_value`` and ``interpolation``.
To fuse several geometric steps into one resampling, use :func:`warp` with a list of
transforms, or a policy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from smartset._torch import require_torch

torch = require_torch("smartset.augment")
F = torch.nn.functional

from smartset.augment import _geometry as geo
from smartset.augment._noise import stream_normal, stream_uniform
from smartset.augment._degrade import (adjust_color, autocontrast, downscale,  # noqa: E402
                                       equalize, jpeg, motion_blur, posterize, solarize)

__all__ = [
    "value_range", "to_float", "from_float", "grayscale", "rgb_to_hsv", "hsv_to_rgb",
    "adjust_brightness", "adjust_gamma", "adjust_contrast", "adjust_saturation", "adjust_hue",
    "channel_shift", "clahe", "gaussian_noise", "salt_and_pepper", "gaussian_blur",
    "box_blur", "median_blur", "smooth", "sharpen", "erase", "rescale",
    "samplewise_center", "samplewise_std_normalize",
    "warp", "rotate", "translate", "affine", "elastic", "center", "hflip", "vflip",
    "motion_blur", "downscale", "jpeg", "posterize", "solarize", "autocontrast", "equalize",
    "adjust_color",
]


# -- dtype handling ----------------------------------------------------------------------
def value_range(dtype: torch.dtype) -> float:
    """The top of an image dtype's value range: 1.0 for floats, the largest integer else."""
    if dtype.is_floating_point:
        return 1.0
    if dtype == torch.bool:
        return 1.0
    return float(torch.iinfo(dtype).max)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """Working copy in ``[0, 1]``: float32 (float64 stays float64)."""
    if x.dtype == torch.float64:
        return x.clone()
    if x.is_floating_point():
        return x.to(torch.float32, copy=True)
    return x.to(torch.float32) / value_range(x.dtype)


def from_float(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Back from ``[0, 1]`` to ``dtype``: clamped; integers rounded half to even."""
    y = y.clamp(0.0, 1.0)
    if dtype.is_floating_point:
        return y.to(dtype)
    top = value_range(dtype)
    return (y * top).round_().to(dtype)


def _per_sample(value, n: int, like: torch.Tensor) -> torch.Tensor:
    """A per-sample parameter as an ``N x 1 x 1 x 1`` tensor of ``like``'s dtype/device."""
    t = torch.as_tensor(np.asarray(value, dtype=np.float64), device=like.device).to(like.dtype)
    if t.ndim == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"a per-sample parameter needs {n} values, got shape {tuple(t.shape)}")
    return t.view(n, 1, 1, 1)


def grayscale(y: torch.Tensor) -> torch.Tensor:
    """Luma (ITU-R 601, as Pillow's ``L``) of float RGB images, ``N x 1 x H x W``; other
    channel counts: the channel mean."""
    if y.shape[1] == 3:
        return (0.299 * y[:, 0:1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:3])
    return y.mean(1, keepdim=True)


# -- intensity ---------------------------------------------------------------------------
def adjust_brightness(x: torch.Tensor, factor) -> torch.Tensor:
    """Multiply by ``factor`` per sample (Keras ``brightness_range``, Pillow's
    ``ImageEnhance.Brightness``)."""
    y = to_float(x)
    return from_float(y * _per_sample(factor, len(x), y), x.dtype)


def adjust_gamma(x: torch.Tensor, gamma, gain=1.0) -> torch.Tensor:
    """``gain * x ** gamma`` on ``[0, 1]`` values: ``gamma > 1`` darkens, ``< 1`` brightens."""
    y = to_float(x)
    return from_float(_per_sample(gain, len(x), y) * y.pow(_per_sample(gamma, len(x), y)),
                      x.dtype)


def adjust_contrast(x: torch.Tensor, factor) -> torch.Tensor:
    """Blend with each image's mean grey level: ``factor`` 0 gives flat grey, 1 the image."""
    y = to_float(x)
    mean = grayscale(y).mean((1, 2, 3), keepdim=True)
    f = _per_sample(factor, len(x), y)
    return from_float(f * y + (1 - f) * mean, x.dtype)


def adjust_saturation(x: torch.Tensor, factor) -> torch.Tensor:
    """Blend RGB images with their grey version: 0 grey, 1 unchanged, 2 twice as vivid."""
    y = to_float(x)
    f = _per_sample(factor, len(x), y)
    return from_float(f * y + (1 - f) * grayscale(y), x.dtype)


def rgb_to_hsv(y: torch.Tensor) -> torch.Tensor:
    """Float RGB in [0, 1] to HSV (hue in turns, [0, 1))."""
    r, g, b = y[:, 0], y[:, 1], y[:, 2]
    maxc, _ = y.max(1)
    minc, _ = y.min(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)),
                    torch.zeros_like(maxc))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, torch.remainder(h / 6.0, 1.0), torch.zeros_like(h))
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = torch.remainder(i, 6).to(torch.int64)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros_like(hsv)
    for k, (rr, gg, bb) in enumerate(choices):
        m = (i == k).unsqueeze(1)
        out = torch.where(m, torch.stack([rr, gg, bb], 1), out)
    return out


def adjust_hue(x: torch.Tensor, shift) -> torch.Tensor:
    """Turn the hue of RGB images by ``shift`` (in turns, [-0.5, 0.5]) per sample."""
    y = to_float(x)
    hsv = rgb_to_hsv(y)
    s = _per_sample(shift, len(x), y).view(-1, 1, 1)
    hsv = torch.stack([torch.remainder(hsv[:, 0] + s, 1.0), hsv[:, 1], hsv[:, 2]], 1)
    return from_float(hsv_to_rgb(hsv), x.dtype)


def channel_shift(x: torch.Tensor, intensity) -> torch.Tensor:
    """Keras ``channel_shift_range``: add ``intensity`` (a fraction of the value range, per
    sample) to every channel, clipped to the image's own minimum and maximum."""
    y = to_float(x)
    low = y.amin((1, 2, 3), keepdim=True)
    high = y.amax((1, 2, 3), keepdim=True)
    shifted = torch.minimum(torch.maximum(y + _per_sample(intensity, len(x), y), low), high)
    return from_float(shifted, x.dtype)


def clahe(x: torch.Tensor, clip_limit=2.0, tile_grid: Sequence[int] = (8, 8)) -> torch.Tensor:
    """Contrast-limited adaptive histogram equalisation, as OpenCV's ``createCLAHE``
    (``clip_limit`` per sample, ``tile_grid`` = (rows, columns) of tiles). Grey images are
    equalised directly; colour images through their value channel (max of R, G, B), the
    colours scaled along, so hues are kept."""
    n, channels, height, width = x.shape
    top = value_range(x.dtype)
    y = x.to(torch.float32) / top if not x.is_floating_point() else x.to(torch.float32)
    value = y[:, 0] if channels == 1 else y.amax(1)
    levels = (value * 255).round().clamp(0, 255).to(torch.int64)
    mapped = _clahe_levels(levels, torch.as_tensor(np.broadcast_to(
        np.asarray(clip_limit, np.float64), (n,)).copy()), tuple(int(t) for t in tile_grid))
    if channels == 1:
        out = mapped.unsqueeze(1) / 255.0
    else:
        ratio = torch.where(value > 0, (mapped / 255.0) / value.clamp_min(1e-12),
                            torch.ones_like(value))
        out = (y * ratio.unsqueeze(1)).clamp(0, 1)
        out = torch.where((value > 0).unsqueeze(1), out, (mapped / 255.0).unsqueeze(1).expand_as(y))
    if x.is_floating_point():
        return out.to(x.dtype)
    return (out * top).round_().clamp_(0, top).to(x.dtype)


def _clahe_levels(levels: torch.Tensor, clip_limit: torch.Tensor, grid) -> torch.Tensor:
    """CLAHE of ``N x H x W`` int64 levels in [0, 255] -> float32 levels (OpenCV's rules)."""
    n, height, width = levels.shape
    ty, tx = grid
    pad_y = pad_x = 0
    if height % ty or width % tx:  # OpenCV pads both sides (BORDER_REFLECT_101), even a
        pad_y, pad_x = ty - height % ty, tx - width % tx  # side that fits (one more tile)
    src = levels
    if pad_y or pad_x:
        mode = "reflect" if pad_y < height and pad_x < width else "replicate"
        src = F.pad(levels.unsqueeze(1).to(torch.float32), (0, pad_x, 0, pad_y),
                    mode=mode)[:, 0].to(torch.int64)
    tile_h, tile_w = src.shape[1] // ty, src.shape[2] // tx
    area = tile_h * tile_w
    iy = torch.arange(ty, device=levels.device).repeat_interleave(tile_h).view(1, -1, 1)
    ix = torch.arange(tx, device=levels.device).repeat_interleave(tile_w).view(1, 1, -1)
    sample = torch.arange(n, device=levels.device).view(-1, 1, 1)
    bins = ((sample * ty + iy) * tx + ix) * 256 + src
    hist = torch.bincount(bins.reshape(-1), minlength=n * ty * tx * 256).view(n, ty * tx, 256)
    limit = torch.clamp((clip_limit * area / 256).to(torch.int64), min=1).to(levels.device)
    active = (clip_limit > 0).to(levels.device).view(n, 1, 1)
    lim = limit.view(n, 1, 1)
    excess = (hist - lim).clamp_min(0).sum(-1, keepdim=True)
    clipped = torch.minimum(hist, lim)
    batch = excess // 256
    residual = excess - batch * 256
    step = torch.clamp(256 // residual.clamp_min(1), min=1)
    k = torch.arange(256, device=levels.device).view(1, 1, 256)
    extra = ((k % step == 0) & (k // step < residual)).to(hist.dtype)
    hist = torch.where(active, clipped + batch + extra, hist)
    lut = (hist.cumsum(-1).to(torch.float32) * np.float32(255.0 / area)).round().clamp(0, 255)
    lut = lut.view(n, ty, tx, 256)
    # bilinear blend of the four nearest tiles' mappings, over the unpadded image
    txf = torch.arange(width, device=levels.device, dtype=torch.float32) * np.float32(1.0 / tile_w) - 0.5
    tyf = torch.arange(height, device=levels.device, dtype=torch.float32) * np.float32(1.0 / tile_h) - 0.5
    tx1 = torch.floor(txf).to(torch.int64)
    ty1 = torch.floor(tyf).to(torch.int64)
    xa = (txf - tx1).view(1, 1, -1)
    ya = (tyf - ty1).view(1, -1, 1)
    tx2, ty2 = (tx1 + 1).clamp(max=tx - 1), (ty1 + 1).clamp(max=ty - 1)
    tx1, ty1 = tx1.clamp(min=0), ty1.clamp(min=0)
    flat = lut.view(n, -1)

    def look(ry, rx):
        index = ((ry.view(1, -1, 1) * tx + rx.view(1, 1, -1)) * 256 + levels)
        return flat.gather(1, index.view(n, -1)).view(n, height, width)
    top = look(ty1, tx1) * (1 - xa) + look(ty1, tx2) * xa
    bottom = look(ty2, tx1) * (1 - xa) + look(ty2, tx2) * xa
    return (top * (1 - ya) + bottom * ya).round().clamp(0, 255)


# -- noise -------------------------------------------------------------------------------
def gaussian_noise(x: torch.Tensor, std, *, streams, indices) -> torch.Tensor:
    """Add Gaussian noise of ``std`` (fraction of the value range, per sample), drawn from
    the replayable noise ``streams``/``indices`` (see :mod:`smartset.augment._noise`)."""
    y = to_float(x)
    noise = stream_normal(streams, indices, y[0].numel(), y.device).view_as(y).to(y.dtype)
    return from_float(y + noise * _per_sample(std, len(x), y), x.dtype)


def salt_and_pepper(x: torch.Tensor, amount, *, salt_ratio=0.5, streams, indices) -> torch.Tensor:
    """Set a fraction ``amount`` of pixels (all channels) to the maximum (salt, share
    ``salt_ratio``) or to 0 (pepper)."""
    n, _, height, width = x.shape
    u = torch.from_numpy(stream_uniform(streams, indices, height * width)).to(x.device)
    u = u.view(n, 1, height, width).to(torch.float64)
    a = _per_sample(amount, n, u)
    s = _per_sample(salt_ratio, n, u)
    salt = u >= 1 - a * s
    pepper = u < a * (1 - s)
    out = x.clone()
    out = out.masked_fill(salt.expand_as(out), value_range(x.dtype))
    return out.masked_fill(pepper.expand_as(out), 0)


# -- filters -----------------------------------------------------------------------------
def _pad(y: torch.Tensor, r_y: int, r_x: int, mode: str = "reflect") -> torch.Tensor:
    if mode == "reflect" and (r_y >= y.shape[2] or r_x >= y.shape[3]):
        mode = "replicate"
    return F.pad(y, (r_x, r_x, r_y, r_y), mode=mode)


def _separable(y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Filter with per-sample 1-D kernels ``weights`` (N x k) along y, then x, reflecting
    at the border (OpenCV's BORDER_REFLECT_101); a fixed order of sums per sample."""
    n, _, height, width = y.shape
    k = weights.shape[1]
    r = k // 2
    w = weights.to(y.dtype).view(n, 1, 1, 1, k)
    p = _pad(y, r, 0)
    acc = p[:, :, 0:height] * w[..., 0]
    for t in range(1, k):
        acc = acc + p[:, :, t:t + height] * w[..., t]
    p = _pad(acc, 0, r)
    out = p[:, :, :, 0:width] * w[..., 0]
    for t in range(1, k):
        out = out + p[:, :, :, t:t + width] * w[..., t]
    return out


def _by_value(values: np.ndarray, fn, y: torch.Tensor) -> torch.Tensor:
    """Run ``fn(subset, value)`` for each distinct value (kernel size), reassembled."""
    out = torch.empty_like(y)
    for v in np.unique(values):
        rows = np.flatnonzero(values == v)
        index = torch.as_tensor(rows, device=y.device)
        out[index] = fn(y.index_select(0, index), v, rows)
    return out


def gaussian_blur(x: torch.Tensor, sigma) -> torch.Tensor:
    """Gaussian blur with ``sigma`` pixels per sample (kernel radius ``ceil(3 sigma)``)."""
    n = len(x)
    if n == 0:
        return x.clone()
    sigmas = np.broadcast_to(np.asarray(sigma, np.float64), (n,))
    radii = np.ceil(3 * sigmas).astype(int)
    y = to_float(x)

    def run(part, radius, rows):
        t = torch.arange(-radius, radius + 1, dtype=torch.float64)
        s = torch.as_tensor(sigmas[rows]).view(-1, 1).clamp_min(1e-6)
        k = torch.exp(-0.5 * (t.view(1, -1) / s) ** 2)
        return _separable(part, (k / k.sum(1, keepdim=True)).to(part.device))
    return from_float(_by_value(radii, run, y), x.dtype)


def box_blur(x: torch.Tensor, size) -> torch.Tensor:
    """Mean over a ``size x size`` window (odd ``size`` per sample), reflecting borders."""
    n = len(x)
    if n == 0:
        return x.clone()
    sizes = np.broadcast_to(np.asarray(size, np.int64), (n,))
    y = to_float(x)

    def run(part, k, rows):
        return _separable(part, torch.full((len(rows), int(k)), 1.0 / int(k), device=part.device))
    return from_float(_by_value(sizes, run, y), x.dtype)


def median_blur(x: torch.Tensor, size) -> torch.Tensor:
    """Median over a ``size x size`` window (odd ``size`` per sample), border replicated as
    OpenCV's ``medianBlur``."""
    n = len(x)
    if n == 0:
        return x.clone()
    sizes = np.broadcast_to(np.asarray(size, np.int64), (n,))

    def run(part, k, rows):
        k = int(k)
        r = k // 2
        work = part if part.dtype in (torch.uint8, torch.float32, torch.float64) else part.float()
        p = F.pad(work.to(torch.float32) if work.dtype == torch.uint8 else work, (r, r, r, r),
                  mode="replicate")
        out = torch.empty(part.shape, dtype=p.dtype, device=part.device)
        step = max(1, (1 << 22) // max(1, part[0].numel() * k * k))
        for i in range(0, len(p), step):
            windows = p[i:i + step].unfold(2, k, 1).unfold(3, k, 1)
            out[i:i + step] = windows.reshape(*windows.shape[:4], k * k).median(-1).values
        return out.to(part.dtype)
    return _by_value(sizes, run, x)


_SMOOTH_KERNELS = {  # Pillow's ImageFilter.SMOOTH and SMOOTH_MORE
    "smooth": np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], float) / 13,
    "smooth_more": np.array([[1, 1, 1, 1, 1], [1, 5, 5, 5, 1], [1, 5, 44, 5, 1],
                             [1, 5, 5, 5, 1], [1, 1, 1, 1, 1]], float) / 100,
}


def _filter2d(y: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    k = kernel.shape[0]
    r = k // 2
    height, width = y.shape[2:]
    p = _pad(y, r, r)
    out = None
    for i in range(k):
        for j in range(k):
            if kernel[i, j] == 0:
                continue
            term = p[:, :, i:i + height, j:j + width] * float(kernel[i, j])
            out = term if out is None else out + term
    return out


def smooth(x: torch.Tensor, kind: str = "smooth") -> torch.Tensor:
    """Pillow's smoothing filters: ``smooth`` (3 x 3) or ``smooth_more`` (5 x 5)."""
    if len(x) == 0:
        return x.clone()
    return from_float(_filter2d(to_float(x), _SMOOTH_KERNELS[kind]), x.dtype)


def sharpen(x: torch.Tensor, alpha, lightness=1.0) -> torch.Tensor:
    """Blend with a sharpened image (albumentations' ``Sharpen``): kernel
    ``(1 - alpha) * identity + alpha * [[-1,-1,-1],[-1,8+lightness,-1],[-1,-1,-1]]``."""
    if len(x) == 0:
        return x.clone()
    y = to_float(x)
    ring = np.ones((3, 3))
    ring[1, 1] = 0
    neighbours = _filter2d(y, ring)
    a = _per_sample(alpha, len(x), y)
    centre = (1 - a) + a * (8 + _per_sample(lightness, len(x), y))
    return from_float(centre * y - a * neighbours, x.dtype)


def erase(x: torch.Tensor, boxes, value=0.0, *, streams=None, indices=None) -> torch.Tensor:
    """Erase rectangles: ``boxes`` is ``N x K x 4`` (top, left, height, width in pixels;
    empty ones have size 0), filled with ``value`` (raw pixel units) or, with
    ``value="random"``, uniform noise from ``streams``/``indices``."""
    n, channels, height, width = x.shape
    b = torch.as_tensor(np.asarray(boxes, np.float64).reshape(n, -1, 4), device=x.device)
    ys = torch.arange(height, device=x.device).view(1, 1, height, 1)
    xs = torch.arange(width, device=x.device).view(1, 1, 1, width)
    top, left = b[..., 0, None, None], b[..., 1, None, None]
    bottom, right = top + b[..., 2, None, None], left + b[..., 3, None, None]
    mask = ((ys >= top) & (ys < bottom) & (xs >= left) & (xs < right)).any(1, keepdim=True)
    if isinstance(value, str):
        u = torch.from_numpy(stream_uniform(streams, indices, channels * height * width))
        fill = u.to(x.device).view_as(x) if len(x) else x.float()
        fill = from_float(fill, x.dtype)
    else:
        fill = torch.full_like(x, value) if not x.dtype.is_floating_point else \
            torch.full_like(x, float(value))
    return torch.where(mask, fill, x)


# -- normalisation (Keras ImageDataGenerator) ---------------------------------------------
def rescale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x * factor`` as float32 (float64 kept), e.g. ``1 / 255``."""
    y = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    return y * factor


def samplewise_center(x: torch.Tensor) -> torch.Tensor:
    """Subtract each sample's mean (over channels and pixels), as Keras."""
    y = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    return y - y.mean((1, 2, 3), keepdim=True) if len(y) else y.clone()


def samplewise_std_normalize(x: torch.Tensor, epsilon: float = 1e-6) -> torch.Tensor:
    """Divide each sample by its standard deviation plus ``epsilon``, as Keras."""
    y = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    if not len(y):
        return y.clone()
    return y / (y.std((1, 2, 3), keepdim=True, unbiased=False) + epsilon)


# -- geometry ----------------------------------------------------------------------------
def warp(x, transforms, *, seed=None):
    """Apply geometric ``transforms`` (a list) as one fused resampling, parameters drawn
    with ``seed``; returns ``(output, params)``."""
    from smartset.augment.policy import Compose, augment

    result = augment(x, Compose(list(transforms)), seed=seed)
    return result.output, result.params


def _matrix_warp(x: torch.Tensor, forward: np.ndarray, *, fill, fill_value, interpolation):
    n = len(x)
    step = geo.GeoStep("matrix", tuple(x.shape[2:]), tuple(x.shape[2:]), np.ones(n, bool),
                       backward=geo.invert(forward))
    if n == 0:
        return x.clone()
    return geo.FusedWarp([step]).images(x, fill=fill, fill_value=fill_value,
                                        interpolation=interpolation)


def _vector(value, n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, np.float64), (n,)).copy()


def rotate(x, angle, *, center=None, fill="constant", fill_value=0.0, interpolation="bilinear"):
    """Rotate by ``angle`` degrees per sample (counter-clockwise as displayed, OpenCV's
    convention) about ``center`` (x, y; default the image centre)."""
    height, width = x.shape[2:]
    c = center if center is not None else ((width - 1) / 2, (height - 1) / 2)
    return _matrix_warp(x, geo.rotation_matrix(_vector(angle, len(x)), tuple(c)), fill=fill,
                        fill_value=fill_value, interpolation=interpolation)


def translate(x, tx, ty, *, fill="constant", fill_value=0.0, interpolation="bilinear"):
    """Shift by ``(tx, ty)`` pixels per sample (whole pixels are an exact gather)."""
    return _matrix_warp(x, geo.translation_matrix(_vector(tx, len(x)), _vector(ty, len(x))),
                        fill=fill, fill_value=fill_value, interpolation=interpolation)


def affine(x, matrix, *, fill="constant", fill_value=0.0, interpolation="bilinear"):
    """Apply forward ``2 x 3`` or ``3 x 3`` matrices (one, or one per sample) mapping input
    pixel (x, y) to output pixel, as OpenCV's ``warpAffine`` with a forward matrix."""
    m = np.asarray(matrix, np.float64)
    if m.ndim == 2:
        m = np.broadcast_to(m, (len(x), *m.shape))
    if m.shape[1] == 2:
        m = np.concatenate([m, np.broadcast_to([[0.0, 0.0, 1.0]], (len(m), 1, 3))], 1)
    return _matrix_warp(x, m.copy(), fill=fill, fill_value=fill_value,
                        interpolation=interpolation)


def hflip(x):
    """Mirror left-right (exact)."""
    return x.flip(-1)


def vflip(x):
    """Mirror top-bottom (exact)."""
    return x.flip(-2)


def elastic(x, alpha=34.0, sigma=4.0, *, seed=None, fill="constant", fill_value=0.0,
            interpolation="bilinear"):
    """Elastic distortion (Simard et al. 2003) with ``alpha`` (per sample) and ``sigma``;
    returns ``(output, params)`` so the fields can be replayed."""
    from smartset.augment.transforms import Elastic

    t = Elastic(alpha=alpha if np.ndim(alpha) == 0 else 1.0, sigma=sigma, fill=fill,
                fill_value=fill_value, interpolation=interpolation)
    params = t.make_params(x.shape, seed)
    if np.ndim(alpha):
        params.columns["alpha"] = _vector(alpha, len(x))
    return t.apply(x, params), params


def center(x, *, fill="constant", fill_value=0.0, interpolation="bilinear"):
    """Shift each image so its centre of mass sits at the image centre (the MNIST
    preprocessing); deterministic."""
    if len(x) == 0:
        return x.clone()
    height, width = x.shape[2:]
    shift = np.array([(width - 1) / 2, (height - 1) / 2]) - geo.center_of_mass(x)
    return translate(x, shift[:, 0], shift[:, 1], fill=fill, fill_value=fill_value,
                     interpolation=interpolation)

