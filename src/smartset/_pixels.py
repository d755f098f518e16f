"""The pixel embedding: a tiny content vector of an image, below every stage.

The audit (near-duplicate candidates on small images) and learn (baselines on digits) both
use it; it lives here so neither imports the other.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["pixel_embedding", "PIXEL_EMBED_SIDE", "PIXEL_EMBED_COLOUR_SIDE",
           "PIXEL_EMBEDDING_DIM"]

PIXEL_EMBED_SIDE = 8
PIXEL_EMBED_COLOUR_SIDE = 4
PIXEL_EMBEDDING_DIM = PIXEL_EMBED_SIDE ** 2 + 3 * PIXEL_EMBED_COLOUR_SIDE ** 2  # 112


def pixel_embedding(gray: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Gray layout (8x8) plus coarse colour (4x4x3), each centred and unit-normed.

    ``gray``: uint8 ``(H, W)``; ``rgb``: uint8 ``(H', W', 3)`` (any sizes). Returns float32
    ``(112,)`` with unit norm (zeros for a flat image). Centring and norming make it blind
    to brightness and contrast shifts; coarse area resampling makes it blind to
    re-encoding, resizing and small crops. It finds candidates; near duplicates are then
    verified on finer thumbnails.
    """
    parts = []
    for array, side in ((gray, PIXEL_EMBED_SIDE), (rgb, PIXEL_EMBED_COLOUR_SIDE)):
        small = cv2.resize(array, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
        small = small.reshape(-1) - small.mean()
        norm = float(np.linalg.norm(small))
        parts.append(small / norm if norm > 1e-6 else small)
    gray_part, colour_part = parts
    # Layout weighs more than colour; the result has unit norm.
    return np.concatenate([gray_part * math.sqrt(0.8), colour_part * math.sqrt(0.2)])
