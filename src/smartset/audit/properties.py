"""Per-image properties for the audit, computed as a batch function (see smartset.engine).

Each image is decoded once, at a normalised size (longer side at most
:data:`AUDIT_SIDE`; JPEGs decoded in the DCT domain at the smallest of libjpeg's scales
1/1, 1/2, 1/4, 1/8 that keeps the longer side at least :data:`AUDIT_SIDE`), and
everything is measured on that: brightness, contrast, dark and saturated fractions,
sharpness (variance of the Laplacian), entropy, colourfulness, grayscale, alpha, EXIF
orientation, JPEG quality, a perceptual hash, a hash of the decoded pixels, and a compact
pixel embedding for duplicate and outlier search.
"""

from __future__ import annotations

import hashlib
import math
import warnings

import cv2
import numpy as np
from PIL import Image

from smartset._pixels import PIXEL_EMBED_COLOUR_SIDE, PIXEL_EMBED_SIDE, pixel_embedding
from smartset.engine import Batch
from smartset.imageio import normalize, open_image

__all__ = ["AUDIT_SIDE", "EMBEDDING_DIM", "PROPERTIES", "PROPERTIES_VERSION", "RECORD",
           "THUMB_SIDE", "compute_properties", "draft_box", "pixel_hash"]

AUDIT_SIDE = 256
PROPERTIES_VERSION = 8
"""Bump when a property's definition changes: cached values of other versions are recomputed.
8: JPEGs drafted by their longer side (:func:`draft_box`), the pixel hash by SHA-256."""
_EMBED_SIDE = PIXEL_EMBED_SIDE
_EMBED_COLOUR_SIDE = PIXEL_EMBED_COLOUR_SIDE
EMBEDDING_DIM = _EMBED_SIDE * _EMBED_SIDE + 3 * _EMBED_COLOUR_SIDE * _EMBED_COLOUR_SIDE
THUMB_SIDE = 48
"""Side of the gray thumbnail kept to verify near-duplicate candidates."""
RECORD = np.dtype([("embedding", np.float16, (EMBEDDING_DIM,)),
                   ("thumb", np.uint8, (THUMB_SIDE, THUMB_SIDE))])
"""One fixed-size record per image in the audit's on-disk vector file."""

PROPERTIES = {
    "brightness": "mean perceived brightness, 0 (black) to 1 (white)",
    "brightness_p01": "1st percentile of brightness: how bright the darkest pixels are",
    "brightness_p05": "5th percentile of brightness",
    "brightness_p99": "99th percentile of brightness: how bright the brightest pixels are",
    "contrast": "standard deviation of brightness",
    "dark_fraction": "fraction of pixels darker than 0.1",
    "saturated_fraction": "fraction of pixels brighter than 0.98",
    "sharpness": "log10(1 + variance of the Laplacian) at the normalised size, with low "
                 "contrast compensated",
    "entropy": "Shannon entropy of the brightness histogram in 32 bins over the image's own "
               "range, in bits (0 to 5)",
    "colourfulness": "Hasler-Süsstrunk colourfulness at 64 x 64 (0 for gray images)",
    "grayscale": "1 if the image has no colour (gray mode, or equal RGB channels)",
    "alpha": "1 if the image has an alpha channel or a transparent colour",
    "exif_orientation": "EXIF orientation tag (1 = upright)",
    "jpeg_quality": "estimated JPEG quality (1-100) from the quantisation tables, else empty",
    "phash": "64-bit perceptual hash (DCT of a 32 x 32 gray image)",
    "pixel_hash": "hash of the decoded pixels at the normalised size",
}

# The IJG standard luminance quantisation table, the reference for the quality estimate.
_STD_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)


def _jpeg_quality(image: Image.Image) -> float | None:
    tables = getattr(image, "quantization", None)
    if not tables or 0 not in tables:
        return None
    table = np.asarray(tables[0], dtype=np.float64)
    if table.size != 64:
        return None
    # libjpeg scales the standard table by S/100 (rounded); invert that, then its quality map.
    scale = float(np.mean((table * 100.0 - 50.0) / _STD_LUMINANCE))
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return float(np.clip(round(quality), 1, 100))


