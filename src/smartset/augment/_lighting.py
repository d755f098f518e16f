"""Spatially uneven light: a lamp (or the sun's glare) lighting one part of the image.

Written here because the photometric transforms change every pixel alike (brightness,
gamma, contrast), while the light the knife study met at night and under strong lamps was
uneven: bright and warm near the lamp, dim away from it, with a glare spot. A model that
only saw evenly lit images meets that light first at test time; this transform shows it at
learning time (the learning-stage half of DaCoLT, policy ``knife-light``).

Per sample a light centre ``(cx, cy)`` (fractions of the width and height, a little
outside the image allowed), a falloff ``radius`` (fraction of the longer side), the
``ambient`` level far from the lamp, the ``glare`` added at the centre, a ``warmth`` (0:
white light, 1: a sodium/tungsten cast: green x 0.75, blue x 0.4) and an overall ``gain``::

    light = exp(-d^2 / (2 radius^2))
    out = x * gain * (ambient + (1 - ambient) * light) * tint + glare * light * tint

Boxes, masks and keypoints are unchanged (a photometric transform).
"""

from __future__ import annotations

import numpy as np
import torch

from smartset.augment import functional as fn
from smartset.augment._validation import Bound, as_range
from smartset.augment.transforms import Transform, _uniform, register_transform

__all__ = ["Lamp"]


@register_transform(aliases=("uneven_light",))
class Lamp(Transform):
    """Uneven, possibly coloured light from a lamp at a random point (see the module
    docstring): ``radius``, ``ambient``, ``glare``, ``warmth`` and ``gain`` are ranges
    drawn per sample (a number means that value)."""

    name = "lamp"
    tags = frozenset({"intensity", "color"})
    channels = (1, 3)
    bounds = {"radius": Bound(0, 10, low_open=True), "ambient": Bound(0, 1),
              "glare": Bound(0, 1), "warmth": Bound(0, 1), "gain": Bound(0, 10, low_open=True)}
    defaults = {"cx": 0.5, "cy": 0.5, "radius": 0.4, "ambient": 1.0, "glare": 0.0,
                "warmth": 0.0, "gain": 1.0}

    def __init__(self, radius=(0.2, 0.6), *, ambient=(0.3, 1.0), glare=(0.0, 0.5),
                 warmth=(0.0, 1.0), gain=(0.8, 1.5), p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.radius, self.ambient, self.glare = radius, ambient, glare
        self.warmth, self.gain = warmth, gain
        self._check()

    def _sample(self, n, shape, rng):
        return {"cx": _uniform(rng, -0.1, 1.1, n), "cy": _uniform(rng, -0.1, 1.1, n),
                **{key: _uniform(rng, *as_range(getattr(self, key)), n)
                   for key in ("radius", "ambient", "glare", "warmth", "gain")}}

    def _apply_images(self, x, params):
        return lamp_light(x, cx=params["cx"], cy=params["cy"], radius=params["radius"],
                          ambient=params["ambient"], glare=params["glare"],
                          warmth=params["warmth"], gain=params["gain"])


def lamp_light(x: torch.Tensor, *, cx, cy, radius, ambient, glare, warmth,
               gain) -> torch.Tensor:
    """The lamp of :class:`Lamp` on a batch ``N x C x H x W`` (uint8 or float; dtype
    kept), every parameter one value per sample (or one for all)."""
    n, channels, height, width = x.shape
    y = fn.to_float(x)

    def column(value):
        return torch.as_tensor(np.broadcast_to(np.asarray(value, np.float64), (n,)).copy(),
                               dtype=y.dtype, device=y.device).view(n, 1, 1, 1)

    ys = (torch.arange(height, dtype=y.dtype, device=y.device) + 0.5).view(1, 1, -1, 1)
    xs = (torch.arange(width, dtype=y.dtype, device=y.device) + 0.5).view(1, 1, 1, -1)
    side = float(max(height, width))
    d2 = (xs - column(cx) * width) ** 2 + (ys - column(cy) * height) ** 2
    light = torch.exp(-d2 / (2 * (column(radius) * side) ** 2))
    warm = column(warmth)
    if channels == 3:
        tint = torch.cat([torch.ones_like(warm), 1 - 0.25 * warm, 1 - 0.6 * warm], 1)
    else:
        tint = torch.ones_like(warm)
    ambient_ = column(ambient)
    out = y * column(gain) * (ambient_ + (1 - ambient_) * light) * tint \
        + column(glare) * light * tint
    return fn.from_float(out, x.dtype)
