"""Full-resolution maps of an elastic field for ``cv2.remap``, straight from its coarse
lattice: the refinement and the bilinear upsampling as one matrix per axis.

Why by hand: ``uint8`` batches sample the field through ``cv2.remap``, which needs the source
pixel of every output pixel. The float path's map is the coarse field refined
(Catmull-Rom midpoints, :func:`smartset.augment._fields._refine`) plus the affine part on
the output lattice, upsampled bilinearly (``align_corners=True``) to every pixel. Each of
those steps is linear and separable, so along one axis they are one matrix (coarse nodes to
output pixels, built here by running the very same functions on unit vectors); the field
at every pixel is ``Ry @ coarse @ Rx``, two small matrix products per plane, and the affine
part is exact at every pixel (bilinear interpolation reproduces an affine function), so it
is evaluated there directly. Same map to float rounding (about 1e-5 pixel; OpenCV rounds
coordinates to 1/32 pixel), and about 40 % less work per 224 x 224 image than refining,
adding and upsampling (a DataLoader worker's largest item after the remap itself, issue
#23). Every plane is computed with the same matrix shapes, so a batch gives what its
samples give one at a time, bit for bit.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from smartset.augment._fields import _refine

__all__ = ["axis_operator", "full_resolution_map"]


@functools.lru_cache(maxsize=32)
def axis_operator(nodes: int, refine: bool, pixels: int) -> torch.Tensor:
    """``nodes x pixels`` float32: column ``p`` weighs the coarse nodes (margins included)
    that make output pixel ``p`` along one axis: refined when ``refine`` (the margins then
    drop out), then upsampled bilinearly with ``align_corners=True``. Read only."""
    eye = torch.eye(nodes, dtype=torch.float64).view(nodes, 1, 1, nodes)
    fine = _refine(eye, 3) if refine else eye
    up = F.interpolate(fine, size=(1, pixels), mode="bilinear", align_corners=True)
    return up.view(nodes, pixels).to(torch.float32).contiguous()


def full_resolution_map(coarse: torch.Tensor, affine: np.ndarray, size: tuple[int, int],
                        refine: tuple[bool, bool]) -> torch.Tensor:
    """Source pixels (``n x 2 x H x W`` float32, x then y) of every output pixel: the
    coarse field ``coarse`` (``n x 2 x hm x wm``, as :func:`~smartset.augment._fields.
    field_coarse` gives, already mapped by the steps after it) taken to every pixel, plus
    the affine part ``affine`` (``n x 3 x 3``, output pixel to source pixel) evaluated at
    every pixel. ``refine`` is the field layout's ``(refine_y, refine_x)``."""
    height, width = size
    n, _, hm, wm = coarse.shape
    rx = axis_operator(wm, bool(refine[1]), width)
    ry = axis_operator(hm, bool(refine[0]), height).t()
    planes = coarse.reshape(n * 2, hm, wm)
    out = torch.matmul(ry, torch.matmul(planes, rx)).view(n, 2, height, width)
    m = torch.from_numpy(np.ascontiguousarray(affine[:, :2], dtype=np.float32))
    xs = torch.arange(width, dtype=torch.float32).view(1, 1, width)
    ys = torch.arange(height, dtype=torch.float32).view(1, height, 1)
    for i in range(2):
        out[:, i].add_(m[:, i, 0].view(-1, 1, 1) * xs)
        out[:, i].add_(m[:, i, 1].view(-1, 1, 1) * ys + m[:, i, 2].view(-1, 1, 1))
    return out
