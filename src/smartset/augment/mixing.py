"""MixUp and CutMix: batch-level online training transforms that mix images and labels.

Unlike the registered transforms they act across samples (a sample's result depends on its
partner in the batch), so they are not per-sample transforms: they run on a training batch
after the per-sample policy, as torchvision v2's ``MixUp``/``CutMix`` and timm's ``Mixup``
do, and turn labels into soft targets (``N x K`` float32, rows summing to 1) for a
cross-entropy loss that takes probabilities.

One draw per batch (torchvision's rule): ``lam ~ Beta(alpha, alpha)``, the partner of
sample ``i`` is sample ``i - 1`` (the batch rolled by one). MixUp blends
``lam * x_i + (1 - lam) * x_partner``; CutMix pastes the partner's box of area share
``1 - lam`` (centre uniform, clipped to the image) and sets ``lam`` to the share left.
The parameters are a plain JSON dict (``params``), and :meth:`BatchMix.apply` replays them.

    >>> mix = BatchMix(mixup=0.2, cutmix=1.0)                 # doctest: +SKIP
    >>> images, soft = mix(images, labels, num_classes=10, seed=0)   # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from smartset._torch import require_torch

torch = require_torch("smartset.augment")

from smartset.augment._validation import Bound, check_params
from smartset.augment.errors import AugmentParameterError, BatchShapeError
from smartset.augment.transforms import resolve_seed

__all__ = ["BatchMix", "resolve_mix", "soft_targets"]


def soft_targets(labels, num_classes: int | None = None) -> torch.Tensor:
    """Labels as ``N x K`` float32 rows: class indices (``N``, integers) one-hot with
    ``num_classes`` columns, or soft/one-hot targets (``N x K``) as they are."""
    t = torch.as_tensor(labels)
    if t.ndim == 2:
        return t.to(torch.float32)
    if t.ndim != 1 or t.is_floating_point():
        raise BatchShapeError(f"labels must be class indices (N,) or targets (N, K), got "
                              f"{t.dtype} {tuple(t.shape)}.")
    if num_classes is None:
        raise AugmentParameterError("class-index labels need num_classes to become soft "
                                    "targets: pass num_classes=K.")
    return torch.nn.functional.one_hot(t.to(torch.int64), int(num_classes)).to(torch.float32)


class BatchMix:
    """MixUp (``mixup`` = its Beta ``alpha``, 0 off) and/or CutMix (``cutmix`` = its
    ``alpha``, 0 off); with both, each batch takes CutMix with probability ``switch``
    (timm's rule). ``p``: the probability that a batch is mixed at all."""

    def __init__(self, mixup: float = 0.0, cutmix: float = 0.0, *, switch: float = 0.5,
                 p: float = 1.0):
        self.mixup, self.cutmix, self.switch, self.p = mixup, cutmix, switch, p
        check_params("mix", {"mixup": mixup, "cutmix": cutmix, "switch": switch, "p": p},
                     {"mixup": Bound(0, 100), "cutmix": Bound(0, 100), "switch": Bound(0, 1),
                      "p": Bound(0, 1)})
        if not mixup and not cutmix:
            raise AugmentParameterError("mix: give mixup > 0 (e.g. 0.2) and/or cutmix > 0 "
                                        "(e.g. 1.0).")

    def get_config(self) -> dict:
        return {"mixup": self.mixup, "cutmix": self.cutmix, "switch": self.switch, "p": self.p}

    def __repr__(self) -> str:
        return "BatchMix(" + ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()) + ")"

    def __eq__(self, other) -> bool:
        return isinstance(other, BatchMix) and self.get_config() == other.get_config()

    def label(self) -> str:
        parts = [f"{k}={v:g}" for k, v in (("mixup", self.mixup), ("cutmix", self.cutmix)) if v]
        return ",".join(parts)

    # -- sampling
    def make_params(self, batch_shape, rng=None) -> dict:
        """One batch's parameters as a JSON-ready dict: ``op`` (``mixup``, ``cutmix`` or
        ``none``), ``lam`` and, for CutMix, ``box`` (x1, y1, x2, y2 in pixels)."""
        rng = resolve_seed(rng)
        n, _, height, width = (int(s) for s in batch_shape)
        if self.p < 1 and rng.random() >= self.p or n < 2:
            return {"op": "none", "lam": 1.0}
        use_cutmix = bool(self.cutmix) and (not self.mixup or rng.random() < self.switch)
        alpha = float(self.cutmix if use_cutmix else self.mixup)
        lam = float(rng.beta(alpha, alpha))
        if not use_cutmix:
            return {"op": "mixup", "lam": lam}
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = np.sqrt(1.0 - lam)
        half_w, half_h = 0.5 * width * r, 0.5 * height * r
        x1, x2 = int(np.clip(round(cx - half_w), 0, width)), int(np.clip(round(cx + half_w), 0, width))
        y1, y2 = int(np.clip(round(cy - half_h), 0, height)), int(np.clip(round(cy + half_h), 0, height))
        lam = 1.0 - (x2 - x1) * (y2 - y1) / float(width * height)
        return {"op": "cutmix", "lam": lam, "box": [x1, y1, x2, y2]}

    # -- applying
    def apply(self, images: torch.Tensor, labels, params: dict, *,
              num_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix ``images`` (``N x C x H x W``, dtype and device kept) and ``labels`` with
        ``params`` (deterministic); returns the images and soft targets ``N x K``."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise BatchShapeError("BatchMix mixes an image batch N x C x H x W (a tensor).")
        targets = soft_targets(labels, num_classes).to(images.device)
        if len(targets) != len(images):
            raise BatchShapeError(f"{len(images)} images but {len(targets)} labels.")
        lam = float(params["lam"])
        if params["op"] == "none" or len(images) < 2:
            return images.clone(), targets
        mixed_targets = targets * lam + targets.roll(1, 0) * (1.0 - lam)
        if params["op"] == "mixup" and images.dtype == torch.uint8 and images.device.type == "cpu":
            return _blend_uint8(images, lam), mixed_targets
        partner = images.roll(1, 0)
        if params["op"] == "cutmix":
            x1, y1, x2, y2 = params["box"]
            out = images.clone()
            out[:, :, y1:y2, x1:x2] = partner[:, :, y1:y2, x1:x2]
            return out, mixed_targets
        if images.is_floating_point():
            return images * lam + partner * (1.0 - lam), mixed_targets
        blend = images.to(torch.float32) * lam + partner.to(torch.float32) * (1.0 - lam)
        info = torch.iinfo(images.dtype)
        return blend.round_().clamp_(info.min, info.max).to(images.dtype), mixed_targets

    def __call__(self, images, labels, *, num_classes: int | None = None, seed=None):
        """Draw one batch's parameters with ``seed`` and apply them."""
        return self.apply(images, labels, self.make_params(images.shape, seed),
                          num_classes=num_classes)


def _blend_uint8(images: torch.Tensor, lam: float) -> torch.Tensor:
    """MixUp of an 8-bit CPU batch with its partners (the batch rolled by one), straight to
    8 bits: OpenCV's ``addWeighted`` (``lam * x + (1 - lam) * partner`` in float32, rounded
    to nearest) over the batch as rows, the rows split into one run per thread. No float copy
    of the batch, one pass over it; the same rule as the general path to within its float
    rounding (at most one level, on values half-way between two levels)."""
    import cv2

    from smartset.augment._degrade import _pool

    n = len(images)
    src = images.contiguous().view(n, -1).numpy()
    out = torch.empty_like(images)
    dst = out.view(n, -1).numpy()
    cv2.addWeighted(src[:1], lam, src[-1:], 1.0 - lam, 0.0, dst=dst[:1])

    def run(start, stop):  # rows start..stop-1 with their partners start-1..stop-2
        cv2.addWeighted(src[start:stop], lam, src[start - 1:stop - 1], 1.0 - lam, 0.0,
                        dst=dst[start:stop])
    threads = max(1, min(torch.get_num_threads(), (n - 1) // 8))
    bounds = np.linspace(1, n, threads + 1).astype(int)
    if threads == 1:
        run(1, n)
    else:
        list(_pool(threads).map(run, bounds[:-1], bounds[1:]))
    return out


def resolve_mix(spec) -> BatchMix | None:
    """A :class:`BatchMix` from None, a BatchMix, a dict (``{"mixup": 0.2, "cutmix": 1.0}``)
    or a string (``"mixup=0.2,cutmix=1.0"``)."""
    if spec is None or isinstance(spec, BatchMix):
        return spec
    if isinstance(spec, str):
        try:
            spec = {k.strip(): float(v) for k, v in
                    (part.split("=") for part in spec.split(",") if part.strip())}
        except ValueError:
            raise AugmentParameterError(f"mix: write it as 'mixup=0.2,cutmix=1.0', got "
                                        f"{spec!r}.") from None
    if not isinstance(spec, dict):
        raise AugmentParameterError(f"mix must be a BatchMix, a dict or 'mixup=A,cutmix=B', "
                                    f"got {type(spec).__name__}.")
    unknown = sorted(set(spec) - {"mixup", "cutmix", "switch", "p"})
    if unknown:
        raise AugmentParameterError(f"mix: unknown option(s) {', '.join(unknown)}; options: "
                                    f"mixup, cutmix, switch, p.")
    return BatchMix(**spec)
