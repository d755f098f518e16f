"""Photometric and normalisation transforms: thin classes over :mod:`functional` kernels.

They change pixel values only, so boxes, masks and keypoints pass through unchanged.
Random amounts are drawn per sample from the ranges given; noise is addressed by a
replayable (stream, index), like the elastic fields.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from smartset.augment import functional as fn
from smartset.augment._noise import draw_streams
from smartset.augment._params import Params
from smartset.augment._validation import Bound, as_range, check_choice, numbers_of
from smartset.augment.errors import AugmentParameterError, NotFittedError
from smartset.augment.transforms import Transform, _uniform, register_transform

__all__ = [
    "Brightness", "Gamma", "Contrast", "CLAHE", "ChannelShift", "Hue", "Saturation",
    "ColorJitter", "GaussianNoise", "SaltAndPepper", "GaussianBlur", "BoxBlur", "MedianBlur",
    "Smooth", "Sharpen", "Erasing", "Rescale", "SamplewiseCenter",
    "SamplewiseStdNormalization", "FeaturewiseNormalizer",
]


def _noise_columns(n: int, rng) -> dict:
    return {"stream": np.repeat(draw_streams(rng, 1), n), "index": np.arange(n, dtype=np.int64)}


def _odd_sizes(value, n, rng, owner) -> np.ndarray:
    low, high = (int(v) for v in as_range(value))
    choices = [k for k in range(low, high + 1) if k % 2 == 1]
    if not choices:
        raise AugmentParameterError(f"{owner}: size {value!r} holds no odd size.")
    return rng.choice(choices, n).astype(np.int64)


@register_transform
class Brightness(Transform):
    """Multiply values by a factor from ``factor`` (a pair; a number ``b`` means
    ``(1 - b, 1 + b)``), as Keras ``brightness_range``."""

    name = "brightness"
    tags = frozenset({"intensity"})
    bounds = {"factor": Bound(0, 10)}
    defaults = {"factor": 1.0}

    def __init__(self, factor=0.2, *, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.factor = factor
        self._check()

    def _sample(self, n, shape, rng):
        low, high = as_range(self.factor, around=1.0)
        return {"factor": _uniform(rng, max(low, 0.0), high, n)}

    def _apply_images(self, x, params):
        return fn.adjust_brightness(x, params["factor"])


@register_transform(aliases=("darkening",))
class Gamma(Transform):
    """Gamma curve ``x ** gamma`` with ``gamma`` from a range: above 1 darkens (the
    source material's "darkening"), below 1 brightens."""

    name = "gamma"
    tags = frozenset({"intensity"})
    bounds = {"gamma": Bound(0, 10, low_open=True)}
    defaults = {"gamma": 1.0}

    def __init__(self, gamma=(1.0, 2.0), *, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.gamma = gamma
        self._check()

    def _sample(self, n, shape, rng):
        return {"gamma": _uniform(rng, *as_range(self.gamma), n)}

    def _apply_images(self, x, params):
        return fn.adjust_gamma(x, params["gamma"])


@register_transform
class Contrast(Transform):
    """Scale contrast about the mean grey level by a factor (a number ``c`` means
    ``(1 - c, 1 + c)``)."""

    name = "contrast"
    tags = frozenset({"intensity"})
    bounds = {"factor": Bound(0, 10)}
    defaults = {"factor": 1.0}

    def __init__(self, factor=0.2, *, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.factor = factor
        self._check()

    def _sample(self, n, shape, rng):
        low, high = as_range(self.factor, around=1.0)
        return {"factor": _uniform(rng, max(low, 0.0), high, n)}

    def _apply_images(self, x, params):
        return fn.adjust_contrast(x, params["factor"])


@register_transform
class CLAHE(Transform):
    """Contrast-limited adaptive histogram equalisation (OpenCV's rules): clip limit drawn
    from ``clip_limit`` (a number ``c`` means ``(1, c)``), ``tile_grid`` tiles."""

    name = "clahe"
    tags = frozenset({"intensity"})
    bounds = {"clip_limit": Bound(0, 100), "tile_grid": Bound(1, 64, integer=True)}
    defaults = {"clip_limit": 0.0}

    def __init__(self, clip_limit=4.0, *, tile_grid=(8, 8), p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.clip_limit = clip_limit
        self.tile_grid = tile_grid
        self._check()

    def _sample(self, n, shape, rng):
        found = numbers_of(self.clip_limit)
        low, high = (min(1.0, found[0]), found[0]) if len(found) == 1 else found
        return {"clip_limit": _uniform(rng, low, high, n)}

    def _apply_images(self, x, params):
        grid = numbers_of(self.tile_grid)
        return fn.clahe(x, params["clip_limit"], (int(grid[0]), int(grid[-1])))


@register_transform
class ChannelShift(Transform):
    """Keras ``channel_shift_range``: add a shift from ``(-intensity, intensity)`` (a
    fraction of the value range: Keras' 50 on 0-255 data is 50/255) to every channel,
    clipped to the image's own range."""

    name = "channel_shift"
    tags = frozenset({"intensity"})
    bounds = {"intensity": Bound(0, 1)}
    defaults = {"shift": 0.0}

    def __init__(self, intensity=0.1, *, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.intensity = intensity
        self._check()

    def _sample(self, n, shape, rng):
        return {"shift": _uniform(rng, *as_range(self.intensity, symmetric=True), n)}

    def _apply_images(self, x, params):
        return fn.channel_shift(x, params["shift"])


@register_transform
class Hue(Transform):
    """Turn the hue of RGB images by a shift from ``(-shift, shift)`` turns (<= 0.5)."""

    name = "hue"
    tags = frozenset({"intensity", "color"})
    bounds = {"shift": Bound(-0.5, 0.5)}
    defaults = {"shift": 0.0}
    channels = (3,)

    def __init__(self, shift=0.05, *, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.shift = shift
        self._check()

    def _sample(self, n, shape, rng):
        return {"shift": _uniform(rng, *as_range(self.shift, symmetric=True), n)}

    def _apply_images(self, x, params):
        return fn.adjust_hue(x, params["shift"])


@register_transform
class Saturation(Transform):
    """Scale the saturation of RGB images by a factor (a number ``s`` means
    ``(1 - s, 1 + s)``)."""

    name = "saturation"
    tags = frozenset({"intensity", "color"})
    bounds = {"factor": Bound(0, 10)}
    defaults = {"factor": 1.0}
    channels = (3,)

    def __init__(self, factor=0.3, *, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.factor = factor
        self._check()

    def _sample(self, n, shape, rng):
        low, high = as_range(self.factor, around=1.0)
        return {"factor": _uniform(rng, max(low, 0.0), high, n)}

    def _apply_images(self, x, params):
        return fn.adjust_saturation(x, params["factor"])


@register_transform(aliases=("colour_jitter",))
class ColorJitter(Transform):
    """Brightness, contrast, saturation and hue in one step (torchvision's
    ``ColorJitter``, fixed order); each amount as in the single transforms, 0 to skip."""

    name = "color_jitter"
    tags = frozenset({"intensity", "color"})
    bounds = {"brightness": Bound(0, 10), "contrast": Bound(0, 10),
              "saturation": Bound(0, 10), "hue": Bound(-0.5, 0.5)}
    defaults = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0}
    channels = (3,)

    def __init__(self, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05, *, p=1.0,
                 same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.brightness, self.contrast = brightness, contrast
        self.saturation, self.hue = saturation, hue
        self._check()

    def _sample(self, n, shape, rng):
        out = {}
        for key in ("brightness", "contrast", "saturation"):
            low, high = as_range(getattr(self, key), around=1.0)
            out[key] = _uniform(rng, max(low, 0.0), high, n)
        out["hue"] = _uniform(rng, *as_range(self.hue, symmetric=True), n)
        return out

    def _apply_images(self, x, params):
        x = fn.adjust_brightness(x, params["brightness"])
        x = fn.adjust_contrast(x, params["contrast"])
        x = fn.adjust_saturation(x, params["saturation"])
        return fn.adjust_hue(x, params["hue"])


@register_transform
class GaussianNoise(Transform):
    """Add Gaussian noise with a standard deviation from ``std`` (a fraction of the value
    range; a number ``s`` means ``(0, s)``)."""

    name = "gaussian_noise"
    tags = frozenset({"noise"})
    bounds = {"std": Bound(0, 1)}
    defaults = {"std": 0.0, "stream": 0, "index": 0}

    def __init__(self, std=0.05, *, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.std = std
        self._check()

    def _sample(self, n, shape, rng):
        found = numbers_of(self.std)
        low, high = (0.0, found[0]) if len(found) == 1 else found
        return {"std": _uniform(rng, low, high, n), **_noise_columns(n, rng)}

    def _apply_images(self, x, params):
        return fn.gaussian_noise(x, params["std"], streams=params["stream"],
                                 indices=params["index"])


@register_transform
class SaltAndPepper(Transform):
    """Set a fraction of pixels from ``amount`` (a number ``a`` means ``(0, a)``) to white
    (share ``salt_ratio``) or black."""

    name = "salt_and_pepper"
    tags = frozenset({"noise"})
    bounds = {"amount": Bound(0, 1), "salt_ratio": Bound(0, 1)}
    defaults = {"amount": 0.0, "stream": 0, "index": 0}

    def __init__(self, amount=0.02, *, salt_ratio=0.5, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.amount = amount
        self.salt_ratio = salt_ratio
        self._check()

    def _sample(self, n, shape, rng):
        found = numbers_of(self.amount)
        low, high = (0.0, found[0]) if len(found) == 1 else found
        return {"amount": _uniform(rng, low, high, n), **_noise_columns(n, rng)}

    def _apply_images(self, x, params):
        return fn.salt_and_pepper(x, params["amount"], salt_ratio=self.salt_ratio,
                                  streams=params["stream"], indices=params["index"])


@register_transform
class GaussianBlur(Transform):
    """Gaussian blur with ``sigma`` pixels drawn from a range (a number ``s``: ``(0.1, s)``)."""

    name = "gaussian_blur"
    tags = frozenset({"filter"})
    bounds = {"sigma": Bound(0, 50, low_open=True)}
    defaults = {"sigma": 0.1}

    def __init__(self, sigma=(0.1, 2.0), *, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.sigma = sigma
        self._check()

    def _sample(self, n, shape, rng):
        found = numbers_of(self.sigma)
        low, high = (min(0.1, found[0]), found[0]) if len(found) == 1 else found
        return {"sigma": _uniform(rng, low, high, n)}

    def _apply_images(self, x, params):
        return fn.gaussian_blur(x, params["sigma"])


class _OddSizeFilter(Transform):
    """A filter whose odd kernel ``size`` is drawn per sample from a range."""

    tags = frozenset({"filter"})
    defaults = {"size": 1}

    def __init__(self, size=None, *, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.size = self.default_size if size is None else size
        self._check()

    def _sample(self, n, shape, rng):
        return {"size": _odd_sizes(self.size, n, rng, self.name)}

    def _apply_images(self, x, params):
        return self.kernel(x, params["size"])


@register_transform
class BoxBlur(_OddSizeFilter):
    """Mean filter of an odd ``size`` drawn from a range (default 3 to 7)."""

    name = "box_blur"
    bounds = {"size": Bound(1, 99, integer=True)}
    default_size = (3, 7)
    kernel = staticmethod(fn.box_blur)


@register_transform
class MedianBlur(_OddSizeFilter):
    """Median filter of an odd ``size`` drawn from a range (default 3 to 5)."""

    name = "median_blur"
    bounds = {"size": Bound(1, 31, integer=True)}
    default_size = (3, 5)
    kernel = staticmethod(fn.median_blur)


@register_transform
class Smooth(Transform):
    """Pillow's smoothing filter: ``kind`` ``smooth`` (3 x 3) or ``smooth_more`` (5 x 5).
    Deterministic."""

    name = "smooth"
    tags = frozenset({"filter"})
    deterministic = True

    def __init__(self, kind="smooth", *, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.kind = kind
        self._check()
        check_choice(self.name, "kind", kind, ("smooth", "smooth_more"))

    def _apply_images(self, x, params):
        return fn.smooth(x, self.kind)


@register_transform
class Sharpen(Transform):
    """Blend with a sharpened image: ``alpha`` (blend) and ``lightness`` from ranges."""

    name = "sharpen"
    tags = frozenset({"filter"})
    bounds = {"alpha": Bound(0, 1), "lightness": Bound(0, 10)}
    defaults = {"alpha": 0.0, "lightness": 1.0}

    def __init__(self, alpha=(0.2, 0.5), *, lightness=(0.5, 1.0), p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.alpha = alpha
        self.lightness = lightness
        self._check()

    def _sample(self, n, shape, rng):
        return {"alpha": _uniform(rng, *as_range(self.alpha), n),
                "lightness": _uniform(rng, *as_range(self.lightness), n)}

    def _apply_images(self, x, params):
        return fn.sharpen(x, params["alpha"], params["lightness"])


@register_transform(aliases=("cutout", "random_erasing"))
class Erasing(Transform):
    """Random erasing (Zhong et al.) / cutout (DeVries & Taylor): ``count`` rectangles of
    an area share from ``scale`` and aspect ratio from ``ratio``, or, with ``size``, squares
    of that side centred anywhere (cutout); filled with ``value`` (raw units) or
    ``"random"`` noise. Targets are not changed."""

    name = "erasing"
    tags = frozenset({"occlusion"})
    bounds = {"scale": Bound(0, 1), "ratio": Bound(0, 100, low_open=True),
              "count": Bound(1, 100, integer=True), "size": Bound(1, optional=True)}
    defaults = {"boxes": [[0.0, 0.0, 0.0, 0.0]], "stream": 0, "index": 0}

    def __init__(self, scale=(0.02, 0.2), *, ratio=(0.3, 3.3), count=1, size=None, value=0.0,
                 p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.scale, self.ratio, self.count = scale, ratio, count
        self.size, self.value = size, value
        self._check()
        if isinstance(value, str) and value != "random":
            raise AugmentParameterError(f"erasing: value must be a number or 'random', got "
                                        f"{value!r}.")

    def params_from_records(self, records):
        k = int(self.count)
        return Params.from_records(records, {**self.defaults, "boxes": [[0.0] * 4] * k})

    def _sample(self, n, shape, rng):
        height, width = shape[2:]
        k = int(self.count)
        if self.size is not None:
            side = float(self.size)
            cy, cx = rng.uniform(0, height, (n, k)), rng.uniform(0, width, (n, k))
            top, left = np.floor(cy - side / 2), np.floor(cx - side / 2)
            h = np.minimum(top + side, height) - np.maximum(top, 0)
            w = np.minimum(left + side, width) - np.maximum(left, 0)
            boxes = np.stack([np.maximum(top, 0), np.maximum(left, 0), h, w], -1)
        else:
            area = rng.uniform(*as_range(self.scale), (n, k)) * height * width
            log_ratio = rng.uniform(*np.log(as_range(self.ratio)), (n, k))
            h = np.minimum(np.round(np.sqrt(area * np.exp(log_ratio))), height)
            w = np.minimum(np.round(np.sqrt(area / np.exp(log_ratio))), width)
            top = np.floor(rng.uniform(0, 1, (n, k)) * (height - h + 1))
            left = np.floor(rng.uniform(0, 1, (n, k)) * (width - w + 1))
            boxes = np.stack([top, left, h, w], -1)
        return {"boxes": boxes.astype(np.float64), **_noise_columns(n, rng)}

    def _apply_images(self, x, params):
        return fn.erase(x, params["boxes"], self.value, streams=params["stream"],
                        indices=params["index"])


# -- normalisation -----------------------------------------------------------------------
class _Normalize(Transform):
    kind = "normalize"
    tags = frozenset({"normalize"})
    deterministic = True


@register_transform
class Rescale(_Normalize):
    """Multiply by ``factor`` (Keras ``rescale``, e.g. ``1/255``); integer images become
    float32."""

    name = "rescale"
    bounds = {"factor": Bound(-1e6, 1e6)}

    def __init__(self, factor=1 / 255, *, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.factor = factor
        self._check()

    def _apply_images(self, x, params):
        return fn.rescale(x, float(self.factor))


@register_transform
class SamplewiseCenter(_Normalize):
    """Subtract each sample's mean (Keras ``samplewise_center``); float output."""

    name = "samplewise_center"

    def __init__(self, *, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self._check()

    def _apply_images(self, x, params):
        return fn.samplewise_center(x)


@register_transform
class SamplewiseStdNormalization(_Normalize):
    """Divide each sample by its std + ``epsilon`` (Keras
    ``samplewise_std_normalization``); float output."""

    name = "samplewise_std"
    bounds = {"epsilon": Bound(0, 1)}

    def __init__(self, *, epsilon=1e-6, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.epsilon = epsilon
        self._check()

    def _apply_images(self, x, params):
        return fn.samplewise_std_normalize(x, float(self.epsilon))


@register_transform(aliases=("featurewise",))
class FeaturewiseNormalizer(_Normalize):
    """Keras ``featurewise_center``, ``featurewise_std_normalization`` and
    ``zca_whitening``, fitted on data (estimator contract: ``fit`` returns self, learned
    ``mean_``, ``std_``, ``zca_matrix_``).

    ``rescale`` (e.g. 1/255) is applied before fitting and before normalising; unlike Keras,
    whose ``fit`` ignores ``rescale``, the statistics match what is normalised.
    ``fit`` takes a tensor ``N x C x H x W``, an iterable of batches, or a dataset of
    ``(image, target)`` items (such as ``ws.dataset(version)``)."""

    name = "featurewise_normalize"

    def __init__(self, *, center=True, std_normalization=True, zca_whitening=False,
                 zca_epsilon=1e-6, rescale=None, p=1.0, same_on_batch=False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.center, self.std_normalization = center, std_normalization
        self.zca_whitening, self.zca_epsilon, self.rescale = zca_whitening, zca_epsilon, rescale
        self._check()

    def _batches(self, data) -> Iterable[torch.Tensor]:
        if isinstance(data, torch.Tensor):
            yield data
            return
        if hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, list):
            for start in range(0, len(data), 256):
                items = [data[i] for i in range(start, min(len(data), start + 256))]
                yield torch.stack([it[0] if isinstance(it, (tuple, list)) else it for it in items])
            return
        for batch in data:
            yield batch[0] if isinstance(batch, (tuple, list)) else batch

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        y = x.to(torch.float64)
        return y * float(self.rescale) if self.rescale is not None else y

    def fit(self, data) -> FeaturewiseNormalizer:
        count, total, squares, outer = 0, None, None, None
        for batch in self._batches(data):
            y = self._prepare(batch)
            per_channel = y.transpose(0, 1).reshape(y.shape[1], -1)
            total = per_channel.sum(1) if total is None else total + per_channel.sum(1)
            squares = (per_channel ** 2).sum(1) if squares is None else squares + (per_channel ** 2).sum(1)
            count += per_channel.shape[1]
            self._shape = tuple(y.shape[1:])
        if not count:
            raise ValueError("fit needs at least one image")
        mean = total / count
        std = torch.sqrt((squares / count - mean ** 2).clamp_min(0))
        self.mean_ = mean.to(torch.float32)
        self.std_ = std.to(torch.float32)
        if self.zca_whitening:
            n = 0
            for batch in self._batches(data):
                y = self._standardize(self._prepare(batch))
                flat = y.reshape(len(y), -1)
                outer = flat.T @ flat if outer is None else outer + flat.T @ flat
                n += len(y)
            sigma = outer / n
            u, s, _ = torch.linalg.svd(sigma)
            self.zca_matrix_ = ((u / torch.sqrt(s + self.zca_epsilon)) @ u.T).to(torch.float32)
        return self

    def _standardize(self, y: torch.Tensor) -> torch.Tensor:
        mean = self.mean_.to(y).view(1, -1, 1, 1)
        std = self.std_.to(y).view(1, -1, 1, 1)
        if self.center:
            y = y - mean
        if self.std_normalization:
            y = y / (std + 1e-6)
        return y

    def _apply_images(self, x, params):
        if not hasattr(self, "mean_"):
            raise NotFittedError("FeaturewiseNormalizer is not fitted: call fit(data) on the "
                                 "training version first (e.g. fit(ws.dataset('train'))).")
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        y = self._standardize(self._prepare(x)).to(work)
        if self.zca_whitening:
            flat = y.reshape(len(y), -1)
            y = (flat @ self.zca_matrix_.to(y)).reshape(y.shape)
        return y


# the photo degradations and RandAugment's colour operations register the same way
from smartset.augment import _photo  # noqa: E402,F401
