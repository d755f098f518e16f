"""The exceptions smartset raises.

Every error derives from :class:`SmartsetError` and from the builtin it resembles, so
``except ValueError`` keeps working for callers who do not know smartset. Messages name the
thing, what was expected, what was got, and the fix.
"""

from __future__ import annotations

__all__ = [
    "SmartsetError",
    "WorkspaceError",
    "SourceError",
    "ColumnNotFoundError",
    "ImageDecodeError",
    "VersionError",
    "LabelError",
    "EmptyDataError",
    "ConflictError",
    "StorageError",
]


class SmartsetError(Exception):
    """Base class of every error smartset raises on purpose."""


def _rebuild(cls, message, fields):
    """Unpickle an error whose constructor takes keyword-only fields."""
    return cls(message, **fields)


class WorkspaceError(SmartsetError, FileNotFoundError):
    """A workspace is missing, or a folder is not one."""


class SourceError(SmartsetError, ValueError):
    """A data source cannot be read as the layout asked for (or detected)."""


class ColumnNotFoundError(SourceError, KeyError):
    """A table lacks a column that was asked for or is needed."""

    def __init__(self, message: str, *, column: str, found: list[str], path: str, line: int):
        super().__init__(message)
        self.column = column
        self.found = found
        self.path = path
        self.line = line

    def __reduce__(self):
        return _rebuild, (type(self), self.args[0], {"column": self.column, "found": self.found,
                                                     "path": self.path, "line": self.line})

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


class ImageDecodeError(SmartsetError, OSError):
    """An image file cannot be decoded."""

    def __init__(self, message: str, *, path: str, reason: str):
        super().__init__(message)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):  # keyword-only fields: a worker process can send it back whole
        return _rebuild, (type(self), self.args[0], {"path": self.path, "reason": self.reason})


class StorageError(SmartsetError, OSError):
    """A URL cannot be read: an unknown scheme, or its fsspec package is not installed."""


class VersionError(SmartsetError, KeyError):
    """A data set version is unknown, or its name is taken."""

    def __str__(self) -> str:
        return self.args[0]


class LabelError(SmartsetError, ValueError):
    """A label change refers to unknown samples or events."""


class EmptyDataError(SmartsetError, ValueError):
    """A stage was asked to work on no samples."""


class ConflictError(SmartsetError):
    """A change was based on a value that someone else has changed since it was read.

    ``current`` holds the newer value (for a label: ``label``, ``event_id``, ``author``,
    ``time``, ``origin``, ``reason``; for a mark: ``kind``, ``value``, ``active``,
    ``mark_id``, ...), ``expected`` the version the change was based on.
    """

    def __init__(self, message: str, *, sample_id: str, expected, current: dict):
        super().__init__(message)
        self.sample_id = sample_id
        self.expected = expected
        self.current = current
