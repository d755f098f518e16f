"""Robustness by condition: metrics per bucket of an image property, under synthetic shifts
of the test set, and brightness-guided test-time preprocessing (DaCoLT: darkening and
contrast at learning and test stages)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from smartset._random import SeedLike, resolve_rng
from smartset._torch import require_torch
from smartset.learn.errors import LearnError

torch = require_torch("smartset.learn")

__all__ = ["SHIFTS", "shift_images", "brightness", "dacolt_preprocess", "dacolt_tensor",
           "clahe_tiles",
           "dacolt_policy", "PREPROCESSING",
           "condition_table"]

SHIFTS = ("darker", "brighter", "blurred", "rotated", "noisier", "lowres")


def _tensor(images: np.ndarray) -> torch.Tensor:
    array = np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4:
        raise LearnError(f"images must be uint8 (N, H, W, C), got {array.dtype} {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))


def _array(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.numpy().transpose(0, 2, 3, 1))


def brightness(images: np.ndarray) -> np.ndarray:
    """Mean brightness in ``[0, 1]`` per image (luma for colour images)."""
    array = np.asarray(images, dtype=np.float32) / 255.0
    if array.shape[-1] == 3:
        array = array @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return array.reshape(len(array), -1).mean(1)


def shift_images(images: np.ndarray, kind: str, strength: float = 1.0, *,
                 seed: SeedLike = 0) -> np.ndarray:
    """A shifted copy of uint8 ``(N, H, W, C)`` images: ``darker`` (gamma 1 + 1.5 s),
    ``brighter`` (strong light: x (1 + 0.8 s), highlights clip), ``blurred`` (Gaussian,
    sigma s per 28 pixels), ``rotated`` (20 s degrees), ``noisier`` (Gaussian noise,
    std 25 s grey levels), ``lowres`` (a lower resolution and back: scale 1 / (1 + 3 s),
    a quarter at s = 1, the whale study's aerial -> satellite shift)."""
    from smartset.augment import functional as fn

    x = _tensor(images)
    if kind == "darker":
        y = fn.adjust_gamma(x, 1.0 + 1.5 * strength)
    elif kind == "brighter":
        y = fn.adjust_brightness(x, 1.0 + 0.8 * strength)
    elif kind == "blurred":
        y = fn.gaussian_blur(x, strength * max(1.0, min(x.shape[2:]) / 28.0))
    elif kind == "rotated":
        y = fn.rotate(x, 20.0 * strength)
    elif kind == "lowres":
        y = fn.downscale(x, 1.0 / (1.0 + 3.0 * strength))
    elif kind == "noisier":
        noise = resolve_rng(seed).normal(0.0, 25.0 * strength, size=x.shape)
        y = torch.from_numpy(np.clip(x.numpy() + noise, 0, 255).round().astype(np.uint8))
    else:
        raise LearnError(f"Unknown shift {kind!r}; shifts: {', '.join(SHIFTS)}.")
    return _array(y)


def dacolt_preprocess(images: np.ndarray, *, target: tuple[float, float] = (0.3, 0.55),
                      clip_limit: float = 2.0, tiles: int | str = 4) -> np.ndarray:
    """Brightness-guided preprocessing: CLAHE for local contrast, then a gamma curve that
    brings each image's mean brightness into ``target`` (darkening over-lit images,
    brightening dark ones). uint8 ``(N, H, W, C)`` in and out; see :func:`dacolt_tensor`.

    The gamma for an image of brightness ``b`` outside the range solves ``b ** g = m`` for
    the nearer end ``m`` of ``target`` (clipped to ``[1/4, 4]``); images within the range
    keep ``g = 1``.
    """
    return _array(dacolt_tensor(_tensor(images), target=target, clip_limit=clip_limit,
                                tiles=tiles))


def clahe_tiles(height: int, width: int, *, tile_side: int = 128) -> int:
    """The CLAHE grid (tiles per side) for an image: one tile per ``tile_side`` pixels of
    the shorter side, 1 to 8. Tiles much smaller than the objects cut them into
    differently equalised pieces: 4 tiles at 128 px (32-px tiles over objects up to 100
    px) cost the detector F1 in every condition (benchmarks/detect.py)."""
    return int(min(8, max(1, round(min(height, width) / tile_side))))


def dacolt_tensor(x: torch.Tensor, *, target: tuple[float, float] = (0.3, 0.55),
                  clip_limit: float = 2.0, tiles: int | str = 4) -> torch.Tensor:
    """:func:`dacolt_preprocess` on a uint8 ``N x C x H x W`` tensor (as in a training loop).
    ``tiles="auto"``: the grid :func:`clahe_tiles` gives for the batch's size."""
    from smartset.augment import functional as fn

    low, high = target
    if not 0 < low < high < 1:
        raise LearnError(f"target must be 0 < low < high < 1, got {target}")
    if tiles == "auto":
        tiles = clahe_tiles(*x.shape[-2:])
    elif isinstance(tiles, str) or int(tiles) < 1:
        raise LearnError(f"tiles must be a whole number >= 1 or 'auto', got {tiles!r}")
    tiles = int(tiles)
    if len(x) == 0:
        return x.clone()
    # Contrast first, then the gamma that lands the result's brightness in the range.
    y = fn.clahe(x, clip_limit, (tiles, tiles))
    values = y.to(torch.float32) / 255.0
    if values.shape[1] == 3:
        values = (values * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    b = np.clip(values.reshape(len(values), -1).mean(1).numpy().astype(np.float64), 1e-3, 1 - 1e-3)
    gamma = np.clip(np.log(np.clip(b, low, high)) / np.log(b), 0.25, 4.0)
    return fn.adjust_gamma(y, gamma)


PREPROCESSING = {"dacolt": dacolt_tensor}


def dacolt_policy():
    """The learning-stage half of DaCoLT: random darkening/brightening and contrast, so the
    model sees the lighting it will meet; combine with :func:`dacolt_preprocess`."""
    from smartset.augment import CLAHE, Compose, Gamma

    return Compose([Gamma(gamma=(0.5, 2.5), p=0.7), CLAHE(clip_limit=(1.0, 3.0), p=0.5)],
                   name="dacolt")


def condition_table(conditions: dict[str, tuple[Sequence, Sequence]], positive, *,
                    disjoint: bool = True) -> list[dict]:
    """The knife-study table: per condition, ``n``, ``TP``, ``FP``, ``FN``, precision,
    recall and F1 of the ``positive`` class, plus the average row.

    ``conditions`` maps a condition name to ``(y_true, y_pred)``. The average row holds the
    mean precision, recall and F1 over the conditions; its counts are the sums only when
    the conditions are ``disjoint`` sets of images (the knife study's frames). When they
    overlap (shifted copies of the same images, brightness terciles of them), summed counts
    would count an image several times: they are None.
    """
    rows = []
    for name, (truth, pred) in conditions.items():
        truth = np.asarray(truth, dtype=object) == positive
        pred = np.asarray(pred, dtype=object) == positive
        tp, fp, fn_ = int((truth & pred).sum()), int((~truth & pred).sum()), int((truth & ~pred).sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn_) if tp + fn_ else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"condition": name, "n": int(len(truth)), "positives": int(truth.sum()),
                     "TP": tp, "FP": fp, "FN": fn_, "precision": precision, "recall": recall,
                     "f1": f1})
    if rows:
        counts = ("n", "positives", "TP", "FP", "FN")
        rows.append({"condition": "average",
                     **{k: sum(r[k] for r in rows) if disjoint else None for k in counts},
                     **{k: float(np.mean([r[k] for r in rows])) for k in ("precision", "recall", "f1")}})
    return rows

