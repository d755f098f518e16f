"""Thumbnails, made once per image content and size and kept in the workspace cache."""

from __future__ import annotations

import io
from pathlib import Path

from smartset._atomic import atomic_path
from smartset.errors import ImageDecodeError
from smartset.imageio import thumbnail

__all__ = ["thumbnail_jpeg", "thumbnail_path", "THUMBS_VERSION"]

THUMBS_VERSION = 2
"""Bump when decoding changes (2: the one decoder, smartset.imageio.decode): thumbnails
made by another version are never served."""


def thumbnail_path(cache_dir: str | Path, sha256: str, size: int = 96) -> Path:
    """Where the thumbnail of content ``sha256`` at ``size`` is cached."""
    return (Path(cache_dir) / "thumbs" / f"{size}-v{THUMBS_VERSION}" / sha256[:2]
            / f"{sha256}.jpg")


def thumbnail_jpeg(cache_dir: str | Path, path: str | Path, sha256: str, size: int = 96
                   ) -> bytes | None:
    """JPEG bytes of a thumbnail of ``path`` (None if it cannot be decoded), cached under
    ``cache_dir/thumbs`` by content hash, so a renamed or re-ingested file reuses it."""
    target = thumbnail_path(cache_dir, sha256, size)
    if target.exists():
        return target.read_bytes()
    try:
        image = thumbnail(path, size)
    except ImageDecodeError:
        return None
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    data = buffer.getvalue()
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return data
