"""A trainable semantic segmenter: a light U-Net decoder on EfficientNet-Lite's feature maps.

Why this design: the pretrained backbone already sees edges and textures at strides 2, 4, 8
and 16, so a decoder needs only a few small convolutions per scale to turn them into a class
per pixel; LR-ASPP's one global-context gate (a pooled, sigmoid-weighted copy of the deepest
features) is added at stride 16, and a last full-resolution step sees the image itself, so
thin borders and small objects (8 px shapes) are not lost to the stride-2 features. Stages
above stride 16 (192 and 320 channels, then the 1280-channel head) are left out: on images
of a few hundred pixels they add compute, not context. 0.70 M of the backbone's 4.7 M
parameters are kept (the stem and first two stages stay frozen by default: on a CPU their
high-resolution backward pass costs most, and ImageNet's edges serve as they are) and the
decoder adds 0.16 M (:meth:`SegmentationNet.parameter_count`); it trains in minutes on two
CPU cores and uses CUDA when present.

The encoder wrapper below reads the backbone's blocks (``_conv_stem``, ``_bn0``,
``_blocks``, its stage of each block) without changing :mod:`smartset.backbones`.

Functions first: :func:`fit_segmenter` / :class:`Segmenter` over arrays, and the workspace
layer (:func:`train_segmenter`, :func:`predict_segmenter`) recording runs in the catalog
like ``smartset train``: config, seed, software versions, per-epoch history, held-out IoU
and Dice beside the threshold baseline's on the same images; resumable checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from smartset._checkpoint import read_state, save_state
from smartset._progress import progress_bar
from smartset._torch import require_torch
from smartset.learn.errors import CheckpointError, LearnError, NotFittedError

torch = require_torch("smartset.detection.segmenter")
nn = torch.nn
F = torch.nn.functional

__all__ = ["SegmentationNet", "Segmenter", "load_segmenter", "segmentation_loss",
           "workspace_masks", "train_segmenter", "predict_segmenter", "write_masks",
           "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "smartset.segmenter/1"
_HELD_OUT = ("test", "val", "valid", "validation")
_FEATURE_STAGES = (0, 1, 2, 4)  # Lite stages ending at strides 2, 4, 8, 16


# -- the network ------------------------------------------------------------------------------
class _LiteEncoder(nn.Module):
    """EfficientNet-Lite's stem and blocks up to stride 16, returning the feature maps at
    strides 2, 4, 8 and 16 (the last block of stages 0, 1, 2 and 4)."""

    def __init__(self, network):
        super().__init__()
        self.stem_conv, self.stem_bn = network._conv_stem, network._bn0
        stage_of = list(network._stage_of)
        last = max(_FEATURE_STAGES)
        keep = [i for i, s in enumerate(stage_of) if s <= last]
        self.blocks = nn.ModuleList(network._blocks[i] for i in keep)
        for block in self.blocks:  # no stochastic depth: its draws would be unseeded
            block.drop_rate = 0.0
        self.stage_of = [stage_of[i] for i in keep]
        ends = {s: max(i for i in keep if stage_of[i] == s) for s in _FEATURE_STAGES}
        self._taps = sorted(ends.values())
        self.channels = [self.blocks[i]._bn2.num_features for i in self._taps]

    def forward(self, x):
        x = F.relu6(self.stem_bn(self.stem_conv(x)))
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._taps:
                out.append(x)
        return out


def _conv(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SegmentationNet(nn.Module):
    """Lite encoder (strides 2-16) + U-Net decoder with an LR-ASPP context gate at stride
    16 and a full-resolution step over the image. ``forward(x)``: ``(N, 3, H, W)``
    normalised float -> ``(N, n_classes, H, W)`` logits (any ``H``, ``W``)."""

    def __init__(self, n_classes: int, *, backbone: str = "efficientnet_lite0",
                 pretrained: bool = True, width: int = 64, network=None):
        super().__init__()
        if network is None:
            from smartset.backbones import load_backbone

            network, _ = load_backbone(backbone, pretrained=pretrained)
        if not hasattr(network, "_blocks") or not hasattr(network, "_stage_of"):
            raise LearnError(f"The segmenter needs an EfficientNet-Lite backbone "
                             f"(efficientnet_lite0/1/2), got {type(network).__name__}.")
        self.encoder = _LiteEncoder(network)
        c2, c4, c8, c16 = self.encoder.channels
        w = int(width)
        self.context = _conv(c16, w, 1)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c16, w, 1), nn.Sigmoid())
        self.up8 = nn.Sequential(_conv(w + c8, w), _conv(w, w))
        self.up4 = nn.Sequential(_conv(w + c4, w // 2), _conv(w // 2, w // 2))
        self.up2 = _conv(w // 2 + c2, w // 4)
        self.full = nn.Sequential(_conv(w // 4 + 3, w // 4), _conv(w // 4, w // 4))
        self.classifier = nn.Conv2d(w // 4, int(n_classes), 1)
        self.n_classes = int(n_classes)

    def forward(self, x):
        f2, f4, f8, f16 = self.encoder(x)
        y = self.context(f16) * self.gate(f16)
        y = self.up8(torch.cat([_resize(y, f8), f8], 1))
        y = self.up4(torch.cat([_resize(y, f4), f4], 1))
        y = self.up2(torch.cat([_resize(y, f2), f2], 1))
        y = self.full(torch.cat([_resize(y, x), x], 1))
        return self.classifier(y)

    def freeze(self, stages: int) -> list:
        """Freeze the stem and the backbone's first ``stages`` stages (weights and batch-norm
        statistics: their modules are returned, to be kept in eval mode while training).
        The early, high-resolution layers cost most of a backward pass on a CPU and hold
        generic edges, which ImageNet taught well."""
        frozen = [self.encoder.stem_conv, self.encoder.stem_bn] if stages > 0 else []
        frozen += [b for b, s in zip(self.encoder.blocks, self.encoder.stage_of) if s < stages]
        for module in frozen:
            for p in module.parameters():
                p.requires_grad = False
        return frozen

    def parameter_groups(self) -> tuple[list, list]:
        """``(backbone parameters, decoder parameters)``, for their own learning rates."""
        backbone = [p for p in self.encoder.parameters() if p.requires_grad]
        ids = {id(p) for p in self.encoder.parameters()}
        return backbone, [p for p in self.parameters() if id(p) not in ids]

    def parameter_count(self) -> dict:
        backbone, decoder = self.parameter_groups()
        return {"backbone": sum(p.numel() for p in backbone),
                "decoder": sum(p.numel() for p in decoder)}


def _resize(y, like):
    return F.interpolate(y, size=like.shape[-2:], mode="bilinear", align_corners=False)


def segmentation_loss(logits, target, *, dice_weight: float = 1.0):
    """Cross-entropy plus ``dice_weight`` x (1 - mean soft Dice over the classes present in
    the batch's ground truth or predictions): the Dice term keeps small objects from being
    drowned by the background. ``logits`` ``(N, K, H, W)``, ``target`` ``(N, H, W)`` long."""
    ce = F.cross_entropy(logits, target)
    if not dice_weight:
        return ce
    prob = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)
    inter = (prob * onehot).sum((0, 2, 3))
    total = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    dice = (2 * inter + 1.0) / (total + 1.0)
    return ce + dice_weight * (1 - dice[present].mean())


# -- the estimator ----------------------------------------------------------------------------
def _device(device: str | None):
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _as_batch(images) -> list[np.ndarray]:
    """A list of ``H x W x 3`` uint8 arrays from an array ``N x H x W [x C]`` or a list."""
    out = []
    for i, image in enumerate(images):
        a = np.asarray(image)
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, 2)
        elif a.ndim == 3 and a.shape[2] == 1:
            a = np.repeat(a, 3, 2)
        elif a.ndim == 3 and a.shape[2] == 4:
            a = a[:, :, :3]
        if a.ndim != 3 or a.shape[2] != 3:
            raise LearnError(f"image {i}: expected H x W or H x W x 3 pixels, got shape "
                             f"{a.shape}.")
        if a.dtype != np.uint8:
            a = np.clip(a, 0, 255).astype(np.uint8)
        out.append(a)
    return out


class Segmenter:
    """A semantic segmenter over uint8 images and class-id masks (estimator contract).

    ``classes``: ``{mask value: name}`` of the foreground classes given to :meth:`fit`
    (0 is background). ``size``: the side images are resized to for the network (a
    multiple of 16; default: the training images' own size when they all share one,
    else 256); predictions are resized back to each image's size. ``augment``: a policy
    name or object applied per batch to images and masks together (geometric steps move
    the masks, nearest neighbour). ``checkpoint``: written after every epoch (with the
    optimizer, the random state and the history), so ``resume=True`` continues a killed
    run to the same model. ``lr`` is the decoder's; the backbone trains at
    ``lr * backbone_lr``. Randomness comes from ``seed`` alone."""

    def __init__(self, *, backbone: str = "efficientnet_lite0", epochs: int = 20,
                 batch_size: int = 8, lr: float = 1e-2, backbone_lr: float = 0.3,
                 freeze_stages: int = 2,
                 weight_decay: float = 1e-4, size: int | None = None, width: int = 64,
                 dice_weight: float = 1.0, augment=None, seed: int = 0,
                 device: str | None = None, checkpoint: str | Path | None = None,
                 resume: bool = False, init_from: str | Path | None = None,
                 progress: bool | None = None, pretrained: bool = True):
        self.backbone = backbone
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.backbone_lr = backbone_lr
        self.freeze_stages = freeze_stages
        self.weight_decay = weight_decay
        self.size = size
        self.width = width
        self.dice_weight = dice_weight
        self.augment = augment
        self.seed = seed
        self.device = device
        self.checkpoint = checkpoint
        self.resume = resume
        self.init_from = init_from
        self.progress = progress
        self.pretrained = pretrained

    def get_params(self) -> dict:
        keys = ("backbone", "epochs", "batch_size", "lr", "backbone_lr", "freeze_stages",
                "weight_decay",
                "size", "width", "dice_weight", "seed", "pretrained")
        params = {k: getattr(self, k) for k in keys}
        params["augment"] = _policy_label(self.augment)
        params["init_from"] = None if self.init_from is None else str(self.init_from)
        return params

    def _check_options(self) -> None:
        for name in ("epochs", "batch_size", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise LearnError(f"Segmenter: {name} must be a positive integer, got {value!r}.")
        if not (self.lr > 0 and self.backbone_lr >= 0):
            raise LearnError(f"Segmenter: lr must be > 0 and backbone_lr >= 0, got {self.lr}, "
                             f"{self.backbone_lr}.")
        if self.size is not None and (int(self.size) < 32 or int(self.size) % 16):
            raise LearnError(f"Segmenter: size must be a multiple of 16, at least 32; got "
                             f"{self.size}.")

    # -- training -----------------------------------------------------------------------------
    def fit(self, images, masks, classes: Mapping[int, str]) -> Segmenter:
        """Train on ``images`` (``N x H x W x 3`` uint8, or a list of such arrays of any
        sizes) and ``masks`` (``N x H x W`` integer class values, each matching its image;
        values not in ``classes`` and not 0 are an error). Returns ``self``."""
        self._check_options()
        images = _as_batch(images)
        masks = [np.asarray(m) for m in masks]
        if len(images) != len(masks) or not images:
            raise LearnError(f"fit needs one mask per image and at least one image; got "
                             f"{len(images)} images and {len(masks)} masks.")
        values = sorted(int(k) for k in classes)
        if 0 in values:
            raise LearnError("classes name the foreground values; 0 is the background.")
        lookup = np.zeros(256, np.int64) - 1
        lookup[0] = 0
        for index, value in enumerate(values, 1):
            lookup[value] = index
        for i, (image, mask) in enumerate(zip(images, masks)):
            if mask.shape != image.shape[:2]:
                raise LearnError(f"mask {i} is {mask.shape}, its image {image.shape[:2]}.")
            if mask.size and (mask.min() < 0 or mask.max() > 255 or (lookup[mask] < 0).any()):
                found = sorted(set(np.unique(mask).tolist()) - {0, *values})
                raise LearnError(f"mask {i} holds value(s) {found[:5]} that classes do not "
                                 f"name ({values}).")
        self.values_ = [0] + values
        self.classes_ = {0: "background", **{int(k): str(v) for k, v in classes.items()}}
        shapes = {m.shape for m in masks}
        size = self.size or (_round16(max(next(iter(shapes)))) if len(shapes) == 1 else 256)
        self.size_ = int(size)
        from smartset.backbones import backbone_spec

        spec = backbone_spec(self.backbone)
        self.mean_, self.std_ = list(spec.mean), list(spec.std)
        x = torch.from_numpy(np.stack([_fit_image(a, self.size_) for a in images]))
        y = torch.from_numpy(np.stack([lookup[_fit_mask(m, self.size_)] for m in masks])
                             .astype(np.uint8))
        self._train(x.permute(0, 3, 1, 2).contiguous(), y)
        return self

    def _build(self, n_classes: int):
        # the new layers' initial weights come from the seed, not torch's global generator
        # (which fork_rng leaves as it found it)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            network = SegmentationNet(n_classes, backbone=self.backbone, width=self.width,
                                      pretrained=self.pretrained and self.init_from is None)
        if self.init_from is not None:
            source = _read_checkpoint(self.init_from)
            mine = network.state_dict()
            taken = {k: v for k, v in source["state_dict"].items()
                     if k in mine and mine[k].shape == v.shape}
            network.load_state_dict(taken, strict=False)
        return network

    def _train(self, x, y) -> None:
        device = _device(self.device)
        network = self._build(len(self.values_)).to(device)
        frozen = network.freeze(int(self.freeze_stages))
        backbone, decoder = network.parameter_groups()
        optimizer = torch.optim.AdamW(
            [{"params": backbone, "lr": self.lr * self.backbone_lr},
             {"params": decoder, "lr": self.lr}], weight_decay=self.weight_decay)
        base_lrs = [g["lr"] for g in optimizer.param_groups]
        generator = torch.Generator().manual_seed(int(self.seed))
        policy = _resolve_policy(self.augment)
        self.history_, start = [], 0
        checkpoint = Path(self.checkpoint) if self.checkpoint else None
        elapsed = 0.0
        if checkpoint is not None and self.resume and checkpoint.exists():
            state = _read_checkpoint(checkpoint)
            if state.get("finished"):
                self._restore(state)
                return
            network.load_state_dict(state["state_dict"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            self.history_, start = list(state["history"]), int(state["epoch"]) + 1
            elapsed = float(state.get("train_seconds") or 0.0)
        n = len(x)
        steps = math.ceil(n / self.batch_size)
        mean = torch.tensor(self.mean_, device=device).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.std_, device=device).view(1, 3, 1, 1) * 255
        wall0, cpu0 = time.perf_counter(), time.process_time()
        network.train()
        for module in frozen:
            module.eval()
        with progress_bar((self.epochs - start) * steps, "training segmenter",
                          enabled=self.progress) as advance:
            for epoch in range(start, self.epochs):
                order = torch.randperm(n, generator=generator)
                total, seen = 0.0, 0
                for first in range(0, n, self.batch_size):
                    rows = order[first:first + self.batch_size]
                    if len(rows) < 2 and n > 1:  # batch norm needs two samples
                        rows = torch.cat([rows, order[:1]])
                    images, masks = x[rows], y[rows]
                    if policy is not None:
                        from smartset.augment.targets import Masks

                        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
                        images, moved = policy((images, Masks(masks[:, None])), seed=seed)
                        masks = moved.data[:, 0]
                    step = epoch * steps + first // self.batch_size
                    for group, base in zip(optimizer.param_groups, base_lrs):
                        group["lr"] = base * 0.5 * (1 + math.cos(math.pi * step /
                                                                 (self.epochs * steps)))
                    inputs = (images.to(device).float() - mean) / std
                    logits = network(inputs)
                    loss = segmentation_loss(logits, masks.to(device).long(),
                                             dice_weight=self.dice_weight)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * len(rows)
                    seen += len(rows)
                    advance(1, f"segmenter epoch {epoch + 1}/{self.epochs} loss "
                               f"{total / seen:.4f}")
                seconds = elapsed + time.perf_counter() - wall0
                self.history_.append({"epoch": epoch + 1, "loss": round(total / seen, 5),
                                      "seconds": round(seconds, 3)})
                if checkpoint is not None:
                    _atomic_save({**self._meta(), "finished": False, "epoch": epoch,
                                  "state_dict": _cpu_state(network),
                                  "optimizer": optimizer.state_dict(),
                                  "generator": generator.get_state(),
                                  "train_seconds": seconds}, checkpoint)
        network.eval()
        self.network_ = network
        self.train_seconds_ = elapsed + time.perf_counter() - wall0
        self.train_cpu_seconds_ = time.process_time() - cpu0
        if checkpoint is not None:
            self.save(checkpoint)

    # -- prediction ---------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise NotFittedError("This Segmenter is not fitted: call fit(images, masks, "
                                 "classes) or load_segmenter(path) first.")

    def predict_proba(self, images, *, batch_size: int = 16) -> list[np.ndarray]:
        """Per image, ``K x H x W`` float32 class probabilities (``K = len(values_)``,
        index 0 background) at the image's own size."""
        self._check_fitted()
        images = _as_batch(images)
        network = self.network_
        device = next(network.parameters()).device
        mean = torch.tensor(self.mean_, device=device).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.std_, device=device).view(1, 3, 1, 1) * 255
        out = []
        with torch.inference_mode():
            for first in range(0, len(images), batch_size):
                chunk = images[first:first + batch_size]
                x = torch.from_numpy(np.stack([_fit_image(a, self.size_) for a in chunk]))
                x = (x.permute(0, 3, 1, 2).to(device).float() - mean) / std
                logits = network(x)
                for a, row in zip(chunk, logits):
                    if row.shape[-2:] != a.shape[:2]:
                        row = F.interpolate(row[None], size=a.shape[:2], mode="bilinear",
                                            align_corners=False)[0]
                    out.append(row.softmax(0).float().cpu().numpy())
        return out

    def predict(self, images, *, batch_size: int = 16) -> list[np.ndarray]:
        """Per image, an ``H x W`` uint8 mask of class values (0 background), the values
        of the ``classes`` given to :meth:`fit`."""
        self._check_fitted()
        values = np.asarray(self.values_, np.uint8)
        return [values[p.argmax(0)] for p in self.predict_proba(images, batch_size=batch_size)]

    def score(self, images, masks) -> dict:
        """:func:`~smartset.detection.evaluation.segmentation_metrics` of the predictions."""
        from smartset.detection.evaluation import segmentation_metrics

        return segmentation_metrics(list(masks), self.predict(images), classes=self.classes_)

    # -- checkpoints --------------------------------------------------------------------------
    def _meta(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "params": self.get_params(),
                "values": list(self.values_), "classes": {str(k): v for k, v in
                                                          self.classes_.items()},
                "size": self.size_, "mean": self.mean_, "std": self.std_,
                "history": list(self.history_)}

    def save(self, path: str | Path) -> Path:
        """Write the fitted segmenter (weights, classes, preprocessing) atomically."""
        self._check_fitted()
        return _atomic_save({**self._meta(), "finished": True,
                             "state_dict": _cpu_state(self.network_),
                             "train_seconds": getattr(self, "train_seconds_", None)}, Path(path))

    def _restore(self, state: dict) -> Segmenter:
        self.values_ = [int(v) for v in state["values"]]
        self.classes_ = {int(k): v for k, v in state["classes"].items()}
        self.size_, self.mean_, self.std_ = int(state["size"]), state["mean"], state["std"]
        self.history_ = list(state["history"])
        self.train_seconds_ = state.get("train_seconds")
        network = SegmentationNet(len(self.values_), backbone=self.backbone, width=self.width,
                                  pretrained=False)
        try:
            network.load_state_dict(state["state_dict"])
        except RuntimeError as error:
            raise CheckpointError(f"The segmenter checkpoint does not match its architecture: "
                                  f"{str(error)[:160]}") from None
        self.network_ = network.to(_device(self.device)).eval()
        return self


