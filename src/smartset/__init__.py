"""smartset: turn a raw image collection into a quality data set, and measure what each
data step was worth.

    >>> import smartset
    >>> ws = smartset.init("my-workspace")            # doctest: +SKIP
    >>> ws.ingest("photos/train")                     # doctest: +SKIP
    >>> ws.samples().groupby("label").size()          # doctest: +SKIP
"""

from smartset.errors import (ColumnNotFoundError, ConflictError, EmptyDataError, ImageDecodeError,
                             LabelError, SmartsetError, SourceError, VersionError,
                             WorkspaceError)

__version__ = "0.1.0"

__all__ = [
    "Workspace",
    "init",
    "open",
    "SmartsetError",
    "WorkspaceError",
    "SourceError",
    "ColumnNotFoundError",
    "ImageDecodeError",
    "VersionError",
    "LabelError",
    "EmptyDataError",
    "ConflictError",
    "__version__",
]

_LAZY = {"Workspace": "Workspace", "init": "init", "open": "open_workspace"}


def __getattr__(name: str):
    # The workspace API pulls in pandas; worker processes that only decode images
    # (smartset.imageio) must not pay for that import on start-up.
    if name in _LAZY:
        from smartset import workspace

        return getattr(workspace, _LAZY[name])
    raise AttributeError(f"module 'smartset' has no attribute {name!r}")
