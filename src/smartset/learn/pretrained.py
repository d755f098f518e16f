"""ImageNet-pretrained backbones through ``timm`` (the optional ``[pretrained]`` extra).

``timm_network("resnet18", weights="resnet18.pth")`` wraps a timm model as a :class:`Net`
(its pooled features as the backbone, a new linear head), loading weights from a local file;
``weights="download"`` lets timm fetch them (never done by tests). smartset's own
checkpoints serve as backbones without timm: ``ImageClassifier(init_from="model.pt")``.
"""

from __future__ import annotations

from pathlib import Path

from smartset._torch import require_torch
from smartset.learn.errors import CheckpointError
from smartset.learn.models import Net

torch = require_torch("smartset.learn")

__all__ = ["timm_network"]


def _timm():
    try:
        import timm
    except ImportError:
        raise ImportError("Pretrained ImageNet backbones need timm: pip install "
                          "'smartset[pretrained]'. Without it, start from a smartset "
                          "checkpoint: --init-from runs/N/model.pt.") from None
    return timm


def timm_network(name: str, *, channels: int, outputs: int,
                 weights: str | Path | None = None) -> Net:
    """A timm model as a :class:`Net`; ``weights``: a local state-dict file, ``"download"``,
    or None (random initialisation, e.g. before loading a smartset checkpoint)."""
    timm = _timm()
    model = timm.create_model(name, pretrained=weights == "download", num_classes=0,
                              in_chans=channels)
    if weights not in (None, "download"):
        path = Path(weights)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise CheckpointError(f"Cannot read weights {path}: {error}") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        missing, unexpected = model.load_state_dict(state, strict=False)
        if len(missing) > len(state) // 2:
            raise CheckpointError(f"Weights {path} do not fit timm model {name!r} "
                                  f"({len(missing)} tensors missing).")
    # With num_classes=0 a timm model ends in global pooling: its output is the feature
    # vector. It is one block: trainable_blocks=0 freezes it, 1 or -1 trains it.
    feature_dim = int(model.num_features)
    backbone = torch.nn.Sequential(model)
    return Net(backbone, torch.nn.Linear(feature_dim, outputs), feature_dim=feature_dim)
