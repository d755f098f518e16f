"""timm models as backbones (``timm:NAME`` or ``timm:NAME=weights.pth``), for users with
weights of their own. timm is optional: without it, one line says how to install it."""

from __future__ import annotations

from pathlib import Path

from smartset._torch import require_torch
from smartset.errors import SmartsetError

torch = require_torch("smartset.backbones")

__all__ = ["timm_backbone"]


class _TimmBackbone(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.num_features = int(model.num_features)

    def forward_features(self, x):
        return self.model(x)  # num_classes=0: timm ends in global pooling

    def forward(self, x):
        return self.model(x)

    def stages(self):
        return [self.model]  # one block: trainable_blocks=0 freezes it, 1 or -1 trains it


def timm_backbone(spec, *, in_channels: int = 3, pretrained: bool = True):
    try:
        import timm
    except ImportError:
        from smartset.backbones import MissingPackageError

        raise MissingPackageError(f"Backbone {spec.name!r} needs timm: pip install timm "
                                  f"(or use efficientnet_lite0, which needs no download).") from None
    name = spec.name[5:]
    weights = spec.weights
    try:
        model = timm.create_model(name, pretrained=pretrained and not weights, num_classes=0,
                                  in_chans=in_channels)
    except RuntimeError as error:  # timm: unknown model name
        raise SmartsetError(f"timm cannot build {name!r}: {error}") from None
    if pretrained and weights:
        path = Path(weights)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many types for a damaged file
            raise SmartsetError(f"Cannot read weights {path}: {type(error).__name__}: "
                                f"{str(error)[:120]}") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        missing, _ = model.load_state_dict(state, strict=False)
        if len(missing) > len(state) // 2:
            raise SmartsetError(f"Weights {path} do not fit timm model {name!r} "
                                f"({len(missing)} tensors missing).")
    return _TimmBackbone(model), spec