def _to_rgb(image: Image.Image) -> np.ndarray:
    """The one decoder's pixels (smartset.imageio.normalize): EXIF orientation applied,
    16-bit and float images scaled as every other stage scales them."""
    return np.asarray(normalize(image, "RGB"))


def _phash(gray: np.ndarray) -> int:
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.partition(low[1:], 31)[31]  # the median of 63 values, as np.median
    value = int(np.packbits(bits).view(">u8")[0])
    return value - (1 << 64) if value >= 1 << 63 else value  # fits SQLite's signed int64


_REFERENCE_STD = 50.0  # a typical photo's brightness spread, in 0-255 levels


def _sharpness(gray: np.ndarray) -> float:
    """log10(1 + variance of the Laplacian), scaled up for low-contrast images.

    A darkened or washed-out copy keeps its edges but loses contrast, which would read as
    blur: its Laplacian variance is rescaled as if its brightness spread were typical.
    Images of normal contrast are measured as they are; a flat image has none.
    """
    spread = float(cv2.meanStdDev(gray)[1][0, 0])  # OpenCV's reductions: one C call each,
    if spread < 1.0:                                # far cheaper than NumPy's on small images
        return 0.0
    # The 3x3 Laplacian of 8-bit levels lies within +-1020: exact in int16 as in float32
    # (the same variance); OpenCV computes int16 faster on photos, float32 on digits.
    depth = cv2.CV_16S if gray.size >= 1 << 13 else cv2.CV_32F
    laplacian = float(cv2.meanStdDev(cv2.Laplacian(gray, depth))[1][0, 0]) ** 2
    return math.log10(1.0 + laplacian * max(1.0, (_REFERENCE_STD / spread) ** 2))


_embedding = pixel_embedding  # one pixel embedding for audit and learn (smartset._pixels)


def _measure(path: str, *, gray_shortcut: bool = True) -> dict:
    """The properties of the image at ``path`` (:func:`compute_properties` for one).
    ``gray_shortcut``: measure a plain 8-bit gray image on its one channel (False: as RGB,
    as other images; the same numbers)."""
    measured = _measure_image(path, gray_shortcut=gray_shortcut)
    stats = histogram_stats(measured.pop("histogram")[None])
    return {**measured, **{name: float(values[0]) for name, values in stats.items()}}


_LEVEL = np.arange(256) / 255.0
_HISTOGRAM_STATS = ("brightness", "brightness_p01", "brightness_p05", "brightness_p99",
                    "contrast", "dark_fraction", "saturated_fraction", "entropy")


def histogram_stats(histograms: np.ndarray) -> dict[str, np.ndarray]:
    """The brightness statistics of ``n x 256`` level counts, every image at once (as
    NumPy over a batch, not a few dozen small calls an image): mean, the 1st, 5th and 99th
    percentiles, spread, dark and saturated fractions, and the entropy over 32 bins
    spanning the image's own range (at least 64 levels wide: blind to a few levels of
    noise, and to darkening or washing out, which only squeeze the range)."""
    histograms = np.asarray(histograms, dtype=np.float64).reshape(-1, 256)
    n = len(histograms)
    share = histograms / histograms.sum(axis=1, keepdims=True)
    cumulative = np.cumsum(share, axis=1)
    mean = np.einsum("ij,j->i", share, _LEVEL)  # row by row: a batch's rows do not mix

    def percentile(q: float) -> np.ndarray:  # np.searchsorted(cumulative, q), row by row
        return (cumulative < q).sum(axis=1).astype(np.float64)

    low, high = percentile(0.01), percentile(0.99)
    span = np.maximum(high - low, 64.0)
    bins = np.clip(((np.arange(256) - low[:, None]) * 32.0 / span[:, None]).astype(np.int64),
                   0, 31)
    coarse = np.bincount((bins + 32 * np.arange(n)[:, None]).reshape(-1),
                         weights=share.reshape(-1), minlength=32 * n).reshape(n, 32)
    with np.errstate(divide="ignore", invalid="ignore"):
        information = np.where(coarse > 0, coarse * np.log2(coarse), 0.0)
    spread = (share * (_LEVEL[None, :] - mean[:, None]) ** 2).sum(axis=1)
    return {"brightness": mean, "brightness_p01": low / 255.0,
            "brightness_p05": percentile(0.05) / 255.0, "brightness_p99": high / 255.0,
            "contrast": np.sqrt(np.maximum(0.0, spread)),
            "dark_fraction": share[:, :26].sum(axis=1),        # below 0.1
            "saturated_fraction": share[:, 250:].sum(axis=1),  # above 0.98
            "entropy": -information.sum(axis=1)}


