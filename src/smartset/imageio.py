"""Reading image files: the per-file inspection ingest runs, and decoding for later stages.

:func:`inspect_files` is a batch function (see :mod:`smartset.engine`): it hashes each file,
reads its header, and decodes it fully to prove it is whole. JPEGs are decoded in the DCT
domain at 1/8 scale (Pillow's ``draft``): every byte of the stream is still read, so
truncation and corruption are caught, for a fraction of the cost of a full decode.

Paths are local paths or fsspec URLs (:mod:`smartset.storage`); every later stage opens an
image through :func:`open_image`, the one place that tells the two apart.

Every stage that looks at pixels (the audit, thumbnails, ``ws.dataset()``, training, the
embeddings) decodes through :func:`decode` (or :func:`normalize` on an image already open),
so each sees the same ``uint8`` pixels in the same orientation:

* EXIF orientation is applied (as viewers show the photo); the catalog's ``width`` and
  ``height`` are the upright ones too.
* Animated images: the first frame.
* 16-bit integers (``I;16*``, and ``I`` whose values lie in 0..65535): the high byte
  (``value >> 8``), so 65535 is 255 and a full-range gradient keeps its mean.
* Other 32-bit integers (``I`` with negative values or values above 65535): the image's
  own range stretched linearly to 0..255.
* Floats (``F``): values within [0, 1] are multiplied by 255; values within [0, 255] are
  kept; any other range is stretched linearly to 0..255. Rounded, clipped; NaN is 0.
* Palette, CMYK, YCbCr, 1-bit, ``LA``, ``RGBX``...: to ``L``, ``RGB`` or ``RGBA`` (``RGBA``
  whenever the file has alpha or a transparent palette entry). Asking for ``RGB`` drops
  alpha (the stored colours are kept, not composited).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from smartset.engine import Batch
from smartset.errors import ImageDecodeError, StorageError
from smartset.storage import is_url, read_bytes

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "ISSUE_REASONS",
    "inspect_files",
    "open_image",
    "decode",
    "normalize",
    "upright_size",
    "load_image",
    "thumbnail",
]

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm",
})
DEFAULT_MAX_PIXELS = 100_000_000
"""Images with more pixels are refused (decompression bombs); override with ``max_pixels``."""

ISSUE_REASONS = {
    "empty_file": "the file has zero bytes",
    "not_an_image": "the bytes are not an image in any format Pillow knows",
    "truncated": "the image data ends early",
    "corrupt": "the image data is damaged",
    "too_large": "the image has more pixels than the limit (a possible decompression bomb)",
    "unreadable": "the file cannot be opened for reading",
    "broken_symlink": "a symbolic link points to nothing",
    "symlink_loop": "symbolic links form a loop",
    "not_a_file": "the path is not a regular file",
    "bad_filename": "the file name is not valid UTF-8",
    "missing_file": "a table row names a file that does not exist",
    "outside_root": "a table row names a file outside the data root",
    "csv_bad_row": "a table row cannot be parsed",
    "csv_duplicate_path": "a table names the same file twice",
    "bad_target": "a regression target is not a finite number (text, NaN or infinity)",
    "bad_label": "a label is blank, too long, or holds a control character (NUL, newline)",
    "unknown_split": "a split name is not train, val, test or unlabeled",
    "label_pattern_mismatch": "a file name does not match the label pattern",
    "label_variants": "labels differ only by case or whitespace",
}
"""Every reason ingest records, with what it means (shown by ``smartset issues``)."""

_FIXES = {
    "empty_file": "Re-export or re-download it, or delete it from the source folder.",
    "not_an_image": "Rename it if it is another kind of file, or re-export the image.",
    "truncated": "Re-export or re-download it: the copy is incomplete.",
    "corrupt": "Re-export it from the original, or leave it out.",
    "too_large": "Downscale it, or raise the limit with --max-pixels if you trust the file.",
    "unreadable": "Check its permissions (chmod a+r) and that it is not locked.",
}


def _classify_decode_error(error: Exception) -> str:
    text = str(error).lower()
    if "truncated" in text or "premature end" in text:
        return "truncated"
    return "corrupt"


def _inspect_one(path: str, max_pixels: int) -> dict:
    record = {"sha256": None, "size": None, "format": None, "width": None, "height": None,
              "mode": None, "channels": None, "reason": None, "detail": None}
    try:
        data = read_bytes(path)
    except StorageError:
        raise  # a missing fsspec package concerns every file: say it once, loudly
    except IsADirectoryError:
        return {**record, "reason": "not_a_file", "detail": "it is a folder"}
    except OSError as error:
        return {**record, "reason": "unreadable", "detail": f"{type(error).__name__}: {error}"}
    record["size"] = len(data)
    if not data:
        return {**record, "reason": "empty_file", "detail": "0 bytes"}
    record["sha256"] = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            # We apply our own pixel limit below; Pillow's warning would only duplicate it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        width, height = image.size
        record.update(format=image.format, width=width, height=height, mode=image.mode,
                      channels=len(image.getbands()))
        if width * height > max_pixels:
            record.update(reason="too_large",
                          detail=f"{width}x{height} = {width * height:,} pixels > limit {max_pixels:,}")
            return record
        if image.format in ("JPEG", "MPO"):
            image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
        image.load()
        # The upright size, as decode() returns the image (read after load(): a PNG's EXIF
        # may follow its pixel data, and reading it first would hide a corrupt file).
        if _orientation(image) in _ROTATED:
            record.update(width=height, height=width)
    except Image.DecompressionBombError as error:
        record.update(reason="too_large", detail=str(error))
    except UnidentifiedImageError:
        record.update(reason="not_an_image",
                      detail=f"starts with {data[:8]!r}, no image format recognised")
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as error:
        # Pillow's plugins raise all of these on damaged data.
        record.update(reason=_classify_decode_error(error),
                      detail=f"{type(error).__name__}: {error}")
    return record


def inspect_files(batch: Batch, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Batch:
    """Hash, identify and fully decode each file of ``batch["path"]``.

    Returns a batch with the input columns and ``sha256``, ``size``, ``format``,
    ``width``, ``height``, ``mode``, ``channels``, and ``reason``/``detail``: None for a
    good file, else one of :data:`ISSUE_REASONS` and what was seen.
    """
    results = [_inspect_one(path, max_pixels) for path in batch["path"]]
    out = dict(batch)
    for key in ("sha256", "size", "format", "width", "height", "mode", "channels",
                "reason", "detail"):
        out[key] = [result[key] for result in results]
    return out


def open_image(path: str | Path) -> Image.Image:
    """Open (lazily, as ``PIL.Image.open`` does) a local path or an fsspec URL.

    A URL's bytes are read into memory first: Pillow seeks back and forth, which is slow
    or impossible on a remote stream. Raises what ``PIL.Image.open`` raises
    (``FileNotFoundError``, ``UnidentifiedImageError``, ``OSError``), and
    :class:`~smartset.errors.StorageError` for a URL whose scheme cannot be read.
    """
    if is_url(path):
        return Image.open(io.BytesIO(read_bytes(path)))
    return Image.open(path)


def _open_checked(path: str | Path, *, draft_size: int | None = None) -> Image.Image:
    """Open and decode ``path`` (JPEGs at reduced scale when ``draft_size`` is given)."""
    try:
        image = open_image(path)
        if draft_size is not None and image.format in ("JPEG", "MPO"):
            image.draft("RGB", (draft_size, draft_size))
        image.load()
    except FileNotFoundError as error:
        raise ImageDecodeError(
            f"Image '{path}' does not exist. Was it moved? Re-run 'smartset ingest' to "
            f"mark it missing.", path=str(path), reason="missing_file") from error
    except StorageError:
        raise
    except UnidentifiedImageError as error:
        raise ImageDecodeError(
            f"Could not decode '{path}' (not an image). {_FIXES['not_an_image']}",
            path=str(path), reason="not_an_image") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        reason = _classify_decode_error(error)
        raise ImageDecodeError(
            f"Could not decode '{path}' ({reason}: {error}). {_FIXES[reason]}",
            path=str(path), reason=reason) from error
    return image


_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_WIDE_INTEGER = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8; 1 when absent or damaged)."""
    try:
        value = int(image.getexif().get(0x0112, 1))
    except Exception:  # a damaged EXIF block must not make the image unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def upright_size(image: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of ``image`` as :func:`decode` returns it (EXIF orientation applied)."""
    width, height = image.size
    return (height, width) if _orientation(image) in _ROTATED else (width, height)


