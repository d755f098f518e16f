"""Thumbnails, made once per image content and size and kept in the workspace cache."""

from __future__ import annotations

import io
from pathlib import Path

from smartset._atomic import atomic_path
from smartset.errors import ImageDecodeError
from smartset.imageio import thumbnail

__all__ = ["thumbnail_jpeg"]


def thumbnail_jpeg(cache_dir: str | Path, path: str | Path, sha256: str, size: int = 96
                   ) -> bytes | None:
    """JPEG bytes of a thumbnail of ``path`` (None if it cannot be decoded), cached under
    ``cache_dir/thumbs`` by content hash, so a renamed or re-ingested file reuses it."""
    target = Path(cache_dir) / "thumbs" / f"{size}" / sha256[:2] / f"{sha256}.jpg"
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
