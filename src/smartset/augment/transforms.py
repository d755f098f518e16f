"""Transforms: thin classes over the kernels, with sampling kept apart from applying.

Every transform follows one contract (kornia's and torchvision v2's):

- ``__init__`` only stores its arguments (checked against declared bounds);
- ``make_params(batch_shape, rng)`` draws per-sample parameters for a batch
  ``N x C x H x W`` as a :class:`~smartset.augment.Params` (columns, one row per sample),
  with the probability gate ``p`` (column ``applied``) and ``same_on_batch``;
- ``apply(batch, params)`` is deterministic: the same batch and parameters give the same
  bits, and a batch gives what its samples give one at a time;
- ``transform(batch, seed=...)`` does both.

``batch`` is an image tensor ``N x C x H x W`` (``uint8`` or float, kept with its device),
a typed target (:class:`Masks`, :class:`BoundingBoxes`, :class:`Keypoints`), or a tuple,
list or dict of them; the result has the same structure. Geometric transforms move every
target; consecutive geometric transforms in a policy fuse into one resampling.

Transforms register by name (:func:`register_transform`), as a plugin would.
"""

from __future__ import annotations

import inspect
from typing import ClassVar

import numpy as np

from smartset._torch import require_torch

torch = require_torch("smartset.augment")

from smartset.augment import _geometry as geo
from smartset.augment._noise import draw_streams
from smartset.augment._params import Params
from smartset.augment._validation import (Bound, as_range, as_size, check_choice, check_params,
                                          numbers_of)
from smartset.augment.errors import AugmentParameterError, BatchShapeError, UnknownNameError

__all__ = [
    "Transform", "GeometricTransform", "register_transform", "get_transform",
    "available_transforms", "transform_class", "resolve_seed",
    "Rotation", "Translation", "Scale", "Shear", "HorizontalFlip", "VerticalFlip",
    "Perspective", "Elastic", "Centering", "RandomCrop", "Pad", "Resize",
]

_REGISTRY: dict[str, type[Transform]] = {}
_ALIASES: dict[str, str] = {}


def register_transform(cls: type[Transform] | None = None, *, aliases: tuple[str, ...] = ()):
    """Class decorator: make a transform available by its ``name`` (and ``aliases``)."""
    def add(klass):
        if not klass.name:
            raise ValueError(f"{klass.__name__} needs a class attribute 'name'")
        _REGISTRY[klass.name] = klass
        for alias in aliases:
            _ALIASES[alias] = klass.name
        return klass
    return add(cls) if cls is not None else add


def available_transforms() -> list[str]:
    """Names of the registered transforms, sorted."""
    return sorted(_REGISTRY)


def transform_class(name: str) -> type[Transform]:
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise UnknownNameError(f"Unknown transform {name!r}. Transforms: "
                               f"{', '.join(available_transforms())}.")
    return _REGISTRY[key]


def get_transform(name: str, **options) -> Transform:
    """Build the transform registered as ``name`` with ``options``; unknown names and
    options raise :class:`~smartset.augment.UnknownNameError` listing the valid ones."""
    cls = transform_class(name)
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UnknownNameError(f"Transform {cls.name!r} has no option(s) {', '.join(unknown)}; "
                               f"its options: {', '.join(valid)}.")
    return cls(**options)


def resolve_seed(seed) -> np.random.Generator:
    """A NumPy generator from an int, a ``numpy.random.Generator``, a ``torch.Generator``
    (one draw from it seeds the NumPy generator) or None."""
    if isinstance(seed, torch.Generator):
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=seed)))
    from smartset._random import resolve_rng

    return resolve_rng(seed)