def _exif_transpose(image: Image.Image) -> Image.Image:
    if _orientation(image) == 1:
        return image
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # same rule as _orientation: damaged EXIF means upright
        return image


def _to_uint8_gray(image: Image.Image) -> Image.Image:
    """A wide single-channel image (16/32-bit integer, float) as ``L``, by the module's rule."""
    values = np.asarray(image)
    if image.mode == "F":
        values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if low >= 0.0 and high <= 1.0:
            scaled = values * 255.0
        elif low >= 0.0 and high <= 255.0:
            scaled = values
        else:
            scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0.0
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")
    values = values.astype(np.int64)
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if image.mode != "I" or (low >= 0 and high <= 65535):
        gray = (values >> 8).astype(np.uint8)
    else:  # a true 32-bit image: its own range
        gray = np.clip(np.rint((values - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L")


def normalize(image: Image.Image, mode: str | None = None) -> Image.Image:
    """``image`` (open, from :func:`open_image`) as every stage sees it: first frame, EXIF
    orientation applied, 8 bits per channel, in ``mode`` (``"L"``, ``"RGB"``, ``"RGBA"``) or,
    for None, the nearest of ``L``/``RGB``/``RGBA``. See the module docstring for the rules.
    A multi-frame ``image`` is closed (its file released); its first frame is returned."""
    if getattr(image, "n_frames", 1) > 1:
        # The first frame, copied; the file (kept open for seeking) is closed with it.
        image.seek(0)
        image.load()
        frame = image.copy()
        frame.info = dict(image.info)
        image.close()
        image = frame
    image.load()  # errors surface here, not hidden inside the EXIF read below
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    image = _exif_transpose(image)
    if image.mode in _WIDE_INTEGER or image.mode == "F":
        image = _to_uint8_gray(image)
    elif image.mode == "I;16S" or image.mode.startswith("I;"):
        image = _to_uint8_gray(image.convert("I"))
    if mode is None:
        if image.mode in ("L", "RGB", "RGBA"):
            return image
        mode = "RGBA" if has_alpha else ("L" if image.mode in ("1", "L") else "RGB")
    if image.mode == mode:
        return image
    if image.mode == "P" and mode in ("RGB", "L"):
        image = image.convert("RGBA")  # resolve the palette (and its transparency) first
    if image.mode == "RGBA" and mode == "L":
        image = image.convert("RGB")
    return image.convert(mode)


def decode(path: str | Path, *, mode: str | None = None, draft: int | None = None
           ) -> Image.Image:
    """The one decoder: ``path`` (a local path or fsspec URL) opened, checked and
    :func:`normalize`-d. ``draft``: JPEGs may be decoded at reduced scale, never with a
    side below ``draft`` (fast thumbnails; other formats decode in full). Raises
    :class:`~smartset.errors.ImageDecodeError` naming the file and the fix."""
    image = _open_checked(path, draft_size=draft)
    try:
        result = normalize(image, mode)
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        image.close()
        reason = _classify_decode_error(error)
        raise ImageDecodeError(
            f"Could not decode '{path}' ({reason}: {error}). {_FIXES[reason]}",
            path=str(path), reason=reason) from error
    if getattr(image, "fp", None) is not None or getattr(image, "n_frames", 1) > 1:
        # multi-frame files keep theirs open (for seeking): close it, keep the pixels
        if result is image:
            result = image.copy()
        image.close()
    return result


def load_image(path: str | Path, *, mode: str | None = None) -> np.ndarray:
    """:func:`decode` as a ``uint8`` array of shape ``(H, W)`` or ``(H, W, C)``.

    ``mode``: ``"RGB"``, ``"L"``, ``"RGBA"``, or None for the nearest of those to the file's
    own. Raises :class:`~smartset.errors.ImageDecodeError` naming the file.
    """
    return np.array(decode(path, mode=mode))  # writable: callers (and torch) may change it


def thumbnail(path: str | Path, size: int = 96) -> Image.Image:
    """A decoded RGB thumbnail whose longer side is at most ``size`` pixels."""
    image = decode(path, mode="RGB", draft=size)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return image