def load_segmenter(path: str | Path, *, device: str | None = None) -> Segmenter:
    """A fitted :class:`Segmenter` from a checkpoint written by ``save`` or a finished run."""
    state = _read_checkpoint(path)
    if not state.get("finished"):
        raise CheckpointError(f"{path} is the state of an unfinished training run: resume it "
                              f"('smartset segment train --resume RUN') before using it.")
    params = {k: v for k, v in state["params"].items() if k not in ("augment", "init_from")}
    return Segmenter(**params, device=device)._restore(state)


def _round16(side: int) -> int:
    return max(32, int(math.ceil(side / 16) * 16))


def _fit_image(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[:2] == (size, size):
        return image
    import cv2

    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA
                      if max(image.shape[:2]) > size else cv2.INTER_LINEAR)


def _fit_mask(mask: np.ndarray, size: int) -> np.ndarray:
    if mask.shape[:2] == (size, size):
        return mask
    import cv2

    return cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)


def _cpu_state(network) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()}


_atomic_save = save_state  # the one atomic checkpoint writer (smartset._checkpoint)


def _read_checkpoint(path: str | Path) -> dict:
    return read_state(
        path, format=CHECKPOINT_FORMAT, error=CheckpointError,
        missing="No segmenter checkpoint at {path}: give a .pt file written by 'smartset "
                "segment train' (see 'smartset runs').",
        damaged="Checkpoint {path} cannot be read ({reason}): it is damaged or not a smartset "
                "checkpoint. Train again.",
        foreign="{path} is not a smartset segmenter checkpoint (format '{format}' expected); "
                "'smartset train' models classify, they do not segment.")