class Transform:
    """Base class. Subclasses set ``name`` (registry key), ``kind`` (``geometric``,
    ``photometric`` or ``normalize``), ``tags`` (what domain constraints may forbid:
    ``flip``, ``intensity``, ``color``, ...), ``bounds`` (declared parameter checks) and
    implement :meth:`_sample` and the apply hooks."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "photometric"
    tags: ClassVar[frozenset[str]] = frozenset()
    bounds: ClassVar[dict[str, Bound]] = {}
    deterministic: ClassVar[bool] = False
    #: parameter columns (name -> value for samples not applied), for replay from records
    defaults: ClassVar[dict[str, object]] = {}
    #: channel counts the transform accepts (None: any)
    channels: ClassVar[tuple[int, ...] | None] = None

    def __init__(self, *, p: float = 1.0, same_on_batch: bool = False):
        self.p = p
        self.same_on_batch = same_on_batch

    def _check(self) -> None:
        """Check the stored arguments against ``bounds`` (call at the end of ``__init__``)."""
        check_params(self.name, self.get_config(), {"p": Bound(0, 1), **self.bounds})

    # -- description
    def get_config(self) -> dict:
        """The constructor arguments, JSON-ready."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: _jsonable(getattr(self, n)) for n in names}

    def spec(self) -> dict:
        return {"op": self.name, **self.get_config()}

    def leaves(self) -> list[Transform]:
        return [self]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(self.get_config())))

    # -- sampling
    def make_params(self, batch_shape, rng=None) -> Params:
        """Per-sample parameters for a batch of ``batch_shape`` (``N x C x H x W``)."""
        rng = resolve_seed(rng)
        shape = tuple(int(s) for s in batch_shape)
        if len(shape) != 4:
            raise BatchShapeError(f"{self.name}: batch_shape must be N x C x H x W, got {shape}")
        n = shape[0]
        m = 1 if self.same_on_batch and n > 0 else n
        applied = rng.random(m) < self.p if self.p < 1 else np.ones(m, dtype=bool)
        columns = self._sample(m, shape, rng)
        params = Params(m, {"applied": applied, **columns})
        return params.repeat(n) if m != n else params

    def _sample(self, n: int, shape: tuple[int, ...], rng: np.random.Generator) -> dict:
        return {}

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape

    # -- applying
    def apply(self, batch, params: Params):
        """Apply with the given parameters (deterministic); ``batch`` as in the module doc."""
        from smartset.augment._plan import run_steps

        return run_steps([(self, params)], batch)[0]

    def __call__(self, batch, *, seed=None):
        return self.transform(batch, seed=seed)

    def transform(self, batch, *, seed=None):
        """Draw parameters with ``seed`` and apply them."""
        from smartset.augment._plan import batch_shape_of

        return self.apply(batch, self.make_params(batch_shape_of(batch), seed))

    def params_from_records(self, records) -> Params:
        return Params.from_records(records, self.defaults)

    def _apply_images(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """Photometric hook: images of the applied samples (params already subset)."""
        raise NotImplementedError

    def _check_channels(self, x: torch.Tensor) -> None:
        if self.channels is not None and x.shape[1] not in self.channels:
            raise BatchShapeError(
                f"{self.name} needs images with {' or '.join(map(str, self.channels))} "
                f"channel(s), got {x.shape[1]}; convert (e.g. mode='RGB') or leave it out.")


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _uniform(rng: np.random.Generator, low: float, high: float, n: int) -> np.ndarray:
    return rng.uniform(low, high, n) if high > low else np.full(n, float(low))


# -- geometric ---------------------------------------------------------------------------
class GeometricTransform(Transform):
    """A transform that moves pixels: it contributes one :class:`GeoStep` to a fused warp.

    ``fill`` (``constant``, ``nearest``, ``reflect``, ``wrap``, Keras semantics) and
    ``fill_value`` say what enters from outside the source; ``interpolation``
    (``bilinear``, ``nearest``, ``bicubic``) how images are sampled (masks always nearest).
    Consecutive geometric transforms with the same fill and interpolation fuse."""

    kind = "geometric"

    def __init__(self, *, fill: str = "constant", fill_value: float = 0.0,
                 interpolation: str = "bilinear", p: float = 1.0, same_on_batch: bool = False):
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.fill = fill
        self.fill_value = fill_value
        self.interpolation = interpolation

    def _check(self) -> None:
        check_choice(self.name, "fill", self.fill, geo.FILL_MODES)
        check_choice(self.name, "interpolation", self.interpolation, geo.INTERPOLATIONS)
        check_params(self.name, {"fill_value": self.fill_value}, {"fill_value": Bound()})
        super()._check()

    @property
    def fill_key(self) -> tuple:
        return (self.fill, float(self.fill_value), self.interpolation)

    def geo_step(self, params: Params, size: tuple[int, int]) -> geo.GeoStep:
        """The step for a canvas of ``size = (H, W)``, samples not applied as identity."""
        backward = geo.invert(self._forward(params, size))
        backward[~params.applied] = np.eye(3)
        return geo.GeoStep("matrix", tuple(size), tuple(size), params.applied.copy(),
                           backward=backward)

    def _forward(self, params: Params, size: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError


def _whole_batch_only(t: Transform) -> None:
    if t.p != 1:
        raise AugmentParameterError(f"{t.name} changes the image size, so it cannot be skipped "
                                    f"for some samples of a batch: give it p=1 (got p={t.p}).")


def _center(size: tuple[int, int]) -> tuple[float, float]:
    return ((size[1] - 1) / 2, (size[0] - 1) / 2)


@register_transform(aliases=("rotate",))
class Rotation(GeometricTransform):
    """Rotate by an angle drawn from ``degrees`` (``d`` means ``(-d, d)``; positive turns
    counter-clockwise as displayed) about ``center`` (x, y; default the image centre)."""

    name = "rotation"
    tags = frozenset({"geometric", "rotation"})
    bounds = {"degrees": Bound(-180, 180)}
    defaults = {"angle": 0.0}

    def __init__(self, degrees=15.0, *, center=None, fill="constant", fill_value=0.0,
                 interpolation="bilinear", p=1.0, same_on_batch=False):
        super().__init__(fill=fill, fill_value=fill_value, interpolation=interpolation, p=p,
                         same_on_batch=same_on_batch)
        self.degrees = degrees
        self.center = center
        self._check()
        if center is not None and (len(center) != 2):
            raise AugmentParameterError(f"rotation: center must be (x, y), got {center!r}")

    def _sample(self, n, shape, rng):
        return {"angle": _uniform(rng, *as_range(self.degrees, symmetric=True), n)}

    def _forward(self, params, size):
        center = tuple(self.center) if self.center is not None else _center(size)
        return geo.rotation_matrix(params["angle"], center)


@register_transform(aliases=("shift",))
class Translation(GeometricTransform):
    """Shift by up to ``fraction`` of the width and height (a number, or ``(fx, fy)``), or
    by up to ``pixels`` (Keras ``width_shift_range``/``height_shift_range``)."""

    name = "translation"
    tags = frozenset({"geometric", "translation"})
    bounds = {"fraction": Bound(0, 1), "pixels": Bound(0, optional=True)}
    defaults = {"tx": 0.0, "ty": 0.0}

    def __init__(self, fraction=0.1, *, pixels=None, fill="constant", fill_value=0.0,
                 interpolation="bilinear", p=1.0, same_on_batch=False):
        super().__init__(fill=fill, fill_value=fill_value, interpolation=interpolation, p=p,
                         same_on_batch=same_on_batch)
        self.fraction = fraction
        self.pixels = pixels
        self._check()

    def _check(self) -> None:
        # a pair is (x, y), not (low, high): (0.2, 0.0) shifts along x only
        config = self.get_config()
        for key in ("fraction", "pixels"):
            found = numbers_of(config[key])
            if found is not None and len(found) == 2:
                config[key] = sorted(found)
        check_choice(self.name, "fill", self.fill, geo.FILL_MODES)
        check_choice(self.name, "interpolation", self.interpolation, geo.INTERPOLATIONS)
        check_params(self.name, {"fill_value": self.fill_value}, {"fill_value": Bound()})
        check_params(self.name, config, {"p": Bound(0, 1), **self.bounds})

    def _sample(self, n, shape, rng):
        height, width = shape[2:]
        if self.pixels is not None:
            px, py = as_range(self.pixels)
        else:
            fx, fy = as_range(self.fraction)
            px, py = fx * width, fy * height
        return {"tx": _uniform(rng, -px, px, n), "ty": _uniform(rng, -py, py, n)}

    def _forward(self, params, size):
        return geo.translation_matrix(params["tx"], params["ty"])

    def geo_step(self, params, size):
        step = super().geo_step(params, size)
        step.anchor = True  # a shift drawn independently of the image
        return step


@register_transform(aliases=("zoom",))
class Scale(GeometricTransform):
    """Scale (zoom) about the centre by a factor from ``factor`` (a pair ``(low, high)``;
    a number ``z`` means ``(1 - z, 1 + z)`` as Keras ``zoom_range``; > 1 enlarges the
    content). ``isotropic=False`` draws x and y factors apart."""

    name = "scale"
    tags = frozenset({"geometric", "scale"})
    bounds = {"factor": Bound(0, 10, low_open=True)}
    defaults = {"sx": 1.0, "sy": 1.0}

    def __init__(self, factor=(0.9, 1.1), *, isotropic=True, fill="constant", fill_value=0.0,
                 interpolation="bilinear", p=1.0, same_on_batch=False):
        super().__init__(fill=fill, fill_value=fill_value, interpolation=interpolation, p=p,
                         same_on_batch=same_on_batch)
        self.factor = factor
        self.isotropic = isotropic
        self._check()
        low, _ = as_range(factor, around=1.0)
        if low <= 0:
            raise AugmentParameterError(f"scale: factor {factor!r} allows factors <= 0; as one "
                                        f"number it must lie below 1 (zoom range).")

    def _sample(self, n, shape, rng):
        low, high = as_range(self.factor, around=1.0)
        sx = _uniform(rng, low, high, n)
        sy = sx.copy() if self.isotropic else _uniform(rng, low, high, n)
        return {"sx": sx, "sy": sy}

    def _forward(self, params, size):
        return geo.scale_matrix(params["sx"], params["sy"], _center(size))


@register_transform
class Shear(GeometricTransform):
    """Shear by an angle from ``degrees`` (``d`` means ``(-d, d)``) along ``axis``
    (``x``: ``x' = x + tan(a) y``, ``y``, or ``both``, drawn apart), about the centre."""

    name = "shear"
    tags = frozenset({"geometric", "shear"})
    bounds = {"degrees": Bound(-80, 80)}
    defaults = {"shx": 0.0, "shy": 0.0}

    def __init__(self, degrees=10.0, *, axis="x", fill="constant", fill_value=0.0,
                 interpolation="bilinear", p=1.0, same_on_batch=False):
        super().__init__(fill=fill, fill_value=fill_value, interpolation=interpolation, p=p,
                         same_on_batch=same_on_batch)
        self.degrees = degrees
        self.axis = axis
        self._check()
        check_choice(self.name, "axis", axis, ("x", "y", "both"))

    def _sample(self, n, shape, rng):
        low, high = as_range(self.degrees, symmetric=True)
        shx = _uniform(rng, low, high, n) if self.axis in ("x", "both") else np.zeros(n)
        shy = _uniform(rng, low, high, n) if self.axis in ("y", "both") else np.zeros(n)
        return {"shx": shx, "shy": shy}

    def _forward(self, params, size):
        return geo.shear_matrix(params["shx"], params["shy"], _center(size))


@register_transform(aliases=("horizontal_flip", "fliplr"))
class HorizontalFlip(GeometricTransform):
    """Mirror left-right (exact: a gather, no interpolation)."""

    name = "hflip"
    tags = frozenset({"geometric", "flip"})

    def __init__(self, *, fill="constant", fill_value=0.0, interpolation="bilinear", p=0.5,
                 same_on_batch=False):
        super().__init__(fill=fill, fill_value=fill_value, interpolation=interpolation, p=p,
                         same_on_batch=same_on_batch)
        self._check()

    def _forward(self, params, size):
        m = geo.identity(params.n)
        m[:, 0, 0], m[:, 0, 2] = -1, size[1] - 1
        return m


@register_transform(aliases=("vertical_flip", "flipud"))
class VerticalFlip(GeometricTransform):
    """Mirror top-bottom (exact)."""

    name = "vflip"
    tags = frozenset({"geometric", "flip"})

    def __init__(self, *, fill="constant", fill_value=0.0, interpolation="bilinear", p=0.5,
                 same_on_batch=False):
        super().__init__(fill=fill, fill_value=fill_value, interpolation=interpolation, p=p,
                         same_on_batch=same_on_batch)
        self._check()

    def _forward(self, params, size):
        m = geo.identity(params.n)
        m[:, 1, 1], m[:, 1, 2] = -1, size[0] - 1
        return m


@register_transform
class Perspective(GeometricTransform):
    """A random perspective: each corner moves inwards by up to ``distortion`` times half the
    width and height (torchvision's ``RandomPerspective``)."""

    name = "perspective"
    tags = frozenset({"geometric", "perspective"})
    bounds = {"distortion": Bound(0, 1, high_open=True)}
    defaults = {"offsets": [0.0] * 8}

    def __init__(self, distortion=0.2, *, fill="constant", fill_value=0.0,
                 interpolation="bilinear", p=1.0, same_on_batch=False):
        super().__init__(fill=fill, fill_value=fill_value, interpolation=interpolation, p=p,
                         same_on_batch=same_on_batch)
        self.distortion = distortion
        self._check()

    def _sample(self, n, shape, rng):
        return {"offsets": rng.uniform(0, float(self.distortion), (n, 8))}

    def _forward(self, params, size):
        height, width = size
        half = np.array([(width - 1) / 2, (height - 1) / 2] * 4)
        corners = np.array([0, 0, width - 1, 0, width - 1, height - 1, 0, height - 1], float)
        inward = np.array([1, 1, -1, 1, -1, -1, 1, -1], float)
        dst = corners + params["offsets"] * half * inward
        return geo.homography(np.broadcast_to(corners.reshape(4, 2), (params.n, 4, 2)),
                              dst.reshape(-1, 4, 2))


@register_transform(aliases=("elastic_distortion",))
class Elastic(GeometricTransform):
    """Elastic distortion (Simard et al. 2003): a displacement field of uniform noise in
    [-1, 1] per pixel, smoothed with a Gaussian of ``sigma`` pixels and scaled by ``alpha``
    (a number, or a ``(low, high)`` range drawn per sample).

    The field is drawn on a lattice of spacing ``sigma / 2`` with the variance of the
    full-resolution field and interpolated (see ``benchmarks/augment.py`` for the check of
    its statistics); its noise is addressed by (``stream``, ``index``), so it replays."""

    name = "elastic"
    tags = frozenset({"geometric", "elastic"})
    bounds = {"alpha": Bound(0, 1000), "sigma": Bound(0, 200, low_open=True)}
    defaults = {"alpha": 0.0, "stream": 0, "index": 0}

    def __init__(self, alpha=34.0, sigma=4.0, *, fill="constant", fill_value=0.0,
                 interpolation="bilinear", p=1.0, same_on_batch=False):
        super().__init__(fill=fill, fill_value=fill_value, interpolation=interpolation, p=p,
                         same_on_batch=same_on_batch)
        self.alpha = alpha
        self.sigma = sigma
        self._check()
        if len(as_range(sigma)) != 2 or as_range(sigma)[0] != as_range(sigma)[1]:
            raise AugmentParameterError("elastic: sigma must be one number (it sets the "
                                        "lattice every sample shares).")

    def _sample(self, n, shape, rng):
        return {"alpha": _uniform(rng, *as_range(self.alpha), n),
                "stream": np.repeat(draw_streams(rng, 1), n),
                "index": np.arange(n, dtype=np.int64)}

    def geo_step(self, params, size):
        alpha = np.where(params.applied, params["alpha"], 0.0)
        return geo.GeoStep("field", tuple(size), tuple(size), params.applied.copy(),
                           alpha=alpha, sigma=float(as_range(self.sigma)[0]),
                           streams=params["stream"], indices=params["index"])


@register_transform(aliases=("center",))
class Centering(GeometricTransform):
    """Shift the centre of mass of the (mean-channel) intensity to the image centre, as
    MNIST was made. Deterministic; the shift measured is recorded (``dx``, ``dy``).
    Assumes a dark background (digits, scans)."""

    name = "centering"
    tags = frozenset({"geometric", "translation"})
    deterministic = True
    defaults = {"dx": float("nan"), "dy": float("nan")}

    def __init__(self, *, fill="constant", fill_value=0.0, interpolation="bilinear", p=1.0,
                 same_on_batch=False):
        super().__init__(fill=fill, fill_value=fill_value, interpolation=interpolation, p=p,
                         same_on_batch=same_on_batch)
        self._check()

    def _sample(self, n, shape, rng):
        return {"dx": np.full(n, np.nan), "dy": np.full(n, np.nan)}

    def geo_step(self, params, size):
        shift = np.stack([params["dx"], params["dy"]], 1).astype(np.float64)
        return geo.GeoStep("center", tuple(size), tuple(size), params.applied.copy(),
                           shift=shift)


@register_transform(aliases=("random_crop",))
class RandomCrop(GeometricTransform):
    """Cut a ``size`` (``(H, W)`` or one number) window at a random position."""

    name = "crop"
    tags = frozenset({"geometric", "crop"})
    defaults = {"top": 0, "left": 0}

    def __init__(self, size=24, *, fill="constant", fill_value=0.0, interpolation="bilinear",
                 p=1.0, same_on_batch=False):
        super().__init__(fill=fill, fill_value=fill_value, interpolation=interpolation, p=p,
                         same_on_batch=same_on_batch)
        self.size = size
        self._check()
        as_size(self.name, "size", size)

    def output_shape(self, shape):
        height, width = as_size(self.name, "size", self.size)
        if height > shape[2] or width > shape[3]:
            raise BatchShapeError(f"crop: size {(height, width)} exceeds the images "
                                  f"({shape[2]} x {shape[3]}); pad first (Pad) or crop smaller.")
        return (*shape[:2], height, width)

    def _sample(self, n, shape, rng):
        height, width = self.output_shape(shape)[2:]
        return {"top": rng.integers(0, shape[2] - height + 1, n),
                "left": rng.integers(0, shape[3] - width + 1, n)}

    def geo_step(self, params, size):
        out = self.output_shape((1, 1, *size))[2:]
        top = np.where(params.applied, params["top"], (size[0] - out[0]) // 2)
        left = np.where(params.applied, params["left"], (size[1] - out[1]) // 2)
        backward = geo.translation_matrix(left.astype(float), top.astype(float))
        return geo.GeoStep("matrix", tuple(size), out, params.applied.copy(), backward=backward)


@register_transform
class Pad(GeometricTransform):
    """Pad by ``padding`` pixels: one number, ``(y, x)``, or ``(top, bottom, left, right)``,
    filled by ``fill`` (``reflect`` and ``wrap`` continue the image). Deterministic."""

    name = "pad"
    tags = frozenset({"geometric", "pad"})
    deterministic = True
    bounds = {"padding": Bound(0, 10_000, integer=True)}

    def __init__(self, padding=4, *, fill="constant", fill_value=0.0, interpolation="bilinear",
                 p=1.0, same_on_batch=False):
        super().__init__(fill=fill, fill_value=fill_value, interpolation=interpolation, p=p,
                         same_on_batch=same_on_batch)
        self.padding = padding
        self._check()
        _whole_batch_only(self)

    def _sides(self) -> tuple[int, int, int, int]:
        values = [int(v) for v in (self.padding if isinstance(self.padding, (list, tuple))
                                   else [self.padding])]
        if len(values) == 1:
            return (values[0],) * 4
        if len(values) == 2:
            return values[0], values[0], values[1], values[1]
        if len(values) == 4:
            return tuple(values)
        raise AugmentParameterError(f"pad: padding must be one number, (y, x) or (top, "
                                    f"bottom, left, right), got {self.padding!r}.")

    def output_shape(self, shape):
        top, bottom, left, right = self._sides()
        return (*shape[:2], shape[2] + top + bottom, shape[3] + left + right)

    def geo_step(self, params, size):
        top, _, left, _ = self._sides()
        out = self.output_shape((1, 1, *size))[2:]
        n = params.n
        if not params.applied.all():
            raise AugmentParameterError("pad changes the image size, so it cannot be skipped "
                                        "for some samples: give it p=1.")
        backward = geo.translation_matrix(np.full(n, -float(left)), np.full(n, -float(top)))
        return geo.GeoStep("matrix", tuple(size), out, params.applied.copy(), backward=backward)


@register_transform
class Resize(GeometricTransform):
    """Resize to ``size`` (``(H, W)`` or one number), pixel areas aligned (as
    ``align_corners=False``). No antialiasing: for strong shrinking resize first with
    Pillow. Deterministic."""

    name = "resize"
    tags = frozenset({"geometric", "resize"})
    deterministic = True

    def __init__(self, size=28, *, fill="nearest", fill_value=0.0, interpolation="bilinear",
                 p=1.0, same_on_batch=False):
        super().__init__(fill=fill, fill_value=fill_value, interpolation=interpolation, p=p,
                         same_on_batch=same_on_batch)
        self.size = size
        self._check()
        as_size(self.name, "size", size)
        _whole_batch_only(self)

    def output_shape(self, shape):
        return (*shape[:2], *as_size(self.name, "size", self.size))

    def geo_step(self, params, size):
        out = self.output_shape((1, 1, *size))[2:]
        if not params.applied.all():
            raise AugmentParameterError("resize changes the image size, so it cannot be "
                                        "skipped for some samples: give it p=1.")
        n = params.n
        sy, sx = size[0] / out[0], size[1] / out[1]
        backward = geo.identity(n)
        backward[:, 0, 0], backward[:, 0, 2] = sx, 0.5 * sx - 0.5
        backward[:, 1, 1], backward[:, 1, 2] = sy, 0.5 * sy - 0.5
        return geo.GeoStep("matrix", tuple(size), out, params.applied.copy(), backward=backward)


# the photometric and normalisation built-ins register the same way a plugin would
from smartset.augment import _photometric  # noqa: E402,F401
from smartset.augment import _warps  # noqa: E402,F401
from smartset.augment import _lighting  # noqa: E402,F401
