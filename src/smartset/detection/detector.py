"""A compact trainable detector: CenterNet-style heads over a small feature pyramid of the
pretrained EfficientNet-Lite0, with its loss, decoding, and the box operations it needs.

Written here rather than taken from torchvision: torchvision's detection models need a
5.5 GB torch/torchvision build this project does not ship (and torchvision does not import
here), and its two-stage models are far too slow to train on a 2-core CPU. CenterNet
(Zhou et al., "Objects as Points", 2019) is the smallest design that detects objects of
8 to 100 pixels: one heatmap per class, a box size and a sub-cell offset per location,
peaks taken by a 3x3 max-pool. A class-wise NMS (written here, vectorised, tested against
a brute-force loop and the evaluation's IoU) removes the rare double peaks.

Features: the Lite0 blocks up to stride 16 (``stride_features``), a top-down merge to
stride 8 (or 4), a 3x3 convolution, then the three heads. The backbone's batch norms keep
their ImageNet statistics (frozen: batches are small) and stochastic depth is off, so a
training step depends only on its inputs, which makes a resumed run reproduce a
straight one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from smartset._torch import require_torch

torch = require_torch("smartset.detection.detector")
nn = torch.nn
F = torch.nn.functional

__all__ = ["box_iou", "nms", "batched_nms", "LiteFeatures", "CenterNet", "build_detector",
           "centernet_targets", "centernet_loss", "decode", "DETECTOR_FORMAT"]

DETECTOR_FORMAT = "smartset.detector/1"


# -- box operations (xyxy, pixel edges) ----------------------------------------------------------
def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes ``a`` (``M x 4``) and ``b`` (``N x 4``), corners ``x1, y1, x2, y2``:
    an ``M x N`` tensor (0 where the union is empty)."""
    a, b = a.reshape(-1, 4), b.reshape(-1, 4)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes (``N x 4`` xyxy), by
    falling score; a box is dropped when it overlaps a kept, higher-scoring box by IoU
    above ``iou_threshold``. Ties keep the lower index first (stable sort)."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    overlap = box_iou(boxes[order], boxes[order]) > iou_threshold
    alive = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    overlap = overlap.cpu().numpy()
    alive_np = alive.cpu().numpy()
    for i in range(len(order)):
        if alive_np[i]:
            alive_np[i + 1:] &= ~overlap[i, i + 1:]
    return order[torch.from_numpy(alive_np).to(boxes.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """:func:`nms` within each class (boxes of different classes never suppress each
    other), by offsetting each class's boxes apart. Indices by falling score."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    offset = classes.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offset, scores, iou_threshold)


# -- network ---------------------------------------------------------------------------------
class LiteFeatures(nn.Module):
    """EfficientNet-Lite's stem and blocks as a feature extractor: ``forward`` gives the
    maps at strides 4, 8 and 16 (24, 40 and 112 channels for Lite0). The blocks past
    stride 16 and the classifier head are left out (not computed). ``freeze_early``: the
    stem and the stride-2/4 blocks keep their ImageNet weights (edges and colours need no
    retraining; it takes a third off a training step on CPU)."""

    def __init__(self, network, *, freeze_early: bool = True):
        super().__init__()
        stages = network.stages()[:-1]          # stem + seven stages (head dropped)
        self.stem = stages[0]
        self.stage4 = nn.Sequential(*stages[1:3])    # strides 2, 4
        self.stage8 = stages[3]                      # stride 8
        self.stage16 = nn.Sequential(*stages[4:6])   # stride 16
        self.channels = (_out_channels(stages[2]), _out_channels(stages[3]),
                         _out_channels(stages[5]))
        for block in self.modules():
            if hasattr(block, "drop_rate"):
                block.drop_rate = 0.0
        if freeze_early:
            for p in [*self.stem.parameters(), *self.stage4.parameters()]:
                p.requires_grad_(False)

    def forward(self, x):
        c4 = self.stage4(self.stem(x))
        c8 = self.stage8(c4)
        return c4, c8, self.stage16(c8)


def _out_channels(stage) -> int:
    return [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features


def _conv(cin, cout, k=3):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CenterNet(nn.Module):
    """Backbone features -> top-down merge to ``stride`` (8 or 4) -> heads: ``heatmap``
    (one channel per class, logits), ``size`` (log of width and height in pixels / stride)
    and ``offset`` (the centre's position inside its cell, 0..1). Input: float
    ``N x 3 x H x W``, normalised, ``H`` and ``W`` multiples of 16."""

    def __init__(self, features: LiteFeatures, num_classes: int, *, stride: int = 8,
                 width: int = 64):
        super().__init__()
        if stride not in (4, 8):
            raise ValueError(f"stride must be 4 or 8, got {stride}")
        self.features = features
        self.stride = stride
        c4, c8, c16 = features.channels
        self.lateral16 = nn.Conv2d(c16, width, 1)
        self.lateral8 = nn.Conv2d(c8, width, 1)
        self.lateral4 = nn.Conv2d(c4, width, 1) if stride == 4 else None
        self.smooth = _conv(width, width)
        self.heatmap = nn.Sequential(_conv(width, width), nn.Conv2d(width, num_classes, 1))
        self.size = nn.Sequential(_conv(width, width), nn.Conv2d(width, 2, 1))
        self.offset = nn.Sequential(_conv(width, width), nn.Conv2d(width, 2, 1))
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - 0.1) / 0.1))

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.features.modules():           # frozen ImageNet statistics
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, x):
        c4, c8, c16 = self.features(x)
        p = self.lateral8(c8) + F.interpolate(self.lateral16(c16), size=c8.shape[-2:],
                                              mode="nearest")
        if self.stride == 4:
            p = self.lateral4(c4) + F.interpolate(p, size=c4.shape[-2:], mode="nearest")
        p = self.smooth(p)
        return {"heatmap": self.heatmap(p), "size": self.size(p),
                "offset": torch.sigmoid(self.offset(p))}


def build_detector(num_classes: int, *, backbone: str = "efficientnet_lite0",
                   stride: int = 8, width: int = 64, pretrained: bool = True) -> CenterNet:
    """A :class:`CenterNet` over ``backbone``'s features (a registered Lite backbone; its
    ImageNet weights read offline when ``pretrained``)."""
    from smartset.backbones import load_backbone

    network, _ = load_backbone(backbone, pretrained=pretrained)
    model = CenterNet(LiteFeatures(network), num_classes, stride=stride, width=width)
    return model.to(memory_format=torch.channels_last)  # about 1.4x faster on CPU


# -- targets and loss --------------------------------------------------------------------------
def centernet_targets(boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray], *,
                      num_classes: int, shape: tuple[int, int], stride: int,
                      alpha: float = 0.54) -> dict:
    """Training targets of a batch: ``boxes[i]`` (``M x 4`` xyxy pixels) and ``labels[i]``
    (class numbers 0..K-1) of image ``i``; ``shape`` the input ``(H, W)``. Each object puts
    an elliptic Gaussian (sigma = ``alpha`` x its size / 6 per axis, TTFNet's choice) on
    its class's heatmap, and its log size and centre offset at its centre cell."""
    height, width = shape[0] // stride, shape[1] // stride
    n = len(boxes)
    heat = np.zeros((n, num_classes, height, width), np.float32)
    size = np.zeros((n, 2, height, width), np.float32)
    offset = np.zeros((n, 2, height, width), np.float32)
    mask = np.zeros((n, 1, height, width), np.float32)
    ys, xs = np.arange(height, dtype=np.float32)[:, None], np.arange(width, dtype=np.float32)
    for i, (bb, ll) in enumerate(zip(boxes, labels)):
        bb = np.asarray(bb, np.float32).reshape(-1, 4) / stride
        areas = (bb[:, 2] - bb[:, 0]) * (bb[:, 3] - bb[:, 1])
        for j in np.argsort(-areas):             # small objects written last, kept on top
            x1, y1, x2, y2 = bb[j]
            w, h = x2 - x1, y2 - y1
            if w <= 0 or h <= 0:
                continue
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            ix, iy = min(int(cx), width - 1), min(int(cy), height - 1)
            sx, sy = max(alpha * w / 6, 0.3), max(alpha * h / 6, 0.3)
            g = np.exp(-((xs - ix) ** 2) / (2 * sx * sx) - ((ys - iy) ** 2) / (2 * sy * sy))
            c = int(ll[j])
            np.maximum(heat[i, c], g, out=heat[i, c])
            heat[i, c, iy, ix] = 1.0
            size[i, :, iy, ix] = (math.log(w), math.log(h))
            offset[i, :, iy, ix] = (cx - ix, cy - iy)
            mask[i, 0, iy, ix] = 1.0
    return {k: torch.from_numpy(v) for k, v in
            (("heatmap", heat), ("size", size), ("offset", offset), ("mask", mask))}


def centernet_loss(out: dict, target: dict) -> tuple[torch.Tensor, dict]:
    """CenterNet's loss: penalty-reduced focal loss on the heatmap (alpha 2, beta 4) plus
    L1 on log sizes and offsets at object centres, each averaged over the objects."""
    logits = out["heatmap"]
    gt = target["heatmap"].to(logits.device)
    pos = gt.eq(1).float()
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    pos_loss = -(log_p * (1 - p) ** 2 * pos).sum()
    neg_loss = -(log_not_p * p ** 2 * (1 - gt) ** 4 * (1 - pos)).sum()
    n = pos.sum().clamp(min=1)
    mask = target["mask"].to(logits.device)
    m = mask.sum().clamp(min=1)
    size_loss = (F.l1_loss(out["size"], target["size"].to(logits.device), reduction="none")
                 * mask).sum() / m
    offset_loss = (F.l1_loss(out["offset"], target["offset"].to(logits.device),
                             reduction="none") * mask).sum() / m
    heat_loss = (pos_loss + neg_loss) / n
    total = heat_loss + size_loss + offset_loss
    return total, {"heatmap": float(heat_loss.detach()), "size": float(size_loss.detach()),
                   "offset": float(offset_loss.detach())}


# -- decoding --------------------------------------------------------------------------------
@torch.no_grad()
def decode(out: dict, *, stride: int, top_k: int = 100, score_threshold: float = 0.05,
           iou_threshold: float = 0.6) -> list[dict]:
    """Detections per image from the network's outputs: heatmap peaks (a 3x3 max-pool
    keeps local maxima), the ``top_k`` best per image above ``score_threshold``, boxes
    from size and offset, then class-wise NMS at ``iou_threshold``. Each image gives
    ``{"boxes": K x 4 xyxy pixels of the input, "scores": K, "labels": K}`` (tensors,
    by falling score)."""
    heat = torch.sigmoid(out["heatmap"])
    peaks = heat * (F.max_pool2d(heat, 3, 1, 1) == heat)
    n, classes, height, width = heat.shape
    results = []
    for i in range(n):
        flat = peaks[i].reshape(-1)
        k = min(top_k, flat.numel())
        scores, index = flat.topk(k)
        keep = scores >= score_threshold
        scores, index = scores[keep], index[keep]
        label = index // (height * width)
        cell = index % (height * width)
        iy, ix = (cell // width).float(), (cell % width).float()
        ox = out["offset"][i, 0].reshape(-1)[cell]
        oy = out["offset"][i, 1].reshape(-1)[cell]
        w = torch.exp(out["size"][i, 0].reshape(-1)[cell].clamp(max=8))
        h = torch.exp(out["size"][i, 1].reshape(-1)[cell].clamp(max=8))
        cx, cy = ix + ox, iy + oy
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1) * stride
        kept = batched_nms(boxes, scores, label, iou_threshold)
        results.append({"boxes": boxes[kept], "scores": scores[kept], "labels": label[kept]})
    return results
