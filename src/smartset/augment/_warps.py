"""The peers' geometric staples: random resized crop (torchvision), grid distortion and
optical distortion (albumentations). Registered the way a plugin would be; every target
(masks, boxes, keypoints) moves with the image, and they fuse with the other geometric
steps of a policy into one resampling.

Grid and optical distortion are smooth non-affine maps written as functions of the output
points (:class:`GridMesh`, :class:`OpticalMesh`) rather than OpenCV remap tables, so a
fused warp evaluates them wherever it needs (every output pixel, or box outlines when
moving boxes) and a batch is one ``grid_sample``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from smartset.augment import _geometry as geo
from smartset.augment._validation import Bound, as_range, as_size
from smartset.augment.transforms import GeometricTransform, _uniform, register_transform

__all__ = ["RandomResizedCrop", "GridDistortion", "OpticalDistortion", "GridMesh",
           "OpticalMesh"]


def _per_row(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, np.float64), device=like.device).to(like.dtype)


class GridMesh:
    """A separable piecewise-linear backward map: the canvas (``size`` = H, W) is cut into
    ``S`` equal cells per axis; the edges of cell ``j`` map to source edges ``kx[:, j]``,
    ``kx[:, j + 1]`` (N x (S + 1), pixel edges), and the same along y with ``ky``."""

    def __init__(self, kx: np.ndarray, ky: np.ndarray, size: tuple[int, int]):
        self.kx, self.ky, self.size = kx, ky, size

    def subset(self, rows) -> GridMesh:
        return GridMesh(self.kx[rows], self.ky[rows], self.size)

    @staticmethod
    def _axis(v: torch.Tensor, knots: np.ndarray, length: int) -> torch.Tensor:
        n, cells = len(knots), knots.shape[1] - 1
        k = _per_row(knots, v)
        cell = length / cells
        u = (v + 0.5).reshape(n, -1)
        seg = torch.floor(u / cell).clamp_(0, cells - 1).to(torch.int64)
        k0, k1 = k.gather(1, seg), k.gather(1, seg + 1)
        out = k0 + (u - seg.to(u.dtype) * cell) * ((k1 - k0) / cell) - 0.5
        return out.reshape(v.shape)

    def backward(self, x: torch.Tensor, y: torch.Tensor):
        return self._axis(x, self.kx, self.size[1]), self._axis(y, self.ky, self.size[0])


class OpticalMesh:
    """Radial lens distortion as OpenCV's ``initUndistortRectifyMap`` with focal lengths
    (W, H), centre ``(cx, cy)`` (pixels, per sample) and ``k1 = k2 = k`` (per sample):
    source = centre + d (1 + k r^2 + k r^4), d the normalised offset from the centre."""

    def __init__(self, k: np.ndarray, cx: np.ndarray, cy: np.ndarray, size: tuple[int, int]):
        self.k, self.cx, self.cy, self.size = k, cx, cy, size

    def subset(self, rows) -> OpticalMesh:
        return OpticalMesh(self.k[rows], self.cx[rows], self.cy[rows], self.size)

    def backward(self, x: torch.Tensor, y: torch.Tensor):
        height, width = self.size
        n = len(self.k)
        k = _per_row(self.k, x).view(n, 1, 1)
        cx = _per_row(self.cx, x).view(n, 1, 1)
        cy = _per_row(self.cy, x).view(n, 1, 1)
        xn = (x - cx) / width
        yn = (y - cy) / height
        # on the pixel grid xn is a row and yn a column: the full-size work is one sum of
        # squares, the factor in place and two fused multiply-adds
        r2 = xn * xn + yn * yn
        factor = torch.addcmul(r2, r2, r2).mul_(k).add_(1.0)  # 1 + k r^2 + k r^4
        return (torch.addcmul(cx, xn * width, factor),
                torch.addcmul(cy, yn * height, factor))

    def opencv_maps(self, i: int):
        """Sample ``i``'s map at every pixel as OpenCV's fixed-point maps, straight from
        ``cv2.initUndistortRectifyMap`` (the same model, computed in float64; used when
        the distortion is the whole warp)."""
        import cv2

        height, width = self.size
        camera = np.array([[width, 0, self.cx[i]], [0, height, self.cy[i]], [0, 0, 1]],
                          np.float64)
        k = float(self.k[i])
        return cv2.initUndistortRectifyMap(camera, np.array([k, k, 0, 0, 0], np.float64), None,
                                           camera, (width, height), cv2.CV_16SC2)


@register_transform(aliases=("random_resized_crop", "rrc"))
class RandomResizedCrop(GeometricTransform):
    """torchvision's ``RandomResizedCrop``: a window of an area share from ``scale`` and an
    aspect ratio (log-uniform) from ``ratio`` (10 tries, then the whole image's centre
    clamped to the ratio), resized to ``size`` (``(H, W)``, one number, or None: the input
    size). Samples not applied are the whole image resized. The window is sampled alone,
    its edges replicated (as torchvision and albumentations crop, then resize); ``uint8``
    batches on the CPU are resized by OpenCV, within a level of the float path. No
    antialiasing when shrinking (resize first with Pillow for strong shrinking)."""

    name = "resized_crop"
    tags = frozenset({"geometric", "crop", "scale"})
    bounds = {"scale": Bound(0, 1, low_open=True), "ratio": Bound(0, 100, low_open=True)}
    defaults = {"top": 0, "left": 0, "height": 0, "width": 0}

    def __init__(self, size=None, *, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), fill="constant",
                 fill_value=0.0, interpolation="bilinear", p=1.0, same_on_batch=False):
        super().__init__(fill=fill, fill_value=fill_value, interpolation=interpolation, p=p,
                         same_on_batch=same_on_batch)
        self.size = size
        self.scale = scale
        self.ratio = ratio
        self._check()
        if size is not None:
            as_size(self.name, "size", size)

    def output_shape(self, shape):
        if self.size is None:
            return tuple(shape)
        return (*shape[:2], *as_size(self.name, "size", self.size))

    def _sample(self, n, shape, rng):
        height, width = shape[2:]
        area = height * width
        low, high = as_range(self.scale)
        r_low, r_high = as_range(self.ratio)
        tries = 10
        target = area * _uniform(rng, low, high, n * tries).reshape(n, tries)
        aspect = np.exp(_uniform(rng, math.log(r_low), math.log(r_high), n * tries)
                        ).reshape(n, tries)
        w = np.round(np.sqrt(target * aspect)).astype(np.int64)
        h = np.round(np.sqrt(target / aspect)).astype(np.int64)
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = np.argmax(ok, 1)
        found = ok[np.arange(n), first]
        h, w = h[np.arange(n), first], w[np.arange(n), first]
        # the fallback: the centre, as wide as the ratio range allows
        in_ratio = width / height
        if in_ratio < r_low:
            fw, fh = width, int(round(width / r_low))
        elif in_ratio > r_high:
            fw, fh = int(round(height * r_high)), height
        else:
            fw, fh = width, height
        h, w = np.where(found, h, fh), np.where(found, w, fw)
        u = rng.random((n, 2))
        top = np.where(found, np.floor(u[:, 0] * (height - h + 1)), (height - h) // 2)
        left = np.where(found, np.floor(u[:, 1] * (width - w + 1)), (width - w) // 2)
        return {"top": top.astype(np.int64), "left": left.astype(np.int64),
                "height": h.astype(np.int64), "width": w.astype(np.int64)}

    def geo_step(self, params, size):
        out = self.output_shape((1, 1, *size))[2:]
        applied = params.applied
        top = np.where(applied, params["top"], 0).astype(np.float64)
        left = np.where(applied, params["left"], 0).astype(np.float64)
        h = np.where(applied, params["height"], size[0]).astype(np.float64)
        w = np.where(applied, params["width"], size[1]).astype(np.float64)
        sx, sy = w / out[1], h / out[0]
        backward = geo.identity(params.n)
        backward[:, 0, 0], backward[:, 0, 2] = sx, left + 0.5 * sx - 0.5
        backward[:, 1, 1], backward[:, 1, 2] = sy, top + 0.5 * sy - 0.5
        return geo.GeoStep("matrix", tuple(size), out, applied.copy(), backward=backward)


@register_transform
class GridDistortion(GeometricTransform):
    """albumentations' ``GridDistortion``: the canvas cut into ``num_steps`` cells per axis,
    each cell's width and height scaled by ``1 + d``, ``d`` drawn per cell from
    ``distort_limit`` (a number ``l`` means ``(-l, l)``); ``normalized`` rescales the cells
    so the image still spans the canvas."""

    name = "grid_distortion"
    tags = frozenset({"geometric", "distortion"})
    bounds = {"num_steps": Bound(1, 64, integer=True),
              "distort_limit": Bound(-1, 1, low_open=True, high_open=True)}
    defaults = {"dx": [0.0] * 5, "dy": [0.0] * 5}

    def __init__(self, num_steps=5, *, distort_limit=0.3, normalized=True, fill="constant",
                 fill_value=0.0, interpolation="bilinear", p=1.0, same_on_batch=False):
        super().__init__(fill=fill, fill_value=fill_value, interpolation=interpolation, p=p,
                         same_on_batch=same_on_batch)
        self.num_steps = num_steps
        self.distort_limit = distort_limit
        self.normalized = normalized
        self._check()

    def params_from_records(self, records):
        from smartset.augment._params import Params

        defaults = {"dx": [0.0] * int(self.num_steps), "dy": [0.0] * int(self.num_steps)}
        return Params.from_records(records, defaults)

    def _sample(self, n, shape, rng):
        low, high = as_range(self.distort_limit, symmetric=True)
        s = int(self.num_steps)
        return {"dx": _uniform(rng, low, high, n * s).reshape(n, s),
                "dy": _uniform(rng, low, high, n * s).reshape(n, s)}

    def _knots(self, d: np.ndarray, length: int) -> np.ndarray:
        cells = length / d.shape[1] * (1.0 + d)
        knots = np.concatenate([np.zeros((len(d), 1)), np.cumsum(cells, 1)], 1)
        if self.normalized:
            knots *= length / knots[:, -1:]
        return knots

    def geo_step(self, params, size):
        mesh = GridMesh(self._knots(params["dx"], size[1]), self._knots(params["dy"], size[0]),
                        tuple(size))
        return geo.GeoStep("mesh", tuple(size), tuple(size), params.applied.copy(), mesh=mesh)


@register_transform(aliases=("lens_distortion",))
class OpticalDistortion(GeometricTransform):
    """albumentations' ``OpticalDistortion``: radial lens distortion ``k`` from
    ``distort_limit`` (a number ``l`` means ``(-l, l)``; positive pulls the content
    inwards, barrel-like) about a centre shifted by up to ``shift_limit`` of the size."""

    name = "optical_distortion"
    tags = frozenset({"geometric", "distortion"})
    bounds = {"distort_limit": Bound(-2, 2), "shift_limit": Bound(0, 0.5)}
    defaults = {"k": 0.0, "dx": 0.0, "dy": 0.0}

    def __init__(self, distort_limit=0.05, *, shift_limit=0.05, fill="constant",
                 fill_value=0.0, interpolation="bilinear", p=1.0, same_on_batch=False):
        super().__init__(fill=fill, fill_value=fill_value, interpolation=interpolation, p=p,
                         same_on_batch=same_on_batch)
        self.distort_limit = distort_limit
        self.shift_limit = shift_limit
        self._check()

    def _sample(self, n, shape, rng):
        height, width = shape[2:]
        shift_low, shift_high = as_range(self.shift_limit, symmetric=True)
        return {"k": _uniform(rng, *as_range(self.distort_limit, symmetric=True), n),
                "dx": np.round(_uniform(rng, shift_low, shift_high, n) * width),
                "dy": np.round(_uniform(rng, shift_low, shift_high, n) * height)}

    def geo_step(self, params, size):
        height, width = size
        mesh = OpticalMesh(np.where(params.applied, params["k"], 0.0),
                           (width - 1) / 2 + params["dx"], (height - 1) / 2 + params["dy"],
                           tuple(size))
        return geo.GeoStep("mesh", tuple(size), tuple(size), params.applied.copy(), mesh=mesh)