def _policy_label(augment):
    if augment is None or isinstance(augment, str):
        return augment
    label = getattr(augment, "label", None)
    return label() if callable(label) else (label or repr(augment))


def _resolve_policy(augment):
    if augment is None or augment == "original":
        return None
    from smartset.augment.policy import resolve_policy

    return resolve_policy(augment)


# -- the workspace layer ----------------------------------------------------------------------
def workspace_masks(ws, version: str | None = None) -> dict:
    """The class-value masks of a version's annotated images, painted as ``detect
    evaluate-masks`` paints its ground truth (polygons and RLEs; a box-only object fills its
    box): ``{"ids", "paths", "relpaths", "splits", "masks", "classes"}`` (lists in
    ``relpath`` order; ``classes`` ``{category number: name}``). Images without any
    annotation are left out, as evaluate-masks leaves them out."""
    from smartset.detection import _rle
    from smartset.detection.store import annotations, categories

    ann = annotations(ws, version)
    if ann.empty or not any(s is not None and (isinstance(s, dict) or len(s))
                            for s in ann["segmentation"]):
        raise LearnError(f"{'Version ' + repr(version) if version else 'The workspace'} has no "
                         f"masks to learn from: import COCO polygons or RLEs, mask PNGs or "
                         f"image/mask pairs first ('smartset annotations import').")
    cats = categories(ws)
    numbers = {name: n for n, name in cats.items()}
    out = {"ids": [], "paths": [], "relpaths": [], "splits": [], "masks": [], "signatures": [],
           "classes": {int(n): str(name) for n, name in cats.items() if 0 < n < 256},
           "box_only_objects": int(sum(not (isinstance(s, dict) or (s is not None and len(s)))
                                       for s in ann["segmentation"]))}
    for (sid, path, rel, split, h, w), group in ann.groupby(
            ["sample_id", "path", "relpath", "split", "height", "width"], sort=False,
            dropna=False):
        out["ids"].append(sid)
        out["signatures"].append(json.dumps(sorted(
            (r.category, round(r.x), round(r.y), round(r.w), round(r.h))
            for r in group.itertuples())))
        out["paths"].append(path)
        out["relpaths"].append(rel)
        out["splits"].append(split)
        out["masks"].append(_rle.paint([(numbers[r.category], r.segmentation,
                                         (r.x, r.y, r.w, r.h)) for r in group.itertuples()],
                                       int(h), int(w)))
    return out


