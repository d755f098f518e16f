"""Networks trained from scratch, and pretrained backbones for transfer learning, by name.

Every network is a :class:`Net`: a ``backbone`` (a sequence of blocks ending in a flat
feature vector) and a linear ``head``. Transfer learning swaps the head; fine-tuning
unfreezes the last blocks of the backbone. Input size and channels come from the data.

Pretrained models: every backbone of :mod:`smartset.backbones` (``efficientnet_lite0``,
``efficientnet_lite1/2`` where installed, ``timm:NAME[=weights.pth]``) is a model too; its
``backbone`` is ``nn.Sequential(*network.stages())`` (for EfficientNet-Lite: stem, seven
MBConv stages, head + pooling: nine blocks), so ``freeze_backbone(trainable_blocks=k)``
and discriminative learning rates work per stage. ``build_model(..., pretrained=False)``
builds the architecture only (a checkpoint's weights are loaded over it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from smartset._torch import require_torch
from smartset.errors import SmartsetError

torch = require_torch("smartset.learn")
nn = torch.nn

__all__ = ["Net", "DropConnectLinear", "MODELS", "ModelSpec", "register_model", "build_model", "available_models",
           "UnknownModelError", "is_pretrained_model", "pretrained_net"]


class UnknownModelError(SmartsetError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return str(self.args[0])


class Net(nn.Module):
    """``head(backbone(x))``; ``features(x)`` gives the backbone's feature vector.

    ``preprocessing``: for a pretrained backbone, the input normalisation it was trained
    with (``{"backbone", "size", "mean", "std"}``, mean/std per input channel on [0, 1]);
    None for a network trained from scratch (its normalisation comes from its data).
    """

    def __init__(self, backbone: nn.Sequential, head: nn.Module, *, feature_dim: int,
                 preprocessing: dict | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.feature_dim = feature_dim
        self.preprocessing = preprocessing

    def forward(self, x):
        return self.head(self.backbone(x))

    def features(self, x):
        return self.backbone(x)

    def replace_head(self, n_outputs: int) -> None:
        """A new, freshly initialised head with ``n_outputs`` outputs (transfer learning)."""
        self.head = nn.Linear(self.feature_dim, n_outputs)

    def freeze_backbone(self, *, trainable_blocks: int = 0) -> None:
        """Freeze the backbone except its last ``trainable_blocks`` blocks (-1: none frozen)."""
        blocks = list(self.backbone.children())
        cut = 0 if trainable_blocks < 0 else max(0, len(blocks) - trainable_blocks)
        for i, block in enumerate(blocks):
            for parameter in block.parameters():
                parameter.requires_grad = i >= cut

    def blocks(self) -> list[nn.Module]:
        """The backbone's blocks, input first (the units of freezing and of learning rates)."""
        return list(self.backbone.children())


def _flat_dim(body: nn.Module, channels: int, size: tuple[int, int]) -> int:
    with torch.no_grad():
        return int(body(torch.zeros(1, channels, *size)).reshape(1, -1).shape[1])


def _lenet(channels: int, outputs: int, size: tuple[int, int]) -> Net:
    # LeNet-5's shape (conv5-pool-conv5-pool-120-84) widened to 32/64 maps, with batch norm,
    # ReLU, max pooling and dropout: the modern "LeNet-like" reading. The first convolution
    # pads, so 28x28 keeps its size.
    convs = nn.Sequential(
        nn.Sequential(nn.Conv2d(channels, 32, 5, padding=2), nn.BatchNorm2d(32), nn.ReLU(),
                      nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(32, 64, 5), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2)),
    )
    flat = _flat_dim(convs, channels, size)
    backbone = nn.Sequential(*convs, nn.Sequential(nn.Flatten(), nn.Dropout(0.3),
                                                   nn.Linear(flat, 120), nn.ReLU()),
                             nn.Sequential(nn.Linear(120, 84), nn.ReLU()))
    return Net(backbone, nn.Linear(84, outputs), feature_dim=84)


def _network3(channels: int, outputs: int, size: tuple[int, int]) -> Net:
    # Nielsen's network3: conv-pool-conv-pool-dense-dropout, ReLU.
    convs = nn.Sequential(
        nn.Sequential(nn.Conv2d(channels, 20, 5), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(20, 40, 5), nn.ReLU(), nn.MaxPool2d(2)),
    )
    flat = _flat_dim(convs, channels, size)
    backbone = nn.Sequential(*convs, nn.Sequential(nn.Flatten(), nn.Linear(flat, 100), nn.ReLU(),
                                                   nn.Dropout(0.5)))
    return Net(backbone, nn.Linear(100, outputs), feature_dim=100)


