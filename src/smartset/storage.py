"""Where files live: local paths, or fsspec URLs (``file:///data``, ``memory://bucket/x``,
``s3://bucket/photos``, ...).

Every stage that reads image bytes goes through :func:`open_file` (or :func:`read_bytes`),
so a catalog whose root is a URL reads the same as one on a local disk: ingest lists and
hashes the files through fsspec, and audit, augmentation and learning decode them through
:func:`smartset.imageio.open_image`. fsspec is imported only when a URL is met. A scheme
whose implementation is a separate package (``s3://`` needs ``s3fs``, ``gs://`` ``gcsfs``)
raises :class:`~smartset.errors.StorageError` naming the package to install.

``memory://`` lives in one process: the ``serial`` and ``local`` engines see it (the
process pool forks), Ray workers do not. On a cluster use a URL every node can reach.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path

from smartset.errors import StorageError

__all__ = ["is_url", "open_file", "read_bytes", "url_filesystem", "list_files", "list_dir",
           "path_kind", "FileInfo"]

# A scheme, then "://": "s3://b/k", "file:///abs". Not "C:\\x" nor a relative path.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path) -> bool:
    """True for an fsspec URL (``scheme://...``), False for a local path."""
    return isinstance(path, str) and _URL.match(path) is not None


def _fsspec():
    try:
        import fsspec
    except ImportError as error:  # pragma: no cover - fsspec is a dependency of smartset
        raise StorageError("Reading URLs needs fsspec: pip install fsspec.") from error
    return fsspec


def url_filesystem(url: str):
    """``(filesystem, path inside it)`` for ``url``; a clear error for a scheme that is
    unknown or whose package is not installed."""
    fsspec = _fsspec()
    protocol = url.split("://", 1)[0]
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as error:
        package = _package_of(protocol)
        raise StorageError(
            f"Reading '{url}' needs the package {package!r} for {protocol}:// URLs: "
            f"pip install {package}. (fsspec: {error})") from None
    except ValueError as error:
        if "protocol not known" not in str(error).lower():
            raise
        raise StorageError(
            f"Unknown URL scheme {protocol!r} in '{url}': fsspec has no file system of that "
            f"name (fsspec.available_protocols() lists them: file, memory, s3, gcs, abfs, "
            f"http, ...). Give a local path, or a URL of a known scheme.") from None


def _package_of(protocol: str) -> str:
    """The package that implements ``protocol`` in fsspec's registry (``s3`` -> ``s3fs``)."""
    from fsspec.registry import known_implementations

    spec = known_implementations.get(protocol, {})
    return spec.get("class", protocol).split(".", 1)[0]


def open_file(path: str | Path, mode: str = "rb"):
    """A file object for a local path or an fsspec URL; use it as a context manager.

    Raises ``FileNotFoundError`` (and the other ``OSError`` types) as ``open`` does, so
    callers handle both the same way."""
    if not is_url(path):
        return open(path, mode)
    filesystem, inner = url_filesystem(path)
    return filesystem.open(inner, mode)


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a local file or of an fsspec URL."""
    with open_file(path) as handle:
        return handle.read()


@dataclass(frozen=True)
class FileInfo:
    """A file found under a URL: its path below the root ('/'-separated), size and
    modification time (ns; 0 where the file system reports none)."""

    relpath: str
    size: int
    mtime_ns: int


def path_kind(url: str) -> str | None:
    """``"dir"``, ``"file"`` or None (nothing there) for an fsspec URL."""
    filesystem, inner = url_filesystem(url)
    if filesystem.isdir(inner):
        return "dir"
    return "file" if filesystem.isfile(inner) else None


def list_dir(url: str) -> tuple[list[str], list[str]]:
    """The names of the folders and of the files directly under ``url``, sorted."""
    filesystem, inner = url_filesystem(url)
    folders, files = [], []
    for entry in filesystem.ls(inner, detail=True):
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        (folders if entry["type"] == "directory" else files).append(name)
    return sorted(folders), sorted(files)


def list_files(url: str) -> list[FileInfo]:
    """Every file under ``url`` (recursively), sorted by relative path."""
    filesystem, inner = url_filesystem(url)
    prefix = inner.rstrip("/") + "/"
    found = []
    for name, info in filesystem.find(inner, withdirs=False, detail=True).items():
        if not name.startswith(prefix):
            continue  # a file system that answers with another spelling of the root
        found.append(FileInfo(name[len(prefix):], int(info.get("size") or 0), _mtime_ns(info)))
    return sorted(found, key=lambda f: f.relpath)


# Where file systems put the modification time: local and sftp "mtime", S3 "LastModified",
# GCS "updated", Azure "last_modified", memory "created".
_MTIME_KEYS = ("mtime", "LastModified", "updated", "last_modified", "modified", "created")


def _mtime_ns(info: dict) -> int:
    for key in _MTIME_KEYS:
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            try:
                value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(value, datetime.datetime):
            value = value.timestamp()
        try:
            return int(round(float(value) * 1e9))
        except (TypeError, ValueError):
            continue
    return 0