def draft_box(width: int, height: int, side: int = AUDIT_SIDE) -> tuple[int, int]:
    """The box to give ``PIL.Image.draft`` so that a JPEG of ``width x height`` decodes at
    the smallest DCT scale (1/1, 1/2, 1/4, 1/8) whose longer side is still at least
    ``side``: Pillow picks the largest scale that keeps *both* sides of the decoded image
    at least the box's, so the box is the image shrunk to ``side`` on its longer side
    (a square box would keep the shorter side at ``side`` and decode up to 4x the pixels)."""
    longer = max(width, height, 1)
    if longer <= side:
        return width, height
    return (max(1, math.ceil(side * width / longer)), max(1, math.ceil(side * height / longer)))


def _level_counts(gray: np.ndarray) -> np.ndarray:
    """The 256-bin histogram of a uint8 image as float64 counts: OpenCV's for photos
    (about 2-3x faster than ``np.bincount`` from 96 x 96 up; its float32 counts are exact
    below 2**24 a level), NumPy's for digits and other small images (less call overhead)
    and for huge ones."""
    if 1 << 13 <= gray.size < 1 << 24:
        return cv2.calcHist([gray], [0], None, [256], [0, 256]).reshape(256).astype(np.float64)
    return np.bincount(gray.reshape(-1), minlength=256).astype(np.float64)


def pixel_hash(rgb: np.ndarray) -> str:
    """The ``pixel_hash`` property of decoded pixels ``rgb`` (``H x W x 3`` uint8): the
    first 128 bits of the SHA-256 of the pixels and their shape, as 32 hex digits. SHA-256
    rather than blake2b: with the CPU's SHA instructions it hashes about 3x faster."""
    digest = hashlib.sha256(np.ascontiguousarray(rgb).data)  # hashed in place, not copied
    digest.update(str(rgb.shape).encode())
    return digest.hexdigest()[:32]


_SURELY_COLOUR = 5.0
"""A difference between two channels of the 64 x 64 area-averaged copy at least this large
proves one of the full image's pixels differs by more than 2 between those channels: each
copy pixel is a weighted mean of image pixels, rounded to a level (0.5 each way)."""


def _channel_spread(rgb: np.ndarray, rg: np.ndarray, yb: np.ndarray) -> int:
    """The largest difference between two channels of a pixel of ``rgb`` (the grayscale
    test: at most 2), or a number above 2 without looking at every pixel when the small
    copy's red - green or yellow - blue (``rg``, ``yb``) already prove colour."""
    for channel in (rg, yb):
        low, high = cv2.minMaxLoc(channel)[:2]
        if max(-low, high) >= _SURELY_COLOUR:
            return 3  # more than 2: colour; the exact spread is not needed
    red8, green8, blue8 = cv2.split(rgb)  # numpy reductions over a 3-long axis are slow
    return int(cv2.subtract(cv2.max(cv2.max(red8, green8), blue8),
                            cv2.min(cv2.min(red8, green8), blue8)).max())