def _small_cnn(channels: int, outputs: int, size: tuple[int, int]) -> Net:
    # Two 3x3 convolutions: the fast default for out-of-fold predictions.
    convs = nn.Sequential(
        nn.Sequential(nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                      nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                      nn.MaxPool2d(2)),
    )
    if size[0] > 32 or size[1] > 32:  # larger images: pool down to a fixed 4x4 grid
        convs.append(nn.AdaptiveAvgPool2d(4))
    flat = _flat_dim(convs, channels, size)
    backbone = nn.Sequential(*convs, nn.Sequential(nn.Flatten(), nn.Dropout(0.25),
                                                   nn.Linear(flat, 128), nn.ReLU()))
    return Net(backbone, nn.Linear(128, outputs), feature_dim=128)


class DropConnectLinear(nn.Linear):
    """A linear layer with DropConnect (Wan et al., 2013): in training, each weight is
    kept with probability ``1 - p`` under one mask drawn per batch (kept weights scaled by
    ``1 / (1 - p)``); at test time the layer uses the mean weights (no mask). The mask is
    drawn from torch's RNG, which the estimator seeds."""

    def __init__(self, in_features: int, out_features: int, *, p: float = 0.5):
        super().__init__(in_features, out_features)
        if not 0.0 <= p < 1.0:
            raise SmartsetError(f"DropConnect probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return super().forward(x)
        keep = 1.0 - self.p
        mask = torch.empty_like(self.weight).bernoulli_(keep)
        return nn.functional.linear(x, self.weight * mask / keep, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", p={self.p}"


def _dropconnect(channels: int, outputs: int, size: tuple[int, int]) -> Net:
    # The MNIST study's third architecture: LeNet-like convolutions (conv5(32)-pool-
    # conv5(64)-pool, batch norm, ReLU) and a fully connected layer of 150 units whose
    # weights are masked by DropConnect (p 0.5) in training, their mean used at test time.
    convs = nn.Sequential(
        nn.Sequential(nn.Conv2d(channels, 32, 5, padding=2), nn.BatchNorm2d(32), nn.ReLU(),
                      nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(32, 64, 5), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2)),
    )
    flat = _flat_dim(convs, channels, size)
    backbone = nn.Sequential(*convs, nn.Sequential(nn.Flatten(), DropConnectLinear(flat, 150),
                                                   nn.ReLU()))
    return Net(backbone, nn.Linear(150, outputs), feature_dim=150)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                   nn.BatchNorm2d(cout)))

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


def _resnet(channels: int, outputs: int, size: tuple[int, int]) -> Net:
    # A small ResNet: a stem, three stages of two basic blocks (16, 32, 64), global pooling.
    stride = 2 if min(size) >= 96 else 1  # large photos: a strided stem keeps it affordable
    backbone = nn.Sequential(
        nn.Sequential(nn.Conv2d(channels, 16, 3, stride, 1, bias=False), nn.BatchNorm2d(16),
                      nn.ReLU()),
        nn.Sequential(_BasicBlock(16, 16, 1), _BasicBlock(16, 16, 1)),
        nn.Sequential(_BasicBlock(16, 32, 2), _BasicBlock(32, 32, 1)),
        nn.Sequential(_BasicBlock(32, 64, 2), _BasicBlock(64, 64, 1)),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    )
    return Net(backbone, nn.Linear(64, outputs), feature_dim=64)


def _pretrained_builder(name: str) -> Callable[..., Net]:
    def build(channels: int, outputs: int, size: tuple[int, int], *,
              pretrained: bool = True) -> Net:
        return pretrained_net(name, channels=channels, outputs=outputs, pretrained=pretrained)

    return build


