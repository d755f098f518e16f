"""Photometric transforms for photos: the source material's degradations (motion blur, a
lower resolution, JPEG re-compression) and RandAugment's colour operations (posterize,
solarize, autocontrast, equalize, colour). Thin classes over :mod:`._degrade` kernels,
registered the way a plugin would be; targets pass through unchanged."""

from __future__ import annotations

import numpy as np

from smartset.augment import _degrade as dg
from smartset.augment._validation import Bound, as_range, check_choice
from smartset.augment.errors import AugmentParameterError
from smartset.augment.transforms import Transform, _uniform, register_transform

__all__ = ["MotionBlur", "LowResolution", "JpegCompression", "Posterize", "Solarize",
           "AutoContrast", "Equalize", "Color"]


@register_transform
class MotionBlur(Transform):
    """Motion blur (the knife study's "movement also generates noise and distortion";
    albumentations' ``MotionBlur``): the mean over a straight line of an odd ``length``
    drawn from a range (default 3 to 7 pixels) at an ``angle`` drawn from a range of
    degrees (default any direction)."""

    opencv_uint8 = True  # 8-bit CPU batches run through OpenCV, whole
    name = "motion_blur"
    tags = frozenset({"filter"})
    bounds = {"length": Bound(1, 99, integer=True), "angle": Bound(-360, 360)}
    defaults = {"length": 1, "angle": 0.0}

    def __init__(self, length=(3, 7), *, angle=(0.0, 360.0), p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.length = length
        self.angle = angle
        self._check()
        low, high = (int(v) for v in as_range(length))
        if not any(k % 2 for k in range(low, high + 1)):
            raise AugmentParameterError(f"motion_blur: length {length!r} holds no odd length.")

    def _sample(self, n, shape, rng):
        low, high = (int(v) for v in as_range(self.length))
        choices = [k for k in range(low, high + 1) if k % 2 == 1]
        return {"length": rng.choice(choices, n).astype(np.int64),
                "angle": _uniform(rng, *as_range(self.angle), n)}

    def _apply_images(self, x, params):
        return dg.motion_blur(x, params["length"], params["angle"])


@register_transform(aliases=("downscale", "low_resolution"))
class LowResolution(Transform):
    """Lower the resolution and come back (the whale study's aerial -> satellite shift;
    albumentations' ``Downscale``): shrink by a ``scale`` drawn from a range (area
    averaging, as a coarser sensor) and enlarge back with ``upsample`` (``bilinear`` or
    ``nearest``). The size is kept."""

    opencv_uint8 = True  # 8-bit CPU batches run through OpenCV, whole
    name = "lowres"
    tags = frozenset({"filter", "resolution"})
    bounds = {"scale": Bound(0, 1, low_open=True)}
    defaults = {"scale": 1.0}

    def __init__(self, scale=(0.25, 0.5), *, upsample="bilinear", p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.scale = scale
        self.upsample = upsample
        self._check()
        check_choice(self.name, "upsample", upsample, ("bilinear", "nearest"))

    def _sample(self, n, shape, rng):
        return {"scale": _uniform(rng, *as_range(self.scale), n)}

    def _apply_images(self, x, params):
        return dg.downscale(x, params["scale"], upsample=self.upsample)


@register_transform(aliases=("crappify", "image_compression"))
class JpegCompression(Transform):
    """JPEG re-compression ("crappify", the labelling lecture; albumentations'
    ``ImageCompression``) at a ``quality`` drawn from a range of 1-100 (OpenCV's libjpeg,
    per sample: see :func:`smartset.augment.functional.jpeg`). 1 or 3 channels."""

    opencv_uint8 = True  # 8-bit CPU batches run through OpenCV, whole
    name = "jpeg"
    tags = frozenset({"noise", "compression"})
    bounds = {"quality": Bound(1, 100, integer=True)}
    defaults = {"quality": 100}
    channels = (1, 3)

    def __init__(self, quality=(20, 80), *, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.quality = quality
        self._check()

    def _sample(self, n, shape, rng):
        low, high = (int(v) for v in as_range(self.quality))
        return {"quality": rng.integers(low, high + 1, n).astype(np.int64)}

    def _apply_images(self, x, params):
        return dg.jpeg(x, params["quality"])


@register_transform
class Posterize(Transform):
    """Keep the top ``bits`` of each 8-bit level (a whole number or a range drawn per
    sample; PIL's ``posterize``, a RandAugment operation)."""

    opencv_uint8 = True  # 8-bit CPU batches run whole: one masking pass, no temporaries
    name = "posterize"
    tags = frozenset({"intensity"})
    bounds = {"bits": Bound(1, 8, integer=True)}
    defaults = {"bits": 8}

    def __init__(self, bits=(4, 8), *, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.bits = bits
        self._check()

    def _sample(self, n, shape, rng):
        low, high = (int(v) for v in as_range(self.bits))
        return {"bits": rng.integers(low, high + 1, n).astype(np.int64)}

    def _apply_images(self, x, params):
        return dg.posterize(x, params["bits"])


@register_transform
class Solarize(Transform):
    """Invert the values at or above a ``threshold`` (a fraction of the value range, drawn
    from a range per sample; a RandAugment operation)."""

    opencv_uint8 = True  # 8-bit CPU batches run through OpenCV, whole
    name = "solarize"
    tags = frozenset({"intensity"})
    bounds = {"threshold": Bound(0, 1)}
    defaults = {"threshold": 1.0}

    def __init__(self, threshold=(0.5, 1.0), *, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.threshold = threshold
        self._check()

    def _sample(self, n, shape, rng):
        return {"threshold": _uniform(rng, *as_range(self.threshold), n)}

    def _apply_images(self, x, params):
        return dg.solarize(x, params["threshold"])


@register_transform
class AutoContrast(Transform):
    """Stretch each channel to the full value range (PIL's ``autocontrast``).
    Deterministic."""

    opencv_uint8 = True  # 8-bit CPU batches run through OpenCV, whole
    name = "autocontrast"
    tags = frozenset({"intensity"})
    deterministic = True

    def __init__(self, *, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self._check()

    def _apply_images(self, x, params):
        return dg.autocontrast(x)


@register_transform
class Equalize(Transform):
    """Histogram equalisation per channel on 8-bit levels (PIL's ``equalize``).
    Deterministic."""

    opencv_uint8 = True  # 8-bit CPU batches run through OpenCV, whole
    name = "equalize"
    tags = frozenset({"intensity"})
    deterministic = True

    def __init__(self, *, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self._check()

    def _apply_images(self, x, params):
        return dg.equalize(x)


@register_transform
class Color(Transform):
    """RandAugment's "Color" (PIL's ``ImageEnhance.Color``): scale the saturation of RGB
    images by a factor (a number ``c`` means ``(1 - c, 1 + c)``); images of another channel
    count have no colour and pass unchanged, so a photo policy also runs on greyscale."""

    name = "color"
    tags = frozenset({"intensity", "color"})
    bounds = {"factor": Bound(0, 10)}
    defaults = {"factor": 1.0}

    def __init__(self, factor=0.3, *, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.factor = factor
        self._check()

    def _sample(self, n, shape, rng):
        low, high = as_range(self.factor, around=1.0)
        return {"factor": _uniform(rng, max(low, 0.0), high, n)}

    def _apply_images(self, x, params):
        return dg.adjust_color(x, params["factor"])