def _measure_image(path: str, *, gray_shortcut: bool = True) -> dict:
    """What :func:`_measure` measures image by image: all but the histogram's statistics
    (its ``histogram`` instead)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = open_image(path)  # a local path or an fsspec URL
        info = {"exif_orientation": None, "jpeg_quality": None, "alpha": 0}
        if image.format in ("JPEG", "MPO"):
            info["jpeg_quality"] = _jpeg_quality(image)
            image.draft("RGB", draft_box(*image.size))
        try:
            info["exif_orientation"] = int(image.getexif().get(0x0112, 1))
        except Exception:  # a damaged EXIF block must not hide the image's other properties
            info["exif_orientation"] = None
        info["alpha"] = int("A" in image.getbands() or "transparency" in image.info)
        gray_mode = image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
        # A plain 8-bit gray image is measured on its one channel: as RGB its three
        # channels would be equal, so every number below comes out the same (a test
        # compares both ways), for a third of the work.
        plain_gray = (gray_shortcut and image.mode == "L" and not info["alpha"]
                      and getattr(image, "n_frames", 1) == 1)
        if plain_gray:
            gray = np.asarray(normalize(image, "L"))
        else:
            rgb = _to_rgb(image)
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    # Brightness statistics from the 256-bin histogram of the decoded image, before any
    # resampling blends levels (a two-colour image keeps two levels): exact, and far
    # cheaper than sorting.
    histogram = _level_counts(gray)
    height, width = gray.shape[:2]
    if max(height, width) > AUDIT_SIDE:
        scale = AUDIT_SIDE / max(height, width)
        # Area resampling is needed to shrink by 2x or more without aliasing; short of
        # that (JPEGs arrive pre-shrunk by their DCT draft) bilinear is as good and faster.
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        method = cv2.INTER_LINEAR if scale > 0.5 else cv2.INTER_AREA
        if plain_gray:
            gray = cv2.resize(gray, size, interpolation=method)
        else:
            rgb = cv2.resize(rgb, size, interpolation=method)
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    # Small copies for the global and coarse measures: the same numbers for a fraction
    # of the work.
    thumb = cv2.resize(gray, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA)
    if plain_gray:  # equal channels: no colour, no spread between channels
        small = cv2.resize(gray, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
        small_rgb = cv2.merge((small, small, small))
        rgb = cv2.merge((gray, gray, gray))  # the pixels hashed, as RGB
        colourfulness, channel_spread = 0.0, 0
    else:
        small_rgb = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
        red, green, blue = small_rgb[:, :, 0], small_rgb[:, :, 1], small_rgb[:, :, 2]
        rg, yb = red - green, 0.5 * (red + green) - blue
        (rg_mean, rg_std), (yb_mean, yb_std) = (  # OpenCV's reductions: one C call each
            (float(v[0, 0]) for v in cv2.meanStdDev(channel)) for channel in (rg, yb))
        colourfulness = (math.hypot(float(rg_std), float(yb_std))
                         + 0.3 * math.hypot(float(rg_mean), float(yb_mean))) / 255.0
        channel_spread = _channel_spread(rgb, rg, yb)
    return {
        **info,
        "histogram": histogram,  # its statistics: histogram_stats, for a batch at once
        "sharpness": _sharpness(gray),
        "colourfulness": colourfulness,
        "grayscale": int(gray_mode or channel_spread <= 2),
        "phash": _phash(thumb),
        "pixel_hash": pixel_hash(rgb),
        "embedding": _embedding(thumb, small_rgb).astype(np.float16),
        "thumb": thumb,
    }


def compute_properties(batch: Batch) -> Batch:
    """Measure each image of ``batch["path"]``.

    Adds one column per name in :data:`PROPERTIES`, ``embedding`` (float16 vectors of
    :data:`EMBEDDING_DIM`), ``thumb`` (uint8 gray, :data:`THUMB_SIDE` square), and ``error`` (None, or why the image could not be measured:
    a file that broke after ingest is reported, not fatal).
    """
    cv2.setNumThreads(1)  # one image at a time is too small to share; the engine parallelises
    rows = []
    for path in batch["path"]:
        try:
            rows.append({**_measure_image(path), "error": None})
        except (OSError, SyntaxError, ValueError, EOFError, cv2.error) as error:
            rows.append({"error": f"{type(error).__name__}: {error}"})
    measured = [row for row in rows if row["error"] is None]
    if measured:
        stats = histogram_stats(np.stack([row.pop("histogram") for row in measured]))
        for name in _HISTOGRAM_STATS:
            for row, value in zip(measured, stats[name].tolist()):
                row[name] = value
    out = dict(batch)
    for key in (*PROPERTIES, "embedding", "thumb", "error"):
        out[key] = [row.get(key) for row in rows]
    return out