def _holdout(ws, data: dict, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Training and held-out rows: the version's test/val split if it has one, else a
    seeded ``test_fraction`` of the duplicate groups (an original, its augmented copies, its
    byte or audit duplicates, and images with the same annotations stay on one side);
    copies are never scored."""
    from smartset.learn._workspace import derived_mask, duplicate_groups

    splits = np.array([str(s).lower() for s in data["splits"]])
    held = np.isin(splits, _HELD_OUT)
    derived = derived_mask(ws, data["ids"])
    if held.any() and (~held).any():
        return np.flatnonzero(~held), np.flatnonzero(held & ~derived), "the version's test split"
    if not 0 < test_fraction < 1:
        raise LearnError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    keys = _scene_groups(duplicate_groups(ws, data["ids"]).astype(str), data["signatures"])
    originals = sorted(set(keys[~derived].tolist()))
    rng = np.random.default_rng(seed)
    count = max(1, int(round(test_fraction * len(originals)))) if len(originals) > 1 else 0
    chosen = set(rng.permutation(originals)[:count].tolist())
    test = np.isin(keys, list(chosen))
    return (np.flatnonzero(~test), np.flatnonzero(test & ~derived),
            f"a seeded {test_fraction:.0%} of the images (seed {seed})")


def _scene_groups(keys: np.ndarray, signatures: Sequence[str]) -> np.ndarray:
    """Merge duplicate groups whose images carry the same annotations (the same objects in
    the same places: one scene under other light, like ``synth shapes --conditions``), so a
    scene is never both trained on and scored."""
    parent = {k: k for k in keys}

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    first: dict[str, str] = {}
    for key, signature in zip(keys, signatures):
        other = first.setdefault(signature, key)
        parent[find(key)] = find(other)
    return np.array([find(k) for k in keys])


def _load_images(paths: Sequence[str]) -> list[np.ndarray]:
    from smartset.imageio import load_image

    return [load_image(p, mode="RGB") for p in paths]


def _run_settings(ws, run_id: int) -> dict:
    runs = ws.runs()
    found = runs[runs["id"] == int(run_id)]
    if found.empty:
        raise LearnError(f"No run {run_id} to resume. See 'smartset runs'.")
    row = found.iloc[0]
    if row["command"] != "segment train":
        raise LearnError(f"Run {run_id} is a '{row['command']}' run: resume a 'segment train' "
                         f"run (see 'smartset runs').")
    return dict(row["config"])


def train_segmenter(ws, version: str | None = None, *, test_fraction: float = 0.2,
                    seed: int = 0, resume_run: int | None = None,
                    progress: bool | None = None, **options) -> dict:
    """Train a :class:`Segmenter` on a version's masks (:func:`workspace_masks`) and score
    it on held-out images (:func:`_holdout`) beside the threshold baseline on the same
    images. The run (command ``segment train``) records its config, seed, software
    versions, per-epoch history, wall and CPU time, held-out IoU/Dice and the checkpoint
    ``models/run-N/segmenter.pt`` (written after every epoch). ``resume_run`` continues a
    killed run with its own settings. ``options`` go to :class:`Segmenter` (epochs,
    batch_size, lr, size, augment, backbone, device, ...)."""
    from smartset._atomic import write_text
    from smartset.detection.evaluation import segmentation_metrics
    from smartset.detection.synth import baseline_segmenter
    from smartset.learn._workspace import run_dir

    if resume_run is not None:
        stored = _run_settings(ws, resume_run)
        version, test_fraction, seed = stored["version"], stored["test_fraction"], stored["seed"]
        device = options.get("device")
        options = {**stored["options"], **({"device": device} if device else {})}
    unknown = sorted(set(options) - set(Segmenter().get_params()) - {"device"})
    if unknown:
        raise LearnError(f"Unknown segmenter option(s) {unknown}; options: "
                         f"{', '.join(sorted(Segmenter().get_params()))}, device.")
    data = workspace_masks(ws, version)
    train_rows, test_rows, holdout = _holdout(ws, data, test_fraction, seed)
    if not len(train_rows):
        raise LearnError("No images left to train on: the held-out split holds them all.")
    config = {"stage": "segment train", "version": version, "test_fraction": test_fraction,
              "seed": seed, "holdout": holdout, "n_train": int(len(train_rows)),
              "n_test": int(len(test_rows)), "classes": data["classes"],
              "box_only_objects": data["box_only_objects"],
              "options": {k: v for k, v in options.items() if k != "device"}}
    run_id = int(resume_run) if resume_run is not None else \
        ws.catalog.start_run("segment train", config, seed=seed)
    out_dir = run_dir(ws, run_id)
    checkpoint = out_dir / "segmenter.pt"
    with ws.catalog.failing_run(run_id):
        write_text(out_dir / "train_ids.json",
                   json.dumps([data["ids"][i] for i in train_rows]))
        model = Segmenter(**options, seed=seed, checkpoint=checkpoint,
                          resume=resume_run is not None, progress=progress)
        images = _load_images([data["paths"][i] for i in train_rows])
        cpu = time.process_time()
        model.fit(images, [data["masks"][i] for i in train_rows], data["classes"])
        metrics = {"history": model.history_, "train_seconds": round(model.train_seconds_, 3),
                   "train_cpu_seconds": round(time.process_time() - cpu, 3),
                   "loadavg": list(os.getloadavg()), "checkpoint":
                   str(checkpoint.relative_to(ws.path)), "holdout": holdout,
                   "n_train": int(len(train_rows)), "n_test": int(len(test_rows))}
        if len(test_rows):
            images = _load_images([data["paths"][i] for i in test_rows])
            truth = [data["masks"][i] for i in test_rows]
            numbers = {name: n for n, name in data["classes"].items()}
            metrics["test"] = segmentation_metrics(truth, model.predict(images),
                                                   classes=data["classes"])
            metrics["baseline"] = segmentation_metrics(
                truth, [baseline_segmenter(a, numbers) for a in images],
                classes=data["classes"])
        ws.catalog.finish_run(run_id, metrics)
    return {"run_id": run_id, "config": config, **metrics}


def _model_path(ws, model) -> Path:
    from smartset.learn._workspace import run_dir

    if isinstance(model, int) or (isinstance(model, str) and model.isdigit()):
        if ws is None:
            raise LearnError(f"Run {model} needs a workspace (-w); or give a checkpoint path.")
        return run_dir(ws, int(model)) / "segmenter.pt"
    return Path(model)


def write_masks(out: str | Path, relpaths: Sequence[str], masks: Sequence[np.ndarray],
                classes: Mapping[int, str], *, scores: Sequence[Mapping[int, float]] | None = None,
                image_ids: Sequence | None = None) -> dict:
    """Write each mask as ``out/RELPATH.png`` (class values, what ``detect evaluate-masks``
    reads) and all of them as ``out/masks.json``: COCO results with one RLE per class
    present per image (``image_id``, ``file_name``, ``category_id``, ``category``,
    ``segmentation``, ``bbox``, ``area``, ``score``: ``scores[i][value]`` if given, e.g. the
    class's mean probability over its pixels, else 1). Every file is written atomically.
    Returns the paths and counts."""
    from PIL import Image

    from smartset._atomic import atomic_path, write_text
    from smartset.detection import _rle

    out = Path(out)
    results, written = [], {}
    for i, (rel, mask) in enumerate(zip(relpaths, masks)):
        parts = Path(rel).parts
        if Path(rel).is_absolute() or ".." in parts:
            raise LearnError(f"Refusing to write a mask outside '{out}' for '{rel}'.")
        target = (out / rel).with_suffix(".png")
        if target in written:
            raise LearnError(f"'{written[target]}' and '{rel}' would both be written as "
                             f"'{target}': rename one of them (or predict them apart).")
        written[target] = rel
        with atomic_path(target) as tmp:
            Image.fromarray(np.asarray(mask, np.uint8)).save(tmp, format="PNG",
                                                            compress_level=1)
        for value in sorted(set(np.unique(mask).tolist()) - {0}):
            region = mask == value
            rle = _rle.encode(region)
            score = float(scores[i].get(int(value), 1.0)) if scores is not None else 1.0
            results.append({"image_id": image_ids[i] if image_ids is not None else i + 1,
                            "file_name": rel, "category_id": int(value),
                            "category": classes.get(int(value), str(value)),
                            "segmentation": rle, "bbox": list(_rle.rle_bbox(rle)),
                            "area": int(region.sum()), "score": round(score, 4)})
    write_text(out / "masks.json", json.dumps(results))
    return {"out": str(out), "images": len(masks), "regions": len(results),
            "coco": str(out / "masks.json")}


def predict_segmenter(model, out: str | Path, *, ws=None, version: str | None = None,
                      folder: str | Path | None = None, device: str | None = None,
                      batch_size: int = 16) -> dict:
    """Predict masks with ``model`` (a checkpoint path, a trained segmenter, or a ``segment
    train`` run id with ``ws``) for a workspace version's images (``ws``, ``version``) or
    every image under ``folder``, and write them with :func:`write_masks` (``image_id`` is
    the id a COCO export of the version gives the image). With ``ws``, a ``segment
    predict`` run is recorded."""
    from smartset.imageio import IMAGE_EXTENSIONS

    segmenter = model if isinstance(model, Segmenter) else load_segmenter(
        _model_path(ws, model), device=device)
    if folder is not None:
        root = Path(folder)
        if not root.is_dir():
            raise LearnError(f"'{root}' is not a folder of images: give a folder, or a "
                             f"workspace version.")
        files = sorted(p for p in root.rglob("*") if p.is_file()
                       and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise LearnError(f"No images under '{root}' (extensions: "
                             f"{', '.join(sorted(IMAGE_EXTENSIONS))}).")
        paths = [str(p) for p in files]
        relpaths = [p.relative_to(root).as_posix() for p in files]
        image_ids = list(range(1, len(files) + 1))
    elif ws is not None:
        from smartset.detection.evaluation import ground_truth

        _, images = ground_truth(ws, version)
        paths, relpaths = list(images["path"]), list(images["relpath"])
        image_ids = [int(v) for v in images["coco_id"]]
    else:
        raise LearnError("Give a workspace version or a folder of images to predict.")
    run_id = None
    if ws is not None:
        run_id = ws.catalog.start_run("segment predict", {
            "model": str(model) if not isinstance(model, Segmenter) else "in memory",
            "version": version, "folder": None if folder is None else str(folder),
            "out": str(out)})
    started = time.perf_counter()
    written = {"out": str(out), "images": 0, "regions": 0, "coco": str(Path(out) / "masks.json")}
    with (ws.catalog.failing_run(run_id) if run_id is not None else nullcontext()):
        masks, scores = [], []
        values = np.asarray(segmenter.values_, np.uint8)
        for first in range(0, len(paths), batch_size):
            chunk = _load_images(paths[first:first + batch_size])
            for p in segmenter.predict_proba(chunk, batch_size=batch_size):
                best = p.argmax(0)
                masks.append(values[best])
                scores.append({int(values[k]): float(p[k][best == k].mean())
                               for k in np.unique(best) if k})
        written = write_masks(out, relpaths, masks, segmenter.classes_, scores=scores,
                              image_ids=image_ids)
        written["seconds"] = round(time.perf_counter() - started, 3)
        if run_id is not None:
            ws.catalog.finish_run(run_id, written)
    return {"run_id": run_id, **written}