def pretrained_net(name: str, *, channels: int, outputs: int, pretrained: bool = True) -> Net:
    """The backbone ``name`` of :mod:`smartset.backbones` (ImageNet weights unless
    ``pretrained=False``) as a :class:`Net` with a new linear head of ``outputs`` units.
    ``channels`` 1: the stem's RGB filters are summed (a gray image sees what its RGB copy
    would); the normalisation is then the mean of the RGB means and stds."""
    from smartset.backbones import load_backbone

    network, spec = load_backbone(name, in_channels=channels, pretrained=pretrained)
    feature_dim = int(getattr(network, "num_features", 0) or spec.feature_dim)
    backbone = nn.Sequential(*network.stages())
    if channels == len(spec.mean):
        mean, std = list(spec.mean), list(spec.std)
    else:
        mean = [sum(spec.mean) / len(spec.mean)] * channels
        std = [sum(spec.std) / len(spec.std)] * channels
    preprocessing = {"backbone": spec.name, "size": spec.size, "mean": mean, "std": std}
    return Net(backbone, nn.Linear(feature_dim, outputs), feature_dim=feature_dim,
               preprocessing=preprocessing)


@dataclass(frozen=True)
class ModelSpec:
    """A named network. ``pretrained``: it starts from ImageNet weights (``build`` then
    takes ``pretrained=False`` to build the architecture alone)."""

    name: str
    build: Callable[..., Net]
    description: str
    min_size: int = 1
    pretrained: bool = False


MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    MODELS[spec.name] = spec
    return spec


for _spec in (
    ModelSpec("lenet", _lenet, "LeNet-5-like: conv5(32)-pool-conv5(64)-pool-120-84, batch norm, dropout", min_size=12),
    ModelSpec("network3", _network3, "Network3-like: conv5-pool-conv5-pool-dense100-dropout",
              min_size=16),
    ModelSpec("dropconnect", _dropconnect, "LeNet-like conv5(32)-pool-conv5(64)-pool, "
              "DropConnect (p 0.5) on the dense 150 layer", min_size=12),
    ModelSpec("small_cnn", _small_cnn, "two 3x3 conv blocks with batch norm, dense 128 (fast)",
              min_size=4),
    ModelSpec("resnet", _resnet, "small ResNet: 3 stages of 2 basic blocks (16/32/64)",
              min_size=8),
):
    register_model(_spec)


def _register_backbones() -> None:
    from smartset.backbones import BACKBONES

    for name, backbone in BACKBONES.items():
        if name not in MODELS:
            register_model(ModelSpec(name, _pretrained_builder(name),
                                     f"pretrained: {backbone.description}; input "
                                     f"{backbone.size} px by default", min_size=16,
                                     pretrained=True))


_register_backbones()


def is_pretrained_model(name) -> bool:
    """True for a registered pretrained backbone or ``timm:NAME[=weights]``."""
    if not isinstance(name, str):
        return False
    return name.startswith("timm:") or (name in MODELS and MODELS[name].pretrained)


def available_models(*, installed_only: bool = True) -> dict[str, str]:
    """Every model name with its description (pretrained backbones say so; those whose
    package is missing only with ``installed_only=False``); ``timm:NAME`` works too with
    timm installed."""
    from smartset.backbones import BACKBONES

    return {name: spec.description for name, spec in MODELS.items()
            if not (installed_only and spec.pretrained and name in BACKBONES
                    and not BACKBONES[name].installed())}


def build_model(name: str, *, channels: int, outputs: int, size: tuple[int, int],
                pretrained: bool = True) -> Net:
    """A network ``name`` for ``channels`` x ``size`` inputs with ``outputs`` outputs:
    freshly initialised for a from-scratch model; for a pretrained backbone (registered or
    ``timm:NAME[=weights]``), its ImageNet weights and a new head (``pretrained=False``:
    the architecture only, to load a checkpoint into)."""
    if isinstance(name, str) and name.startswith("timm:"):
        if min(size) < 16:
            raise SmartsetError(f"Model {name!r} needs images of at least 16x16 pixels, got "
                                f"{size[1]}x{size[0]}: resize them (--size).")
        return pretrained_net(name, channels=channels, outputs=outputs, pretrained=pretrained)
    if name not in MODELS:
        raise UnknownModelError(f"Unknown model {name!r}. Models: "
                                f"{', '.join(f'{n} ({d})' for n, d in available_models(installed_only=False).items())}"
                                f"; or timm:NAME[=weights.pth] with timm installed.")
    spec = MODELS[name]
    if min(size) < spec.min_size:
        raise SmartsetError(f"Model {name!r} needs images of at least {spec.min_size}x"
                            f"{spec.min_size} pixels, got {size[1]}x{size[0]}: resize them "
                            f"(--size) or pick another model.")
    if spec.pretrained:
        return spec.build(channels, outputs, tuple(size), pretrained=pretrained)
    return spec.build(channels, outputs, tuple(size))
