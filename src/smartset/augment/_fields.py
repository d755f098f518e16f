"""Elastic displacement fields (Simard et al. 2003) that are fast, exact and replayable.

Simard's field is uniform noise in [-1, 1] per pixel, smoothed with a Gaussian of ``sigma``
pixels and scaled by ``alpha``. Smoothing full-resolution noise is the cost that dominates
elastic distortion on large images; here the noise lies on a coarse lattice of spacing about
``sigma`` (the field has no detail finer than that), is smoothed there with integer kernels
in float32 (exact, so any batch size gives the same bits), and is refined to spacing
``sigma / 2`` with Catmull-Rom midpoints. The kernel is narrowed and the amplitude raised a
little to make up for the blur and variance loss of interpolation, so the displacement
statistics (std, strain, correlation at sigma and 2 sigma) stay within a few per cent of the
full-resolution field; ``benchmarks/augment.py`` prints that check.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from smartset.augment._noise import stream_odd11

__all__ = ["FieldLayout", "field_layout", "field_coarse", "refine_field", "field_lattice"]


def _gaussian(sigma: float, radius: int) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


@dataclass(frozen=True)
class FieldLayout:
    """How an elastic field is drawn on a canvas of ``H x W`` pixels.

    Noise lies on a coarse lattice of spacing about ``sigma`` (``h x w`` nodes from the
    first pixel to the last, plus margins), is smoothed there with integer kernels
    (exact), and refined twice as dense with Catmull-Rom midpoints, giving the field at
    spacing ``sigma / 2`` (``hf x wf`` nodes) where it is read bilinearly. The kernel is a
    little narrower and the amplitude a little higher than the plain discretisation, to make
    up for the blur and the variance loss of interpolation; ``benchmarks/augment.py`` checks
    the resulting displacement statistics against Simard's full-resolution field (uniform
    noise in [-1, 1] per pixel, Gaussian-smoothed with ``sigma``, times ``alpha``)."""

    h: int
    w: int
    refine_y: bool
    refine_x: bool
    pad_y: int  # noise nodes beyond the (margin) lattice, for the smoothing kernel
    pad_x: int
    smooth_y: torch.Tensor  # (h + 2 margin, h + 2 margin + 2 pad_y) float32 integers
    smooth_xt: torch.Tensor  # (w + 2 margin + 2 pad_x, w + 2 margin) float32 integers
    amplitude: float  # per unit alpha, on the smoothed integers

    @property
    def hf(self) -> int:
        return 2 * self.h - 1 if self.refine_y else self.h

    @property
    def wf(self) -> int:
        return 2 * self.w - 1 if self.refine_x else self.w

    @property
    def noise_shape(self) -> tuple[int, int]:
        return self.smooth_y.shape[1], self.smooth_xt.shape[0]


# Integer arithmetic in float32, exact whatever order a matrix library sums in: noise is odd
# integers in [-2047, 2047] (11 bits), kernels integers summing to 2^12, and the first
# pass is rounded back to 11 bits, so every partial sum stays below 2^24.
_KERNEL_BITS = 12


def _lattice_axis(size: int, spacing: float) -> tuple[int, float]:
    if size <= 1:
        return 1, 1.0
    nodes = math.ceil((size - 1) / spacing - 1e-9) + 1
    return nodes, (size - 1) / (nodes - 1)


def _smoothing_matrix(nodes: int, kernel: np.ndarray) -> np.ndarray:
    m = np.zeros((nodes, nodes + len(kernel) - 1))
    for i in range(nodes):
        m[i, i:i + len(kernel)] = kernel
    return m


@functools.lru_cache(maxsize=64)
def field_layout(height: int, width: int, sigma: float) -> FieldLayout:
    h, sy = _lattice_axis(height, max(1.0, sigma))
    w, sx = _lattice_axis(width, max(1.0, sigma))
    refine_y, refine_x = h > 1 and sy >= 2, w > 1 and sx >= 2
    fy, fx = (sy / 2 if refine_y else sy), (sx / 2 if refine_x else sx)

    def narrowed(fine):  # bilinear reads and upsampling at the fine spacing blur a little
        extra = _BLUR * fine ** 2 if fine > 1 else 0.0
        return math.sqrt(max(sigma ** 2 - extra, 0.25 * sigma ** 2))

    def gain(fine):  # ... and lower the variance between nodes by 2/3 + rho/3 per axis
        return 1.0 if fine <= 1 else 1 / math.sqrt(2 / 3 + math.exp(-(fine / sigma) ** 2 / 4) / 3)
    ky = _gaussian(narrowed(fy) / sy, math.ceil(3 * narrowed(fy) / sy))
    kx = _gaussian(narrowed(fx) / sx, math.ceil(3 * narrowed(fx) / sx))
    reference = (_gaussian(sigma, max(1, math.ceil(4 * sigma))) ** 2).sum()
    iy, ix = np.round(ky * 2**_KERNEL_BITS), np.round(kx * 2**_KERNEL_BITS)
    # the variance of the full-resolution field, computed with the integer kernels used
    amplitude = gain(fy) * gain(fx) * 2 * reference / math.sqrt((iy ** 2).sum() * (ix ** 2).sum())
    smooth_y = _smoothing_matrix(h + 2 * refine_y, iy)
    smooth_xt = _smoothing_matrix(w + 2 * refine_x, ix).T
    return FieldLayout(h, w, refine_y, refine_x, len(iy) // 2, len(ix) // 2,
                       torch.from_numpy(smooth_y.astype(np.float32)),
                       torch.from_numpy(np.ascontiguousarray(smooth_xt).astype(np.float32)),
                       amplitude)


_BLUR = 0.2  # tuned: displacement statistics within a few % of the full-resolution field


def _refine(v: torch.Tensor, dim: int) -> torch.Tensor:
    """Double the lattice density along ``dim`` (whose first and last nodes are margins):
    the nodes kept, Catmull-Rom midpoints between them."""
    n = v.shape[dim] - 2
    a, b = v.narrow(dim, 0, n - 1), v.narrow(dim, 1, n - 1)
    c, d = v.narrow(dim, 2, n - 1), v.narrow(dim, 3, n - 1)
    mids = (b + c) * 0.5625 - (a + d) * 0.0625
    shape = list(v.shape)
    shape[dim] = 2 * n - 1
    out = v.new_empty(shape)
    index = [slice(None)] * v.ndim
    index[dim] = slice(0, None, 2)
    out[tuple(index)] = v.narrow(dim, 1, n)
    index[dim] = slice(1, None, 2)
    out[tuple(index)] = mids
    return out


def field_lattice(step, device: torch.device,
                  linear: np.ndarray | None = None) -> torch.Tensor:
    """The displacement (dx, dy) in pixels at the fine lattice nodes:
    ``N x 2 x hf x wf`` float32, zero for samples whose alpha is 0. ``linear`` (N x 3 x 3,
    its 2 x 2 part used) maps the displacements on (on the coarse lattice, before the
    linear refinement: fewer values)."""
    return refine_field(field_coarse(step, linear), step).to(device)


def field_coarse(step, linear: np.ndarray | None = None) -> torch.Tensor:
    """The field on its coarse lattice with margins (``N x 2 x hm x wm``, CPU float32),
    scaled, and mapped by ``linear`` if given; see :func:`refine_field`."""
    height, width = step.size_in
    layout = field_layout(height, width, float(step.sigma))
    n = len(step.alpha)
    hp, wp = layout.noise_shape
    hm, wm = layout.smooth_y.shape[0], layout.smooth_xt.shape[1]
    rows = np.flatnonzero(step.alpha != 0)
    if not len(rows):
        return torch.zeros((n, 2, hm, wm), dtype=torch.float32)
    m = len(rows)
    z = torch.from_numpy(stream_odd11(step.streams[rows], step.indices[rows], 2 * hp * wp))
    t = (z.view(m * 2 * hp, wp) @ layout.smooth_xt).view(m * 2, hp, wm)
    t = torch.round(t * (1.0 / 2**_KERNEL_BITS))  # exact: a power of two, then rounding
    f = torch.matmul(layout.smooth_y, t).view(m, 2, hm, wm)
    scale = step.alpha[rows] * layout.amplitude
    if linear is None:
        f = f * torch.from_numpy(scale.astype(np.float32)).view(m, 1, 1, 1)
    else:
        lin = linear[rows, :2, :2] * scale[:, None, None]
        f = _apply_linear(np.pad(lin, ((0, 0), (0, 1), (0, 1))), f, force=True)
    if m == n:
        return f
    out = torch.zeros((n, 2, hm, wm), dtype=torch.float32)
    out[torch.from_numpy(rows)] = f
    return out


def refine_field(coarse: torch.Tensor, step) -> torch.Tensor:
    """The fine lattice (``N x 2 x hf x wf``) from :func:`field_coarse`'s values."""
    layout = field_layout(*step.size_in, float(step.sigma))
    if layout.refine_x:
        coarse = _refine(coarse, 3)
    if layout.refine_y:
        coarse = _refine(coarse, 2)
    return coarse


def _apply_linear(linear: np.ndarray, d: torch.Tensor, force: bool = False) -> torch.Tensor:
    """The 2 x 2 linear parts of ``linear`` (N x 3 x 3) applied to displacements N x 2 x h x w."""
    if not force and np.all(linear[:, :2, :2] == np.eye(2)):
        return d
    m = torch.from_numpy(linear[:, :2, :2].astype(np.float32)).to(d.device)
    out = torch.empty_like(d)
    for i in range(2):
        torch.add(m[:, i, 0].view(-1, 1, 1) * d[:, 0], m[:, i, 1].view(-1, 1, 1) * d[:, 1],
                  out=out[:, i])
    return out
