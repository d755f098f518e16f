"""Networks trained from scratch, and backbones for transfer learning, by name.

Every network is a :class:`Net`: a ``backbone`` (a sequence of blocks ending in a flat
feature vector) and a linear ``head``. Transfer learning swaps the head; fine-tuning
unfreezes the last blocks of the backbone. Input size and channels come from the data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from smartset._torch import require_torch
from smartset.errors import SmartsetError

torch = require_torch("smartset.learn")
nn = torch.nn

__all__ = ["Net", "MODELS", "ModelSpec", "register_model", "build_model", "available_models",
           "UnknownModelError"]


class UnknownModelError(SmartsetError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return str(self.args[0])


class Net(nn.Module):
    """``head(backbone(x))``; ``features(x)`` gives the backbone's feature vector."""

    def __init__(self, backbone: nn.Sequential, head: nn.Module, *, feature_dim: int):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.feature_dim = feature_dim

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


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[int, int, tuple[int, int]], Net]
    description: str
    min_size: int = 1


MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    MODELS[spec.name] = spec
    return spec


for _spec in (
    ModelSpec("lenet", _lenet, "LeNet-5-like: conv5(32)-pool-conv5(64)-pool-120-84, batch norm, dropout", min_size=12),
    ModelSpec("network3", _network3, "Network3-like: conv5-pool-conv5-pool-dense100-dropout",
              min_size=16),
    ModelSpec("small_cnn", _small_cnn, "two 3x3 conv blocks with batch norm, dense 128 (fast)",
              min_size=4),
    ModelSpec("resnet", _resnet, "small ResNet: 3 stages of 2 basic blocks (16/32/64)",
              min_size=8),
):
    register_model(_spec)


def available_models() -> dict[str, str]:
    return {name: spec.description for name, spec in MODELS.items()}


def build_model(name: str, *, channels: int, outputs: int, size: tuple[int, int]) -> Net:
    """A freshly initialised network ``name`` for ``channels`` x ``size`` inputs."""
    if name not in MODELS:
        raise UnknownModelError(f"Unknown model {name!r}. Models: "
                                f"{', '.join(f'{n} ({d})' for n, d in available_models().items())}.")
    spec = MODELS[name]
    if min(size) < spec.min_size:
        raise SmartsetError(f"Model {name!r} needs images of at least {spec.min_size}x"
                            f"{spec.min_size} pixels, got {size[1]}x{size[0]}: resize them "
                            f"(--size) or pick another model.")
    return spec.build(channels, outputs, tuple(size))
